"""SQLite access: one connection per app context, plus the ``init-db`` command."""

from __future__ import annotations

import sqlite3

import click
from flask import Flask, current_app, g

DROP_ALL = "DROP TABLE IF EXISTS entry; DROP TABLE IF EXISTS account;"


def connection() -> sqlite3.Connection:
    """The database connection of the current app context, opened on first use."""
    if "journal_db" not in g:
        conn = sqlite3.connect(current_app.config["DATABASE"])
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        g.journal_db = conn
    return g.journal_db


def release(exc: BaseException | None = None) -> None:
    conn = g.pop("journal_db", None)
    if conn is not None:
        conn.close()


def create_tables(*, reset: bool = False) -> None:
    conn = connection()
    if reset:
        conn.executescript(DROP_ALL)
    with current_app.open_resource("schema.sql", "r") as script:
        conn.executescript(script.read())
    conn.commit()


@click.option("--reset", is_flag=True, help="Delete every account and entry first.")
def init_db_command(reset: bool) -> None:
    """Create the journal's tables (existing data is kept unless --reset is given)."""
    create_tables(reset=reset)
    verb = "Reset" if reset else "Initialised"
    click.echo(f"{verb} the journal database at {current_app.config['DATABASE']}.")


def register(app: Flask) -> None:
    app.teardown_appcontext(release)
    app.cli.command("init-db")(init_db_command)
