"""Data access shared by the HTML pages and the JSON API.

Each write is one statement, committed by itself (the connection is in autocommit mode, see
:func:`~examples.notes.db.get_db`).
"""

from __future__ import annotations

import sqlite3
import typing as t

from werkzeug.security import check_password_hash, generate_password_hash

from . import live, shared
from .db import get_db

#: SQLite's largest integer: a larger id in a URL is refused by the route's converter (404)
#: instead of overflowing in the query.
MAX_ID = 2**63 - 1


class UsernameTaken(Exception):
    """Raised when registering a name that already has an account."""


def account_by_id(account_id: int) -> sqlite3.Row | None:
    row: sqlite3.Row | None = (
        get_db()
        .execute("SELECT id, username, joined_at FROM account WHERE id = ?", (account_id,))
        .fetchone()
    )
    return row


def create_account(username: str, password: str) -> int:
    conn = get_db()
    try:
        cur = conn.execute(
            "INSERT INTO account (username, password_hash) VALUES (?, ?)",
            (username, generate_password_hash(password)),
        )
    except sqlite3.IntegrityError:
        raise UsernameTaken(username) from None
    shared.stats_changed()
    return t.cast(int, cur.lastrowid)


def authenticate(username: str, password: str) -> int | None:
    """Return the account id when the credentials match, else None."""
    row = (
        get_db()
        .execute("SELECT id, password_hash FROM account WHERE username = ?", (username,))
        .fetchone()
    )
    if row is None or not check_password_hash(row["password_hash"], password):
        return None
    return t.cast(int, row["id"])


def notes_for(owner_id: int) -> list[sqlite3.Row]:
    return (
        get_db()
        .execute(
            "SELECT id, title, body, public, created_at FROM note WHERE owner_id = ?"
            " ORDER BY id DESC",
            (owner_id,),
        )
        .fetchall()
    )


def note_for(owner_id: int, note_id: int) -> sqlite3.Row | None:
    """One note, only if it belongs to ``owner_id`` (others' notes look nonexistent)."""
    row: sqlite3.Row | None = (
        get_db()
        .execute(
            "SELECT id, title, body, public, created_at FROM note WHERE id = ? AND owner_id = ?",
            (note_id, owner_id),
        )
        .fetchone()
    )
    return row


def add_note(owner_id: int, title: str, body: str, public: bool = False) -> int:
    """Save a note; a public one is then announced on the live feed (:mod:`.live`)."""
    conn = get_db()
    cur = conn.execute(
        "INSERT INTO note (owner_id, title, body, public) VALUES (?, ?, ?, ?)",
        (owner_id, title, body, int(public)),
    )
    shared.stats_changed()
    note_id = t.cast(int, cur.lastrowid)
    if public:
        note = note_for(owner_id, note_id)
        author = account_by_id(owner_id)
        assert note is not None and author is not None
        live.announce(note, author["username"])
    return note_id


def recent_public_notes(limit: int = 10) -> list[sqlite3.Row]:
    """The latest public notes of every author: what the live feed shows (no body)."""
    return (
        get_db()
        .execute(
            "SELECT note.id, note.title, note.created_at, account.username AS author"
            " FROM note JOIN account ON account.id = note.owner_id"
            " WHERE note.public = 1 ORDER BY note.id DESC LIMIT ?",
            (limit,),
        )
        .fetchall()
    )


def remove_note(owner_id: int, note_id: int) -> bool:
    conn = get_db()
    cur = conn.execute("DELETE FROM note WHERE id = ? AND owner_id = ?", (note_id, owner_id))
    if cur.rowcount == 0:
        return False
    shared.stats_changed()
    return True


def site_totals() -> dict[str, int]:
    """How many accounts and notes the site holds: public figures, the same for everyone."""
    accounts, notes = (
        get_db()
        .execute("SELECT (SELECT COUNT(*) FROM account), (SELECT COUNT(*) FROM note)")
        .fetchone()
    )
    return {"accounts": int(accounts), "notes": int(notes)}


def note_as_dict(row: sqlite3.Row) -> dict[str, t.Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "public": bool(row["public"]),
        "created_at": row["created_at"],
    }


def check_note_fields(
    title: object, body: object, max_title: int, public: object = False
) -> str | None:
    """Return a human-readable problem with a note's fields, or None when they are fine."""
    if not isinstance(title, str) or not title.strip():
        return "A note needs a title."
    if len(title) > max_title:
        return f"Titles are limited to {max_title} characters."
    if not isinstance(body, str):
        return "The body must be text."
    if not isinstance(public, bool):
        return "'public' must be true or false."
    return None
