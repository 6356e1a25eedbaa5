"""Migrations that run once when many processes start at the same time.

A rolling deploy starts several pods, and each runs ``flask db upgrade`` before it serves.
Alembic takes no lock: two of them read the same version, both run the same migration, and one
fails on ``relation already exists`` (or both succeed at steps that are not idempotent).
:func:`migration_lock` takes a PostgreSQL advisory lock (``pg_advisory_lock``) on a connection
of its own for as long as the upgrade runs; the other processes wait for it, then find the
database at the head and do nothing. :func:`locked_upgrade` (and the ``flask locked-upgrade``
command that :class:`~carboy.scale.database.Database` adds) runs Flask-Migrate's upgrade, or
plain Alembic's, inside the lock.

The lock is session-level: run it on a direct connection to the primary, not through a
pgbouncer in transaction mode (which could run the unlock on another server connection).

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import typing as t

import click
import sqlalchemy as sa

from ..cli import with_appcontext

__all__ = [
    "MigrationLockTimeout",
    "current_heads",
    "lock_key",
    "locked_upgrade",
    "locked_upgrade_command",
    "migration_lock",
]

log = logging.getLogger("carboy.scale.database")

#: The lock's default name; :func:`lock_key` makes the advisory lock's key from it.
DEFAULT_LOCK_NAME = "carboy.migrate"


class MigrationLockTimeout(TimeoutError):
    """Another process held the migration lock for longer than the timeout.

    .. versionadded:: 0.1
    """


def lock_key(name: str) -> int:
    """The signed 64-bit advisory lock key of *name* (the first 8 bytes of its SHA-256).

    .. versionadded:: 0.1
    """
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _sync_url(source: t.Any) -> sa.URL:
    url = sa.make_url(getattr(source, "url", source))
    if url.drivername in ("postgresql+asyncpg", "postgresql+psycopg_async"):
        url = url.set(drivername="postgresql+psycopg")
    return url


@contextlib.contextmanager
def migration_lock(
    target: t.Any,
    *,
    name: str = DEFAULT_LOCK_NAME,
    timeout: float | None = 600.0,
    poll: float = 0.2,
) -> t.Iterator[sa.Connection]:
    """Hold the migration lock of *target*'s database while the block runs.

    :param target: a database URL (``str`` or :class:`~sqlalchemy.URL`) or an engine (sync
        or async); the lock is taken on a new connection of its own (autocommit), which the
        block receives, and which is closed afterwards.
    :param name: the lock's name (:func:`lock_key`); processes that use the same name on the
        same database exclude each other.
    :param timeout: seconds to wait for another holder; ``None`` waits for ever.
    :param poll: seconds between two tries while another process holds the lock.
    :raises MigrationLockTimeout: the lock was not free within *timeout* seconds.
    :raises sqlalchemy.exc.OperationalError: the database could not be reached.

    .. versionadded:: 0.1
    """
    key = lock_key(name)
    engine = sa.create_engine(_sync_url(target), poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            deadline = None if timeout is None else time.monotonic() + timeout
            waited = False
            while not conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})").scalar_one():
                if not waited:
                    unsigned = key & 0xFFFFFFFFFFFFFFFF
                    holder = conn.exec_driver_sql(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        f" AND ((classid::bigint << 32) | objid::bigint) = {unsigned}"
                    ).scalar()
                    log.info("Waiting for the migration lock (held by backend %s).", holder)
                    waited = True
                if deadline is not None and time.monotonic() > deadline:
                    raise MigrationLockTimeout(
                        f"The migration lock {name!r} was held by another process for more"
                        f" than {timeout} s."
                    )
                time.sleep(poll)
            try:
                yield conn
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
    finally:
        engine.dispose()


def current_heads(conn: sa.Connection, version_table: str = "alembic_version") -> tuple[str, ...]:
    """The Alembic revisions the database of *conn* is at (``()`` before the first).

    .. versionadded:: 0.1
    """
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": version_table})
    return tuple(sorted(context.get_current_heads()))


def locked_upgrade(
    revision: str = "head",
    *,
    directory: str | None = None,
    tag: str | None = None,
    x_arg: t.Sequence[str] | None = None,
    alembic_ini: str | None = None,
    url: t.Any = None,
    name: str = DEFAULT_LOCK_NAME,
    timeout: float | None = 600.0,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Upgrade the database to *revision* inside :func:`migration_lock`; call it in an app
    context.

    With Flask-Migrate on the current app (``app.extensions["migrate"]``), its
    ``flask_migrate.upgrade`` runs (same *directory*, *tag* and *x_arg* as ``flask db
    upgrade``), and the lock is taken on its Flask-SQLAlchemy engine's database. Otherwise
    *alembic_ini* names the Alembic config, and the lock's database is *url* or the config's
    ``sqlalchemy.url``.

    :returns: ``(heads before, heads after)``, read under the lock: equal when another
        process had applied everything already.
    :raises MigrationLockTimeout: see :func:`migration_lock`.
    :raises RuntimeError: neither Flask-Migrate nor an Alembic config, or no database URL.
    :raises SystemExit: Flask-Migrate's upgrade failed (it exits with status 1, as ``flask db
        upgrade`` does).

    .. versionadded:: 0.1
    """
    from ..globals import current_app

    migrate = current_app.extensions.get("migrate")
    config: t.Any = None
    if migrate is not None and alembic_ini is None:
        if url is None:
            url = migrate.db.engine.url
    else:
        if alembic_ini is None:
            raise RuntimeError(
                "locked-upgrade needs Flask-Migrate on the app, or an Alembic config (--config)."
            )
        from alembic.config import Config

        config = Config(alembic_ini)
        if x_arg:
            config.cmd_opts = t.cast(t.Any, type("Opts", (), {"x": list(x_arg)})())
        url = url or config.get_main_option("sqlalchemy.url")
        url = url or current_app.config.get("SQLALCHEMY_DATABASE_URI")
    if not url:
        raise RuntimeError("locked-upgrade found no database URL to take the lock on.")
    with migration_lock(url, name=name, timeout=timeout) as conn:
        before = current_heads(conn)
        if config is None:
            import flask_migrate  # type: ignore[import-untyped]

            flask_migrate.upgrade(directory=directory, revision=revision, tag=tag, x_arg=x_arg)
        else:
            from alembic import command

            command.upgrade(config, revision, tag=tag)
        after = current_heads(conn)
    return before, after


