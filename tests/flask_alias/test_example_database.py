"""The example notes app's storage (examples/notes/db.py): SQLAlchemy 2 through Flask-SQLAlchemy,
the schema made by Alembic migrations (Flask-Migrate), and a search index written by a job sent
after the note's commit (carboy.scale.jobs' ``enqueue_on_commit``).

SQLite in memory (the default) and on a file; PostgreSQL on the machine's server (database
``test``, a schema of the test's own, dropped afterwards), with a replica configured; the jobs
inline after the commit (no Redis) and on RQ with the machine's Redis (a queue of the test's
own, deleted afterwards).
"""

from __future__ import annotations

import sqlite3
import sys
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.notes import create_app as create_notes_app  # noqa: E402
from examples.notes import search  # noqa: E402
from examples.notes.db import Note, NoteWord, db  # noqa: E402
from notes_client import with_csrf_client  # noqa: E402

from redis_servers import MACHINE_URL, machine_redis_or_skip  # noqa: E402

HEAD = "0003"
PG_SERVER = "postgresql+psycopg://{user}@127.0.0.1:5432/test"


def create_app(tmp_path: Path, **config: object) -> t.Any:
    return with_csrf_client(
        create_notes_app(
            {
                "TESTING": True,
                "SECRET_KEY": "db-secret",
                "INSTANCE_PATH": str(tmp_path / "instance"),
                **config,
            }
        )
    )


def signed_up(client: t.Any, username: str = "ada") -> None:
    form = {"username": username, "password": "password1"}
    assert client.post("/register", data=form).status_code == 302
    assert client.post("/login", data=form).status_code == 302


def words_of_note(app: t.Any, note_id: int) -> list[str]:
    with app.app_context():
        statement = sa.select(NoteWord.word).where(NoteWord.note_id == note_id)
        return sorted(db.session.scalars(statement))


def heads(app: t.Any) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.text("SELECT version_num FROM alembic_version")))


# -- SQLite ------------------------------------------------------------------------------------


def test_the_default_is_sqlite_in_memory_migrated_at_start(tmp_path: Path) -> None:
    app = create_app(tmp_path)
    with app.app_context():
        assert db.engine.dialect.name == "sqlite"
        assert "vfs=memdb" in str(db.engine.url)  # in memory, one database per app
        tables = set(sa.inspect(db.engine).get_table_names())
    assert {"account", "note", "note_word", "alembic_version"} <= tables
    assert heads(app) == [HEAD]
    assert app.config["JOBS_INLINE"] is True  # no Redis: jobs run after the commit, here
    assert list((tmp_path / "instance").iterdir()) == []  # no database file

    client = app.test_client()
    signed_up(client)
    res = client.post("/api/notes", json={"title": "Shopping list", "body": "Eggs, flour"})
    assert res.status_code == 201
    note_id = res.get_json()["id"]
    assert words_of_note(app, note_id) == ["eggs", "flour", "list", "shopping"]
    found = client.get("/api/search", query_string={"q": "FLOUR shopping"}).get_json()
    assert [n["id"] for n in found["notes"]] == [note_id]
    assert client.get("/api/search", query_string={"q": "flour butter"}).get_json()["count"] == 0
    assert client.get("/api/search", query_string={"q": "x" * 1001}).status_code == 400
    # Another user's notes are never found.
    other = app.test_client()
    signed_up(other, "grace")
    assert other.get("/api/search", query_string={"q": "flour"}).get_json()["count"] == 0
    assert client.get("/api/search").status_code == 200  # an empty query finds nothing
    assert app.test_client().get("/api/search?q=flour").status_code == 401


def test_migrations_apply_step_by_step_and_the_cli_upgrades(tmp_path: Path) -> None:
    """The three revisions apply one after another from an empty file (Flask-Migrate's
    ``db upgrade``), and the models match the migrated schema (autogenerate finds nothing)."""
    path = tmp_path / "notes.sqlite"
    app = create_app(tmp_path, DATABASE=str(path), AUTO_MIGRATE=False)
    assert not path.exists() or heads_of(path) == []
    runner = app.test_cli_runner()
    for revision in ("0001", "0002", "0003"):
        result = runner.invoke(args=["db", "upgrade", revision])
        assert result.exit_code == 0, result.output
        assert heads_of(path) == [revision]
    with sqlite3.connect(path) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(note)")}
    assert {"id", "owner_id", "title", "body", "public", "created_at"} == columns
    result = runner.invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output  # the models and the migrations agree
    # Starting the app again on the migrated file changes nothing.
    again = create_app(tmp_path, DATABASE=str(path))
    assert heads(again) == [HEAD]


