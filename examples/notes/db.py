"""SQLite storage: one connection per application context, kept on ``g``.

``DATABASE`` is a file path, or :data:`MEMORY` (the default): one database in memory per app,
shared by the threads of the process that serves it and gone when that process ends.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import typing as t
import uuid

import click

from carboy import current_app, g

if t.TYPE_CHECKING:
    from carboy import Carboy

#: The tables and index, each made only if missing (so a check and a creation can share one
#: transaction, see :func:`ensure_schema`).
TABLES = (
    """CREATE TABLE IF NOT EXISTS account (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        username      TEXT    NOT NULL UNIQUE,
        password_hash TEXT    NOT NULL,
        joined_at     TEXT    NOT NULL DEFAULT (datetime('now'))
    )""",
    """CREATE TABLE IF NOT EXISTS note (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        owner_id   INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        title      TEXT    NOT NULL,
        body       TEXT    NOT NULL DEFAULT '',
        created_at TEXT    NOT NULL DEFAULT (datetime('now'))
    )""",
    "CREATE INDEX IF NOT EXISTS note_by_owner ON note (owner_id, id)",
)


#: The ``DATABASE`` value that keeps the data in memory.
MEMORY = ":memory:"

_memory_lock = threading.Lock()


def _memory_uri(app: Carboy) -> str:
    """The URI of *app*'s in-memory database, made on first use.

    SQLite's ``memdb`` VFS shares a database whose name starts with ``/`` between the
    connections of one process, with the usual locking (a writer makes the others wait up to
    their timeout, unlike a shared-cache ``:memory:`` database), for as long as one connection
    to it is open: the app keeps one, unused, for its own lifetime.
    """
    with _memory_lock:
        held = app.extensions.get("notes.memory")
        if held is None:
            uri = f"file:/notes-{uuid.uuid4().hex}?vfs=memdb"
            held = app.extensions["notes.memory"] = (uri, sqlite3.connect(uri, uri=True))
        return t.cast(str, held[0])


def get_db() -> sqlite3.Connection:
    """Return this context's connection, opening it on first use."""
    conn: sqlite3.Connection | None = g.get("notes_db")
    if conn is None:
        path = current_app.config["DATABASE"]
        if path == MEMORY:
            conn = sqlite3.connect(_memory_uri(current_app), uri=True)
        else:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        g.notes_db = conn
    return conn


def close_db(exc: BaseException | None = None) -> None:
    conn: sqlite3.Connection | None = g.pop("notes_db", None)
    if conn is not None:
        conn.close()


def _make_tables(conn: sqlite3.Connection, drop_first: bool) -> bool:
    """Make the tables in one write transaction; return True if they were missing.

    ``BEGIN IMMEDIATE`` takes the database's write lock before the check, so workers that
    build the app on the same new file at once take turns: the first makes the tables, the
    others wait for it (the connection's busy timeout) and then find them.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        if drop_first:
            conn.execute("DROP TABLE IF EXISTS note")
            conn.execute("DROP TABLE IF EXISTS account")
        missing = (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'account'"
            ).fetchone()
            is None
        )
        for statement in TABLES:
            conn.execute(statement)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return missing


def create_schema() -> None:
    """(Re)create every table, discarding existing data."""
    _make_tables(get_db(), drop_first=True)


def ensure_schema() -> bool:
    """Create the schema unless it is already there. Returns True if it was created."""
    return _make_tables(get_db(), drop_first=False)


def init_db_command() -> None:
    """Drop all notes and accounts and create empty tables."""
    create_schema()
    path = current_app.config["DATABASE"]
    if path == MEMORY:
        click.echo("Empty notes database ready in memory, for this command only: set DATABASE")
        click.echo("to a file path to keep the notes (a served app makes its schema on start).")
    else:
        click.echo(f"Empty notes database ready at {path}")


def init_app(app: Carboy) -> None:
    app.teardown_appcontext(close_db)
    # ``app.cli.command`` wraps the callback so it runs inside an application context,
    # both under ``carboy --app examples.notes init-db`` and ``app.test_cli_runner()``.
    app.cli.command("init-db")(init_db_command)
