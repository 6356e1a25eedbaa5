"""Connection pools that survive a fork and fit the server: disposal after fork, the budget
check, and the pgbouncer profile.

**After fork.** A pool made in a process that then forks (``gunicorn --preload`` imports the
app, and with it the engine, in the arbiter) would hand the same sockets to every worker: two
processes then talk on one PostgreSQL connection and both read garbage. Every engine given to
:func:`dispose_after_fork` gets a new, empty pool in each child, at once
(:func:`os.register_at_fork`); the parent's connections are left to the parent
(``Engine.dispose(close=False)``, SQLAlchemy's own advice).

**The budget.** Each process may open up to ``pool_size + max_overflow`` connections per
engine, and each server accepts ``max_connections`` less ``superuser_reserved_connections``.
:func:`check_pool_budget` adds up, per server::

    hosts x workers x (sum over engines to that server of (pool_size + max_overflow)
                       + the routing checks' connections)

and compares it with what the server accepts (``SHOW max_connections``): it logs a warning
when the sum is larger, or raises :class:`PoolBudgetError` in strict mode.

**pgbouncer.** :func:`pgbouncer_engine_options` gives the engine options for a pgbouncer in
``pool_mode = transaction``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import os
import typing as t
import weakref
from dataclasses import dataclass

import sqlalchemy as sa

__all__ = [
    "PoolBudget",
    "PoolBudgetError",
    "check_pool_budget",
    "dispose_after_fork",
    "pgbouncer_engine_options",
    "pool_capacity",
]

log = logging.getLogger("carboy.scale.database")

_forked: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
_hooked = False


def dispose_after_fork(engine: t.Any) -> None:
    """Give *engine* (an :class:`~sqlalchemy.Engine` or
    :class:`~sqlalchemy.ext.asyncio.AsyncEngine`) a new pool in every process forked from
    this one, so that no connection is shared with the parent.

    .. versionadded:: 0.1
    """
    global _hooked
    _forked.add(getattr(engine, "sync_engine", engine))
    if not _hooked and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_dispose_all)
        _hooked = True


def _dispose_all() -> None:
    for engine in list(_forked):
        try:
            engine.dispose(close=False)
        except Exception:  # a child must start whatever happens to one engine
            pass


class PoolBudgetError(RuntimeError):
    """The pools would open more connections than a server accepts (strict mode).

    .. versionadded:: 0.1
    """


@dataclass
class PoolBudget:
    """The budget of one server: what the app's processes may open against what it accepts.

    .. versionadded:: 0.1
    """

    #: ``host:port`` of the server.
    server: str
    #: Connections one process may open to it (pools plus checks).
    per_process: int
    #: Hosts and worker processes per host that run the app.
    hosts: int
    workers: int
    #: ``SHOW max_connections`` and ``SHOW superuser_reserved_connections``; ``None`` if the
    #: server could not be asked.
    max_connections: int | None
    reserved: int

    @property
    def total(self) -> int:
        """``hosts * workers * per_process``."""
        return self.hosts * self.workers * self.per_process

    @property
    def available(self) -> int | None:
        """Connections the server accepts from ordinary users."""
        if self.max_connections is None:
            return None
        return self.max_connections - self.reserved

    @property
    def ok(self) -> bool:
        """Whether the total fits (``True`` when the server could not be asked)."""
        return self.available is None or self.total <= self.available

    def describe(self) -> str:
        return (
            f"{self.server}: {self.hosts} host(s) x {self.workers} worker(s) x"
            f" {self.per_process} connection(s) = {self.total}, the server accepts"
            f" {self.available} (max_connections {self.max_connections} -"
            f" {self.reserved} reserved)"
        )


def pool_capacity(engine: t.Any) -> int:
    """The most connections *engine*'s pool opens in one process: ``pool_size +
    max_overflow`` for a :class:`~sqlalchemy.pool.QueuePool` (a ``max_overflow`` of ``-1``,
    no limit, adds nothing: such a pool cannot be budgeted), 1 for a single-connection pool,
    0 for :class:`~sqlalchemy.pool.NullPool` (which opens one per checkout: bound it
    elsewhere).

    .. versionadded:: 0.1
    """
    pool = getattr(engine, "sync_engine", engine).pool
    size = getattr(pool, "size", None)
    if callable(size):
        overflow = getattr(pool, "_max_overflow", 0)
        return int(size()) + max(0, int(overflow))
    if isinstance(pool, sa.NullPool):
        return 0
    return 1


def _server(engine: t.Any) -> tuple[str, int]:
    url = sa.make_url(getattr(engine, "url", engine))
    return (url.host or "localhost", int(url.port or 5432))


def _ask(url: sa.URL, timeout: float) -> tuple[int, int]:
    if url.drivername in ("postgresql+asyncpg", "postgresql+psycopg_async"):
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, t.Any] = {}
    if url.get_driver_name() in ("psycopg", "psycopg2"):
        connect_args["connect_timeout"] = max(2, int(timeout + 0.999))
    engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            max_connections = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
            reserved = int(conn.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
    finally:
        engine.dispose()
    return max_connections, reserved


def check_pool_budget(
    engines: t.Iterable[t.Any],
    *,
    hosts: int = 1,
    workers: int = 1,
    mode: str | None = "warn",
    extra: t.Mapping[tuple[str, int], int] | None = None,
    timeout: float = 2.0,
) -> list[PoolBudget]:
    """Compare, per server, ``hosts * workers * (pool capacity + extra)`` with what the server
    accepts, asking each server on a connection of its own (no pool is touched, so it is safe
    before a fork).

    :param engines: the engines (sync or async) of one process; engines to one server add up.
    :param hosts: hosts that run the app.
    :param workers: worker processes per host.
    :param mode: ``"warn"`` logs a warning for each server over budget, ``"strict"`` raises,
        ``None`` only reports.
    :param extra: more connections per process per ``(host, port)``, such as the routing
        checks'.
    :param timeout: seconds to connect to each server.
    :returns: one :class:`PoolBudget` per server. A server that cannot be asked is reported
        with ``max_connections=None`` and logged (it never fails a start).
    :raises PoolBudgetError: in strict mode, a server is over budget.
    :raises ValueError: an unknown mode, or *hosts*/*workers* below 1.

    .. versionadded:: 0.1
    """
    if mode not in ("warn", "strict", None):
        raise ValueError(f"Unknown pool budget mode {mode!r}: 'warn', 'strict' or None.")
    if hosts < 1 or workers < 1:
        raise ValueError("hosts and workers must be at least 1.")
    per_server: dict[tuple[str, int], int] = dict(extra or {})
    urls: dict[tuple[str, int], sa.URL] = {}
    seen: set[int] = set()
    for engine in engines:
        sync = getattr(engine, "sync_engine", engine)
        if id(sync) in seen:
            continue
        seen.add(id(sync))
        key = _server(sync)
        urls.setdefault(key, sync.url)
        per_server[key] = per_server.get(key, 0) + pool_capacity(sync)
    budgets = []
    for key, url in urls.items():
        try:
            max_connections, reserved = _ask(url, timeout)
        except Exception as e:
            log.warning("Could not check the pool budget of %s:%s: %r", *key, e)
            max_connections, reserved = None, 0
        budgets.append(
            PoolBudget(
                f"{key[0]}:{key[1]}", per_server[key], hosts, workers, max_connections, reserved
            )
        )
    over = [b for b in budgets if not b.ok]
    for budget in over:
        message = "The connection pools exceed what the server accepts: " + budget.describe()
        if mode == "strict":
            raise PoolBudgetError(message)
        if mode == "warn":
            log.warning(message)
    return budgets


def pgbouncer_engine_options(driver: str = "psycopg") -> dict[str, t.Any]:
    """Engine options (for ``create_engine(url, **options)`` or Flask-SQLAlchemy's
    ``SQLALCHEMY_ENGINE_OPTIONS``) for a pgbouncer in transaction pooling mode.

    In that mode a server connection serves one transaction of one client, then another
    client's; so nothing may outlive a transaction on the server side:

    * psycopg 3 prepares a statement on the server after it ran 5 times
      (``prepare_threshold``): a later transaction may land on a server connection that never
      prepared it, or prepared another under the same name. ``prepare_threshold=None`` turns
      that off (pgbouncer 1.21+ can track prepared statements itself with
      ``max_prepared_statements``; this profile does not rely on it);
    * ``pool_pre_ping``: pgbouncer closes client connections idle past
      ``client_idle_timeout``; a ping at checkout replaces them instead of failing a request;
    * asyncpg (``driver="asyncpg"``) caches prepared statements per connection: the cache is
      turned off and statement names are made unique.

    Session state (``SET``, advisory locks, ``LISTEN``, temporary tables) does not survive a
    transaction either: run migrations (:mod:`carboy.scale.database_migrate`'s lock) on a
    direct connection to the primary.

    :param driver: ``"psycopg"`` (psycopg 3, sync or async) or ``"asyncpg"``.
    :raises ValueError: another driver.

    .. versionadded:: 0.1
    """
    if driver == "psycopg":
        return {"pool_pre_ping": True, "connect_args": {"prepare_threshold": None}}
    if driver == "asyncpg":
        import uuid

        return {
            "pool_pre_ping": True,
            "connect_args": {
                "statement_cache_size": 0,
                "prepared_statement_cache_size": 0,
                "prepared_statement_name_func": lambda: f"__carboy_{uuid.uuid4().hex}__",
            },
        }
    raise ValueError(f"No pgbouncer profile for driver {driver!r}: 'psycopg' or 'asyncpg'.")
