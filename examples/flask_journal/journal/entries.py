"""The HTML side of the journal: the timeline and writing, revising and deleting entries."""

from __future__ import annotations

import sqlite3
import typing as t

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from .accounts import login_required
from .storage import connection

bp = Blueprint("entries", __name__, url_prefix="/entries")


def entries_of(owner_id: int) -> list[sqlite3.Row]:
    return (
        connection()
        .execute(
            "SELECT id, title, body, written_at, revised_at FROM entry"
            " WHERE owner_id = ? ORDER BY id DESC",
            (owner_id,),
        )
        .fetchall()
    )


def owned_entry(entry_id: int) -> sqlite3.Row:
    """The entry *entry_id*, if the signed-in user wrote it: 404 if it does not exist, 403 if
    someone else wrote it."""
    row = (
        connection()
        .execute(
            "SELECT id, owner_id, title, body, written_at, revised_at FROM entry WHERE id = ?",
            (entry_id,),
        )
        .fetchone()
    )
    if row is None:
        abort(404, description=f"There is no entry {entry_id}.")
    if row["owner_id"] != g.user["id"]:
        abort(403, description="That entry belongs to someone else.")
    return row


def check_entry(title: str, body: str) -> str | None:
    """Why *title* and *body* cannot be saved, or None if they can."""
    config = current_app.config
    if not title:
        return "Every entry needs a title."
    if len(title) > config["JOURNAL_TITLE_LIMIT"]:
        return f"Keep the title under {config['JOURNAL_TITLE_LIMIT']} characters."
    if len(body) > config["JOURNAL_BODY_LIMIT"]:
        return f"Keep the text under {config['JOURNAL_BODY_LIMIT']} characters."
    return None


def add_entry(owner_id: int, title: str, body: str) -> int:
    conn = connection()
    cursor = conn.execute(
        "INSERT INTO entry (owner_id, title, body) VALUES (?, ?, ?)", (owner_id, title, body)
    )
    conn.commit()
    return t.cast(int, cursor.lastrowid)


def _submitted() -> tuple[str, str]:
    return request.form.get("title", "").strip(), request.form.get("body", "")


@login_required
def timeline() -> str:
    """The signed-in user's entries, newest first (served at ``/``)."""
    return render_template("entries/timeline.html", entries=entries_of(g.user["id"]))


@bp.route("/new", methods=["GET", "POST"])
@login_required
def write() -> t.Any:
    if request.method == "POST":
        title, body = _submitted()
        problem = check_entry(title, body)
        if problem is None:
            entry_id = add_entry(g.user["id"], title, body)
            flash(f"Saved “{title}”.", "success")
            return redirect(url_for("entries.read", entry_id=entry_id))
        flash(problem, "error")
        return render_template("entries/form.html", entry=None, title=title, body=body), 400
    return render_template("entries/form.html", entry=None, title="", body="")


@bp.get("/<int:entry_id>")
@login_required
def read(entry_id: int) -> str:
    return render_template("entries/read.html", entry=owned_entry(entry_id))


@bp.route("/<int:entry_id>/edit", methods=["GET", "POST"])
@login_required
def revise(entry_id: int) -> t.Any:
    entry = owned_entry(entry_id)
    if request.method == "POST":
        title, body = _submitted()
        problem = check_entry(title, body)
        if problem is None:
            conn = connection()
            conn.execute(
                "UPDATE entry SET title = ?, body = ?, revised_at = CURRENT_TIMESTAMP WHERE id = ?",
                (title, body, entry_id),
            )
            conn.commit()
            flash("Your changes are saved.", "success")
            return redirect(url_for("entries.read", entry_id=entry_id))
        flash(problem, "error")
        return render_template("entries/form.html", entry=entry, title=title, body=body), 400
    return render_template(
        "entries/form.html", entry=entry, title=entry["title"], body=entry["body"]
    )


@bp.post("/<int:entry_id>/delete")
@login_required
def remove(entry_id: int) -> t.Any:
    entry = owned_entry(entry_id)
    conn = connection()
    conn.execute("DELETE FROM entry WHERE id = ?", (entry_id,))
    conn.commit()
    flash(f"Deleted “{entry['title']}”.", "info")
    return redirect(url_for("home"))
