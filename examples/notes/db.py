"""SQLite storage: one connection per application context, kept on ``g``."""

from __future__ import annotations

import os
import sqlite3
import typing as t

import click

from carboy import current_app, g

if t.TYPE_CHECKING:
    from carboy import Carboy

SCHEMA = """
DROP TABLE IF EXISTS note;
DROP TABLE IF EXISTS account;

CREATE TABLE account (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    joined_at     TEXT    NOT NULL DEFAULT (datetime('now'))
);

CREATE TABLE note (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id   INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
    title      TEXT    NOT NULL,
    body       TEXT    NOT NULL DEFAULT '',
    created_at TEXT    NOT NULL DEFAULT (datetime('now'))
);

CREATE INDEX note_by_owner ON note (owner_id, id);
"""


def get_db() -> sqlite3.Connection:
    """Return this context's connection, opening it on first use."""
    conn: sqlite3.Connection | None = g.get("notes_db")
    if conn is None:
        path = current_app.config["DATABASE"]
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


def create_schema() -> None:
    """(Re)create every table, discarding existing data."""
    conn = get_db()
    conn.executescript(SCHEMA)
    conn.commit()


def ensure_schema() -> bool:
    """Create the schema unless it is already there. Returns True if it was created."""
    found = (
        get_db()
        .execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'account'")
        .fetchone()
    )
    if found is None:
        create_schema()
        return True
    return False


def init_db_command() -> None:
    """Drop all notes and accounts and create empty tables."""
    create_schema()
    click.echo(f"Empty notes database ready at {current_app.config['DATABASE']}")


def init_app(app: Carboy) -> None:
    app.teardown_appcontext(close_db)
    # ``app.cli.command`` wraps the callback so it runs inside an application context,
    # both under ``carboy --app examples.notes init-db`` and ``app.test_cli_runner()``.
    app.cli.command("init-db")(init_db_command)
