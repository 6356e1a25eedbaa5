"""SQLite storage: one connection per application context, kept on ``g``.

``DATABASE`` is a file path, or :data:`MEMORY` (the default): one database in memory per app,
shared by the threads of the process that serves it and gone when that process ends.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
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
        public     INTEGER NOT NULL DEFAULT 0,
        created_at TEXT    NOT NULL DEFAULT (datetime('now'))
    )""",
    "CREATE INDEX IF NOT EXISTS note_by_owner ON note (owner_id, id)",
)


#: The ``DATABASE`` value that keeps the data in memory.
MEMORY = ":memory:"

#: How long a connection waits for another's write lock, in seconds, before failing with
#: "database is locked": far longer than any request holds it, and shorter than a server's
#: usual 30 s worker timeout.
BUSY_TIMEOUT = 10.0

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
    """Return this context's connection, opening it on first use.

    The connection is in autocommit mode: each statement outside an explicit ``BEGIN`` is a
    transaction of its own, so a write holds the database's write lock only while SQLite runs
    it, never while Python code does (with dozens of threads per worker, a lock held from an
    ``INSERT`` to a later ``commit()`` was also held across thread switches, and under load
    other writers waited out their busy timeout and failed with "database is locked").
    """
    conn: sqlite3.Connection | None = g.get("notes_db")
    if conn is None:
        path = current_app.config["DATABASE"]
        if path == MEMORY:
            conn = sqlite3.connect(
                _memory_uri(current_app), uri=True, timeout=BUSY_TIMEOUT, isolation_level=None
            )
        else:
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
            # In WAL mode, NORMAL syncs the log at checkpoints rather than at every commit: a
            # commit survives the process being killed, not a power cut (docs/deployment-
            # safety.md). Syncing at each commit made every write hold the write lock for a
            # disk flush, and under saturation writers queued past their busy timeout.
            conn.execute("PRAGMA synchronous = NORMAL")
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

    A file is put in WAL mode (which it keeps): readers then never hold up a writer, nor a
    writer the readers, so the workers of a server can share it under load. In the default
    rollback mode a write must wait for a moment with no reader at all, and under saturation
    some waited out the busy timeout and failed with "database is locked".
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
    if current_app.config["DATABASE"] != MEMORY:
        _use_wal(conn)
    return missing


def _use_wal(conn: sqlite3.Connection) -> None:
    """Put the database file in WAL mode, trying again while other connections hold it:
    switching takes a lock that SQLite does not wait for (the busy timeout does not apply)."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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
