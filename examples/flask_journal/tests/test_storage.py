from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from journal import create_app
from journal.storage import connection


def table_names(path):
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def test_one_connection_per_context_closed_on_teardown(app):
    with app.app_context():
        conn = connection()
        assert connection() is conn
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        conn.execute("SELECT 1")


def test_each_context_gets_its_own_connection(app):
    with app.app_context():
        first = connection()
    with app.app_context():
        assert connection() is not first


def test_init_db_creates_the_tables(tmp_path):
    app = create_app({"DATABASE": str(tmp_path / "fresh.db")}, instance_path=str(tmp_path))
    assert "account" not in table_names(tmp_path / "fresh.db")
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert f"Initialised the journal database at {tmp_path / 'fresh.db'}." in result.output
    assert {"account", "entry"} <= table_names(tmp_path / "fresh.db")


def count_entries(app):
    with app.app_context():
        return connection().execute("SELECT COUNT(*) FROM entry").fetchone()[0]


def test_init_db_keeps_existing_entries(app, runner, people):
    assert count_entries(app) == 2
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert count_entries(app) == 2


def test_init_db_reset_wipes_everything(app, runner, people):
    result = runner.invoke(args=["init-db", "--reset"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Reset the journal database")
    assert count_entries(app) == 0


def test_init_db_help_uses_the_docstring(runner):
    result = runner.invoke(args=["init-db", "--help"])
    assert result.exit_code == 0
    assert "Create the journal's tables" in result.output
    assert "--reset" in result.output
