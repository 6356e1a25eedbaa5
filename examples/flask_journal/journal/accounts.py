"""Sign-up, sign-in and sign-out, and the helpers other blueprints use to require a user."""

from __future__ import annotations

import functools
import sqlite3
import typing as t

from flask import (
    Blueprint,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash, generate_password_hash

from .storage import connection

bp = Blueprint("auth", __name__, url_prefix="/auth")

MIN_PASSWORD = 8

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


@bp.before_app_request
def identify_user() -> None:
    """Put the signed-in account (or None) on ``g.user`` for every request."""
    account_id = session.get("account_id")
    g.user = None
    if account_id is not None:
        g.user = (
            connection()
            .execute("SELECT id, username FROM account WHERE id = ?", (account_id,))
            .fetchone()
        )


def login_required(view: F) -> F:
    """Send anonymous visitors to the sign-in page, remembering where they were going."""

    @functools.wraps(view)
    def guarded(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if g.user is None:
            flash("Please sign in first.", "warning")
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return t.cast(F, guarded)


def _safe_target(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("home")


def _credentials() -> tuple[str, str]:
    return request.form.get("username", "").strip(), request.form.get("password", "")


@bp.route("/register", methods=["GET", "POST"])
def register() -> t.Any:
    if request.method == "GET":
        return render_template("accounts/register.html")

    username, password = _credentials()
    problem = None
    if not username:
        problem = "Choose a username."
    elif len(password) < MIN_PASSWORD:
        problem = f"Passwords need at least {MIN_PASSWORD} characters."
    else:
        conn = connection()
        try:
            conn.execute(
                "INSERT INTO account (username, password_hash) VALUES (?, ?)",
                (username, generate_password_hash(password)),
            )
            conn.commit()
        except sqlite3.IntegrityError:
            problem = f"The username {username!r} is already taken."
        else:
            flash(f"Welcome aboard, {username}! Sign in to start writing.", "success")
            return redirect(url_for("auth.login"))

    flash(problem, "error")
    return render_template("accounts/register.html", username=username), 400


@bp.route("/login", methods=["GET", "POST"])
def login() -> t.Any:
    if request.method == "GET":
        return render_template("accounts/login.html", next=request.args.get("next", ""))

    username, password = _credentials()
    account = (
        connection()
        .execute("SELECT id, password_hash FROM account WHERE username = ?", (username,))
        .fetchone()
    )
    if account is None or not check_password_hash(account["password_hash"], password):
        flash("That username and password do not match.", "error")
        form_next = request.form.get("next", "")
        return render_template("accounts/login.html", username=username, next=form_next)

    session.clear()
    session["account_id"] = account["id"]
    flash(f"Signed in as {username}.", "success")
    return redirect(_safe_target(request.form.get("next")))


@bp.post("/logout")
def logout() -> t.Any:
    session.clear()
    flash("You have been signed out.", "info")
    return redirect(url_for("auth.login"))