@click.command("locked-upgrade")
@click.option("-d", "--directory", default=None, help="The migrations folder (Flask-Migrate).")
@click.option("--tag", default=None, help="An arbitrary tag for custom env.py scripts.")
@click.option("-x", "--x-arg", multiple=True, help="Extra arguments for custom env.py scripts.")
@click.option("--config", "alembic_ini", default=None, help="Plain Alembic: the alembic.ini.")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds to wait for another process's upgrade (SQLALCHEMY_MIGRATION_LOCK_TIMEOUT).",
)
@click.argument("revision", default="head")
@with_appcontext
def locked_upgrade_command(
    directory: str | None,
    tag: str | None,
    x_arg: tuple[str, ...],
    alembic_ini: str | None,
    timeout: float | None,
    revision: str,
) -> None:
    """Upgrade the database under a PostgreSQL advisory lock (flask db upgrade, once).

    Start it from every process that may start at once: one applies the migrations, the
    others wait for it, find nothing left to apply, and exit 0.
    """
    from ..globals import current_app

    config = current_app.config
    if timeout is None:
        timeout = config.get("SQLALCHEMY_MIGRATION_LOCK_TIMEOUT", 600.0)
    name = config.get("SQLALCHEMY_MIGRATION_LOCK_NAME", DEFAULT_LOCK_NAME)
    try:
        before, after = locked_upgrade(
            revision,
            directory=directory,
            tag=tag,
            x_arg=x_arg,
            alembic_ini=alembic_ini,
            name=name,
            timeout=timeout,
        )
    except MigrationLockTimeout as e:
        raise click.ClickException(str(e))
    shown_before = ", ".join(before) or "(empty)"
    shown_after = ", ".join(after) or "(empty)"
    if before == after:
        click.echo(f"locked-upgrade: nothing to apply, the database is at {shown_after}.")
    else:
        click.echo(f"locked-upgrade: applied {shown_before} -> {shown_after}.")
