"""Storage: SQLAlchemy 2 through Flask-SQLAlchemy, the schema made by Alembic migrations
(Flask-Migrate, in ``examples/notes/migrations``).

Why Flask-SQLAlchemy rather than plain SQLAlchemy: the app already runs real Flask extensions
on carboy through the ``flask`` alias (Flask-WTF), ``db.session`` is the session Flask users
know (one per app context, removed at its end), Flask-Migrate gives ``carboy --app
examples.notes db upgrade`` unchanged, and :class:`carboy.scale.database.Database` routes
Flask-SQLAlchemy's session between a PostgreSQL primary and its replicas.

Where the data lives (config keys; ``CARBOY_<KEY>`` in the environment):

* ``DATABASE_URL``: any SQLAlchemy URL, e.g. ``postgresql+psycopg://app@db.internal/notes``
  (install ``carboy[postgres]``). With ``DATABASE_REPLICA_URLS`` (a list, or URLs separated by
  commas) the reads of ``GET`` requests go to the replicas, with read-your-writes
  (:mod:`carboy.scale.database`).
* Otherwise ``DATABASE``: a SQLite file path, or :data:`MEMORY` (the default): one database in
  memory per app, gone when the process ends.

The in-memory database is SQLite's ``memdb`` VFS (``file:/notes-<id>?vfs=memdb``), not
``:memory:`` behind SQLAlchemy's ``StaticPool``: each thread of the server gets a connection of
its own from the pool, all on the one database, with SQLite's usual locking (a writer waits for
another's commit). With ``StaticPool`` every thread would share one connection, and one
request's rollback (every session's end) would undo another thread's uncommitted write. The app
keeps one connection open for its lifetime, which keeps the database alive.

The migrations run when the app starts (``AUTO_MIGRATE``, true by default), once, even when
several worker processes start at the same time: on PostgreSQL inside carboy's advisory lock
(:func:`carboy.scale.database_migrate.locked_upgrade`), on a SQLite file inside a file lock
next to it. ``AUTO_MIGRATE = False`` leaves it to a deploy step: ``carboy --app examples.notes
locked-upgrade`` (PostgreSQL) or ``carboy --app examples.notes db upgrade``.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import sqlite3
import threading
import typing as t
import uuid

import click
import sqlalchemy as sa
from flask_migrate import Migrate, upgrade
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from carboy import current_app

if t.TYPE_CHECKING:
    from carboy import Carboy


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()

#: The migrations folder (Alembic, through Flask-Migrate).
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")

#: The ``DATABASE`` value that keeps the data in memory.
MEMORY = ":memory:"

#: How long a SQLite connection waits for another's write lock, in seconds, before failing with
#: "database is locked": far longer than any request holds it, and shorter than a server's
#: usual 30 s worker timeout.
BUSY_TIMEOUT = 10.0

#: Ids are 64-bit on PostgreSQL; SQLite's ``INTEGER PRIMARY KEY`` is already 64-bit (and must
#: be spelled ``INTEGER`` to be the rowid).
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "account"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    username: Mapped[str] = mapped_column(sa.Text, unique=True)
    password_hash: Mapped[str] = mapped_column(sa.Text)
    joined_at: Mapped[datetime.datetime] = mapped_column(
        default=_utcnow, server_default=sa.func.current_timestamp()
    )


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "note"
    __table_args__ = (
        sa.Index("note_by_owner", "owner_id", "id"),
        {"sqlite_autoincrement": True},  # a deleted note's id is never given again
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    owner_id: Mapped[int] = mapped_column(Id, sa.ForeignKey("account.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(sa.Text)
    body: Mapped[str] = mapped_column(sa.Text, default="", server_default="")
    public: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime.datetime] = mapped_column(
        default=_utcnow, server_default=sa.func.current_timestamp()
    )


class NoteWord(db.Model):  # type: ignore[name-defined,misc]
    """The search index: each word of a note's title and body (written by a job after the
    note's commit, :mod:`examples.notes.search`)."""

    __tablename__ = "note_word"
    __table_args__ = (sa.Index("note_word_by_word", "word"),)

    note_id: Mapped[int] = mapped_column(
        Id, sa.ForeignKey("note.id", ondelete="CASCADE"), primary_key=True
    )
    word: Mapped[str] = mapped_column(sa.String(64), primary_key=True)


