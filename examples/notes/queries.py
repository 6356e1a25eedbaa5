"""Data access shared by the HTML pages and the JSON API, through Flask-SQLAlchemy's
``db.session`` (one per app context). Each write commits before it returns; the work that
follows a commit (indexing a note for search) is a job sent after that commit
(:mod:`examples.notes.search`), and a public note is announced on the live feed
(:mod:`examples.notes.live`) once it is committed.
"""

from __future__ import annotations

import datetime
import typing as t

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from . import live, search, shared
from .db import Account, Note, db

#: The largest 64-bit integer (SQLite's and PostgreSQL's ``bigint``): a larger id in a URL is
#: refused by the route's converter (404) instead of overflowing in the query.
MAX_ID = 2**63 - 1


class UsernameTaken(Exception):
    """Raised when registering a name that already has an account."""


def account_by_id(account_id: int) -> Account | None:
    if not 0 < account_id <= MAX_ID:
        return None
    return db.session.get(Account, account_id)


def create_account(username: str, password: str) -> int:
    account = Account(username=username, password_hash=generate_password_hash(password))
    db.session.add(account)
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        raise UsernameTaken(username) from None
    shared.stats_changed()
    return account.id


def authenticate(username: str, password: str) -> int | None:
    """Return the account id when the credentials match, else None."""
    account = db.session.scalars(sa.select(Account).where(Account.username == username)).first()
    if account is None or not check_password_hash(account.password_hash, password):
        return None
    return account.id


def notes_for(owner_id: int) -> list[Note]:
    statement = sa.select(Note).where(Note.owner_id == owner_id).order_by(Note.id.desc())
    return list(db.session.scalars(statement))


def note_for(owner_id: int, note_id: int) -> Note | None:
    """One note, only if it belongs to ``owner_id`` (others' notes look nonexistent)."""
    note = db.session.get(Note, note_id)
    return note if note is not None and note.owner_id == owner_id else None


def add_note(owner_id: int, title: str, body: str, public: bool = False) -> int:
    """Save a note, in one transaction with the job that indexes it (sent once it commits);
    a public note is then announced on the live feed."""
    note = Note(owner_id=owner_id, title=title, body=body, public=public)
    db.session.add(note)
    db.session.flush()  # the id exists, uncommitted
    search.index_after_commit(note.id)
    db.session.commit()  # now the job is sent (or, inline, has run)
    shared.stats_changed()
    if public:
        author = db.session.get(Account, owner_id)
        assert author is not None
        live.announce(note_as_dict(note), author.username)
    return note.id


def remove_note(owner_id: int, note_id: int) -> bool:
    note = note_for(owner_id, note_id)
    if note is None:
        return False
    db.session.delete(note)
    db.session.commit()
    shared.stats_changed()
    return True


def recent_public_notes(limit: int = 10) -> list[sa.RowMapping]:
    """The latest public notes of every author: what the live feed shows (no body)."""
    statement = (
        sa.select(Note.id, Note.title, Note.created_at, Account.username.label("author"))
        .join(Account, Account.id == Note.owner_id)
        .where(Note.public.is_(True))
        .order_by(Note.id.desc())
        .limit(limit)
    )
    return list(db.session.execute(statement).mappings())


def site_totals() -> dict[str, int]:
    """How many accounts and notes the site holds: public figures, the same for everyone."""
    accounts = db.session.scalar(sa.select(sa.func.count()).select_from(Account))
    notes = db.session.scalar(sa.select(sa.func.count()).select_from(Note))
    return {"accounts": int(accounts or 0), "notes": int(notes or 0)}


def timestamp(moment: datetime.datetime) -> str:
    return moment.isoformat(sep=" ", timespec="seconds")


def note_as_dict(note: Note) -> dict[str, t.Any]:
    return {
        "id": note.id,
        "title": note.title,
        "body": note.body,
        "public": note.public,
        "created_at": timestamp(note.created_at),
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
