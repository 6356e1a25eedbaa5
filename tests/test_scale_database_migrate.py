"""Issue 22's proof "Migrations": four processes start the upgrade of a pending 3-step
migration at once.

With ``locked-upgrade`` (Flask-Migrate's upgrade inside a PostgreSQL advisory lock), exactly one
process applies the three steps, the other three wait, find the database at the head and exit
0. Each step writes a row into ``migration_log``, so a step run twice would show. The plain
``db upgrade`` run the same way is the baseline: what fails is printed (docs/scale/databases.md
records it), not asserted.

Each run gets a database of its own on the machine's PostgreSQL, dropped afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import flask_migrate
import psycopg
import pytest

from pg_servers import machine_postgres_or_skip
from servers import ROOT, server_env, tool

STEPS = {
    "a1": (
        None,
        """
    op.create_table(
        "migration_log",
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, server_default=sa.text("pg_backend_pid()")),
    )
    op.create_table(
        "items", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text)
    )
    op.execute("INSERT INTO migration_log (step) VALUES ('1')")
    op.execute("SELECT pg_sleep(2)")  # a slow first step: the others start meanwhile
""",
    ),
    "a2": (
        "a1",
        """
    op.add_column("items", sa.Column("price", sa.Integer))
    op.execute("INSERT INTO migration_log (step) VALUES ('2')")
""",
    ),
    "a3": (
        "a2",
        """
    op.create_index("ix_items_name", "items", ["name"])
    op.execute("INSERT INTO migration_log (step) VALUES ('3')")
""",
    ),
}


def write_migrations(folder: Path) -> None:
    """Flask-Migrate's own ``env.py`` and ``alembic.ini`` (as ``flask db init`` writes them)
    and three revisions."""
    template = Path(flask_migrate.__file__).parent / "templates" / "flask"
    (folder / "versions").mkdir(parents=True)
    shutil.copy(template / "env.py", folder / "env.py")
    shutil.copy(template / "script.py.mako", folder / "script.py.mako")
    shutil.copy(template / "alembic.ini.mako", folder / "alembic.ini")
    for revision, (down, body) in STEPS.items():
        (folder / "versions" / f"{revision}_step.py").write_text(
            f'"""step {revision}"""\n'
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {revision!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():{body}\n\ndef downgrade():\n    pass\n"
        )


@pytest.fixture
def database() -> Iterator[str]:
    machine_postgres_or_skip()
    name = f"carboy_migrate_{uuid.uuid4().hex[:12]}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_four(database: str, folder: Path, *command: str) -> list[subprocess.CompletedProcess[str]]:
    env = server_env(
        {
            "MIGRATE_DB_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "MIGRATE_DIR": str(folder),
        }
    )
    cmd = [*tool("carboy"), "--app", "scale_db_migrate_app", *command]
    procs = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return results


def log_rows(database: str) -> list[tuple[str, int]]:
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={database}"
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT step, pid FROM migration_log ORDER BY step").fetchall()


def version(database: str) -> list[tuple[str]]:
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={database}"
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


def test_locked_upgrade_applies_once(database: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    write_migrations(folder)
    results = run_four(database, folder, "locked-upgrade")
    outputs = [r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "" for r in results]
    print("\nlocked-upgrade x4:", [r.returncode for r in results], outputs)
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert all("Traceback" not in r.stderr and "Error" not in r.stderr for r in results)
    applied = [o for o in outputs if "applied (empty) -> a3" in o]
    skipped = [o for o in outputs if "nothing to apply, the database is at a3" in o]
    assert len(applied) == 1 and len(skipped) == 3, outputs
    rows = log_rows(database)
    assert [step for step, _ in rows] == ["1", "2", "3"]
    assert len({pid for _, pid in rows}) == 1  # one process ran all three steps
    assert version(database) == [("a3",)]


def test_plain_upgrade_baseline(database: str, tmp_path: Path) -> None:
    """The baseline for the docs: Flask-Migrate's plain upgrade, four at once."""
    folder = tmp_path / "migrations"
    write_migrations(folder)
    results = run_four(database, folder, "db", "upgrade")
    codes = [r.returncode for r in results]
    errors = []
    for r in results:
        lines = [line for line in r.stderr.splitlines() if line.startswith("sqlalchemy.exc.")]
        errors.append(lines[-1][:160] if lines else "")
    print(
        f"\nplain db upgrade x4: exit codes {codes}; last error lines {errors};"
        f" migration_log {log_rows(database)}; alembic_version {version(database)}"
    )
    # Whatever happened, the database ended at the head once some process finished.
    assert 0 in codes