# -- configuration -------------------------------------------------------------------------------

_memory_lock = threading.Lock()


def _memory_url(app: Carboy) -> str:
    """The URL of *app*'s in-memory database, made on first use (kept alive by a connection
    the app holds for its lifetime)."""
    with _memory_lock:
        held = app.extensions.get("notes.memory")
        if held is None:
            path = f"file:/notes-{uuid.uuid4().hex}?vfs=memdb"
            held = app.extensions["notes.memory"] = (path, sqlite3.connect(path, uri=True))
    return f"sqlite:///{held[0]}&uri=true"


def _replicas(value: object) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [url.strip() for url in value.split(",") if url.strip()]
    return [str(url) for url in t.cast(t.Iterable[object], value)]


def configure(app: Carboy) -> None:
    """Turn ``DATABASE_URL`` / ``DATABASE`` / ``DATABASE_REPLICA_URLS`` into Flask-SQLAlchemy's
    and carboy.scale.database's keys."""
    config = app.config
    url = config.get("DATABASE_URL")
    if not url:
        path = config["DATABASE"]
        if path == MEMORY:
            url = _memory_url(app)
        else:
            path = os.path.abspath(path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            url = f"sqlite:///{path}"
    config["SQLALCHEMY_DATABASE_URI"] = url
    if sa.make_url(url).get_backend_name() == "sqlite":
        options = config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("connect_args", {}).setdefault("timeout", BUSY_TIMEOUT)
    replicas = _replicas(config.get("DATABASE_REPLICA_URLS"))
    if replicas:
        config["SQLALCHEMY_REPLICA_URIS"] = replicas


def is_sqlite(app: Carboy) -> bool:
    return sa.make_url(app.config["SQLALCHEMY_DATABASE_URI"]).get_backend_name() == "sqlite"


def _sqlite_pragmas(dbapi_connection: t.Any, record: t.Any) -> None:
    """Foreign keys on; a file in WAL mode: readers then never hold up a writer, nor a writer
    the readers, so the workers of a server can share it under load. NORMAL syncs the log at
    checkpoints rather than at every commit: a commit survives the process being killed, not
    a power cut (docs/deployment-safety.md)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() not in ("memory", "wal"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


# -- migrations ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: str) -> t.Iterator[None]:
    """An exclusive lock on ``<path>.migrate-lock``: the processes (and threads) that start on
    one SQLite file take turns."""
    with open(f"{path}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_schema() -> None:
    """Apply the pending migrations, once however many processes start together; call it in
    an app context."""
    app = current_app
    url = sa.make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "postgresql":
        from carboy.scale.database_migrate import locked_upgrade

        locked_upgrade(
            directory=MIGRATIONS,
            name=app.config["SQLALCHEMY_MIGRATION_LOCK_NAME"],
            timeout=app.config["SQLALCHEMY_MIGRATION_LOCK_TIMEOUT"],
        )
    elif url.get_backend_name() == "sqlite" and not url.query.get("vfs") and url.database:
        with _file_lock(url.database):
            upgrade(directory=MIGRATIONS)
    else:
        upgrade(directory=MIGRATIONS)


def init_db_command() -> None:
    """Drop all notes and accounts and migrate to empty tables."""
    db.drop_all()
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    upgrade_schema()
    if current_app.config.get("DATABASE_URL") or current_app.config["DATABASE"] != MEMORY:
        click.echo(f"Empty notes database ready at {db.engine.url.render_as_string()}")
    else:
        click.echo("Empty notes database ready in memory, for this command only: set DATABASE")
        click.echo("to a file path to keep the notes (a served app makes its schema on start).")


def init_app(app: Carboy) -> None:
    """Set up Flask-SQLAlchemy, Flask-Migrate (``carboy db ...``), the SQLite pragmas,
    replica routing on PostgreSQL, and the ``init-db`` command."""
    configure(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS)
    with app.app_context():
        engine = db.engine
    if is_sqlite(app):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # Replica routing with read-your-writes, pools disposed after fork, the pool budget
        # checked against max_connections, and `carboy --app examples.notes locked-upgrade`.
        from carboy.scale.database import Database

        Database(app, db)
    # ``app.cli.command`` wraps the callback so it runs inside an application context,
    # both under ``carboy --app examples.notes init-db`` and ``app.test_cli_runner()``.
    app.cli.command("init-db")(init_db_command)