def heads_of(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        try:
            return [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        except sqlite3.OperationalError:
            return []


def test_the_index_job_runs_after_the_commit_and_never_after_a_rollback(tmp_path: Path) -> None:
    """On a file (so an uncommitted row is invisible to other connections): the job is held
    until the commit, then finds the row; a rolled-back note sends no job."""
    path = tmp_path / "notes.sqlite"
    app = create_app(tmp_path, DATABASE=str(path))
    signed_up(app.test_client())

    def outside(sql: str) -> list[tuple[t.Any, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute(sql).fetchall()

    with app.app_context():
        note = Note(owner_id=1, title="rolled back", body="never indexed")
        db.session.add(note)
        db.session.flush()
        search.index_after_commit(note.id)
        db.session.rollback()
        assert outside("SELECT COUNT(*) FROM note_word") == [(0,)]

        note = Note(owner_id=1, title="committed words", body="")
        db.session.add(note)
        db.session.flush()
        search.index_after_commit(note.id)
        assert outside("SELECT COUNT(*) FROM note") == [(0,)]  # not committed yet...
        assert outside("SELECT COUNT(*) FROM note_word") == [(0,)]  # ...so no job ran
        db.session.commit()
        note_id = note.id
    assert outside("SELECT word FROM note_word ORDER BY word") == [("committed",), ("words",)]
    assert words_of_note(app, note_id) == ["committed", "words"]


# -- Redis: the jobs go to RQ ------------------------------------------------------------------


@pytest.fixture
def rq_queue() -> Iterator[str]:
    redis = machine_redis_or_skip()
    name = f"notes-test-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        from rq import Queue

        Queue(name, connection=redis).delete(delete_jobs=True)
        keys = list(redis.scan_iter(match=f"*{name}*", count=1000))
        if keys:
            redis.delete(*keys)
        redis.close()


def test_with_redis_the_index_job_goes_to_rq_after_the_commit(
    tmp_path: Path, rq_queue: str
) -> None:
    app = create_app(
        tmp_path,
        DATABASE=str(tmp_path / "notes.sqlite"),
        REDIS_URL=MACHINE_URL,
        JOBS_QUEUE=rq_queue,
        SESSION_KEY_PREFIX=f"{rq_queue}:session:",
        CACHE_KEY_PREFIX=f"{rq_queue}:cache:",
        RATELIMIT_KEY_PREFIX=rq_queue,
        BROADCAST_KEY_PREFIX=f"{rq_queue}:broadcast:",
    )
    assert app.config["JOBS_INLINE"] is False
    client = app.test_client()
    signed_up(client)
    queue = search.jobs.queue(app)
    res = client.post("/api/notes", json={"title": "queued words"})
    assert res.status_code == 201
    note_id = res.get_json()["id"]
    assert queue.count == 1  # sent after the commit, not run here
    assert words_of_note(app, note_id) == []
    assert search.jobs.work(app, burst=True)  # what `carboy jobs worker` runs
    assert words_of_note(app, note_id) == ["queued", "words"]
    assert client.get("/api/search?q=queued").get_json()["count"] == 1


# -- PostgreSQL ---------------------------------------------------------------------------------


def postgres_url_or_skip() -> str:
    for user in ("postgres", "root"):
        url = PG_SERVER.format(user=user)
        engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"connect_timeout": 2})
        try:
            with engine.connect():
                return url
        except sa.exc.OperationalError:
            continue
        finally:
            engine.dispose()
    pytest.skip("no PostgreSQL on 127.0.0.1:5432 (database test, user postgres or root)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose every table lives in a schema of this test's own, dropped afterwards."""
    server = postgres_url_or_skip()
    schema = f"notes_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{server}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_on_postgresql_one_variable_away_with_a_replica(tmp_path: Path, pg_url: str) -> None:
    """DATABASE_URL points the app at PostgreSQL: the migrations run at start under carboy's
    advisory lock, the pages and the API work, ids are 64-bit, the index job runs after the
    commit; DATABASE_REPLICA_URLS registers a replica with carboy.scale.database's routing (the
    "replica" is the primary itself here, which never reports a replay position: it is found
    unusable, and the reads of GET requests fall back to the primary, without an error)."""
    from carboy.scale.database import replica_health

    app = create_app(
        tmp_path,
        DATABASE_URL=pg_url,
        DATABASE_REPLICA_URLS=pg_url,
        SQLALCHEMY_POOL_BUDGET=None,
    )
    try:
        with app.app_context():
            assert db.engine.dialect.name == "postgresql"
            schema = db.session.scalar(sa.text("SELECT current_schema()"))
            assert schema.startswith("notes_test_")
        assert heads(app) == [HEAD]
        client = app.test_client()
        signed_up(client)
        res = client.post("/notes/new", data={"title": "Over PostgreSQL", "body": "psycopg three"})
        assert res.status_code == 302
        note_path = res.headers["Location"]
        assert "psycopg three" in client.get(note_path).get_data(as_text=True)
        found = client.get("/api/search?q=psycopg").get_json()
        assert [n["title"] for n in found["notes"]] == ["Over PostgreSQL"]
        assert client.get(f"/api/notes/{2**63 - 1}").status_code == 404
        assert client.get("/notes/99999999999999999999999").status_code == 404
        res = client.post("/register", data={"username": "ada", "password": "password1"})
        assert res.status_code == 200 and b"already taken" in res.data
        with app.app_context():
            health = replica_health(app)
        assert len(health["sets"]["default"]["replicas"]) == 1
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
