"""HTML pages: accounts, sign-in and the notes themselves."""

from __future__ import annotations

import functools
import typing as t

from carboy import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from . import queries, shared

bp = Blueprint("pages", __name__)

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


@bp.before_app_request
def load_current_user() -> None:
    """Expose the signed-in account (or None) as ``g.user`` for every request."""
    account_id = session.get("account_id")
    g.user = queries.account_by_id(account_id) if isinstance(account_id, int) else None


def login_required(view: F) -> F:
    """Send anonymous visitors to the sign-in page instead of running ``view``."""

    @functools.wraps(view)
    def guarded(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if g.user is None:
            flash("Please log in first.", "error")
            return redirect(url_for("pages.login"))
        return view(*args, **kwargs)

    return t.cast(F, guarded)


def _credentials() -> tuple[str, str]:
    return request.form.get("username", "").strip(), request.form.get("password", "")


@bp.route("/register", methods=["GET", "POST"])
def register() -> t.Any:
    if request.method == "POST":
        username, password = _credentials()
        problem = None
        if not username:
            problem = "Pick a username."
        elif len(password) < 4:
            problem = "Passwords need at least 4 characters."
        else:
            try:
                queries.create_account(username, password)
            except queries.UsernameTaken:
                problem = f"The name {username!r} is already taken."
        if problem is None:
            flash("Account created. You can log in now.", "success")
            return redirect(url_for("pages.login"))
        flash(problem, "error")
    return render_template("pages/credentials.html", mode="register")


@bp.route("/login", methods=["GET", "POST"])
def login() -> t.Any:
    if request.method == "POST":
        username, password = _credentials()
        account_id = queries.authenticate(username, password)
        if account_id is not None:
            session.clear()
            # A new session id at login: an id planted before it never authenticates.
            shared.regenerate_session()
            session["account_id"] = account_id
            flash(f"Welcome back, {username}.", "success")
            return redirect(url_for("pages.index"))
        flash("Unknown username or wrong password.", "error")
    return render_template("pages/credentials.html", mode="login")


@bp.post("/logout")
def logout() -> t.Any:
    session.clear()
    flash("You have been logged out.", "success")
    return redirect(url_for("pages.login"))


@bp.get("/")
def index() -> t.Any:
    if g.user is None:  # a first visit: what this is, and where to start
        return render_template("pages/welcome.html")
    return render_template(
        "pages/index.html",
        notes=queries.notes_for(g.user.id),
        public_notes=queries.recent_public_notes(),
    )


@bp.route("/notes/new", methods=["GET", "POST"])
@login_required
def new_note() -> t.Any:
    title = request.form.get("title", "")
    body = request.form.get("body", "")
    public = request.form.get("public") == "1"
    if request.method == "POST":
        problem = queries.check_note_fields(title, body, current_app.config["NOTE_TITLE_MAX"])
        if problem is None:
            note_id = queries.add_note(g.user.id, title.strip(), body, public=public)
            flash("Note saved.", "success")
            return redirect(url_for("pages.show_note", note_id=note_id))
        flash(problem, "error")
    return render_template("pages/new_note.html", title=title, body=body, public=public)


@bp.get(f"/notes/<int(max={queries.MAX_ID}):note_id>")
@login_required
def show_note(note_id: int) -> t.Any:
    note = queries.note_for(g.user.id, note_id)
    if note is None:
        abort(404)
    return render_template("pages/note.html", note=note)


@bp.post(f"/notes/<int(max={queries.MAX_ID}):note_id>/delete")
@login_required
def delete_note(note_id: int) -> t.Any:
    if not queries.remove_note(g.user.id, note_id):
        abort(404)
    flash("Note deleted.", "success")
    return redirect(url_for("pages.index"))
