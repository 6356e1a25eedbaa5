"""Databases at scale: reads on replicas, read-your-writes, pools that fit, locked migrations.

::

    from flask_sqlalchemy import SQLAlchemy
    from carboy.scale.database import Database, use_primary

    app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://app@primary/app"
    app.config["SQLALCHEMY_REPLICA_URIS"] = ["postgresql+psycopg://app@replica1/app"]
    db = SQLAlchemy(app)          # Flask-SQLAlchemy 3.1, unchanged
    Database(app, db)             # after db.init_app(app)

:class:`Database` makes ``db.session`` route each statement (the rules are in
:mod:`carboy.scale.database_routing`): reads of ``GET``/``HEAD``/``OPTIONS`` requests on a
replica that is up, not lagging, and has replayed the user's own last commit; everything
else on the primary. Plain SQLAlchemy 2.x (sync, or asyncio) registers its engines with
:meth:`Database.register` and makes its sessions with
:data:`~carboy.scale.database_routing.RoutingSession`.

**Read-your-writes.** After a request commits a write on the primary, the response carries a
cookie (signed with the app's ``SECRET_KEY``) holding the primary's WAL position
(``pg_current_wal_lsn()``) after the commit. A later request of that user, on any worker of
any host, reads from a replica only once that replica has replayed past it
(``pg_last_wal_replay_lsn()``, checked at most once per interval per process); until then
from the primary. The cookie is dropped once every usable replica is past it, and is ignored
after ``SQLALCHEMY_REPLICA_MAX_LAG`` seconds and two check intervals (a replica still
behind it by then is skipped for its lag anyway). The simpler ``time`` mode sends the user's
reads to the primary for ``SQLALCHEMY_READ_YOUR_WRITES_PIN`` seconds after each commit,
without asking the replicas.

Config keys (``app.config``), with their defaults:

======================================  ==================  ========================================
``SQLALCHEMY_REPLICA_URIS``             ``None``            the default bind's replicas: a list of
                                                            URLs (or ``{"url": ..., **options}``)
``SQLALCHEMY_REPLICA_BINDS``            ``{}``              the same per Flask-SQLAlchemy bind key
``SQLALCHEMY_REPLICA_ENGINE_OPTIONS``   ``None``            the replicas' ``create_engine`` options
                                                            (default: ``SQLALCHEMY_ENGINE_OPTIONS``,
                                                            with ``pool_pre_ping=True``)
``SQLALCHEMY_REPLICA_POLICY``           ``round_robin``     or ``random``, or a callable
``SQLALCHEMY_REPLICA_MAX_LAG``          ``5.0``             seconds a replica may be behind
``SQLALCHEMY_REPLICA_CHECK_INTERVAL``   ``0.5``             seconds between checks of each server
``SQLALCHEMY_REPLICA_CHECK_TIMEOUT``    ``2.0``             seconds a check may take
``SQLALCHEMY_READ_YOUR_WRITES``         ``"lsn"``           ``"lsn"``, ``"time"`` or ``None``
``SQLALCHEMY_READ_YOUR_WRITES_PIN``     ``5.0``             seconds on the primary (``time`` mode)
``SQLALCHEMY_READ_YOUR_WRITES_COOKIE``  ``"carboy_ryw"``    the token cookie's name
``SQLALCHEMY_POOL_BUDGET``              ``"warn"``          ``"warn"``, ``"strict"`` or ``None``
``SQLALCHEMY_POOL_HOSTS``               ``1``               hosts that run the app
``SQLALCHEMY_POOL_WORKERS``             ``None``            worker processes per host (default:
                                                            ``$WEB_CONCURRENCY``, else 1)
``SQLALCHEMY_MIGRATION_LOCK_TIMEOUT``   ``600.0``           seconds ``locked-upgrade`` waits
``SQLALCHEMY_MIGRATION_LOCK_NAME``      ``carboy.migrate``  the advisory lock's name
======================================  ==================  ========================================

Outages: a replica that is down, frozen, or lagging is skipped and its reads go to the primary
(no error); a read that fails on a replica runs again on the primary.
:func:`replica_health` reports ``"degraded"`` meanwhile. The primary's own outage is the
app's: statements fail as they would without this module.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import time
import typing as t

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .database_migrate import locked_upgrade_command
from .database_pools import (
    PoolBudget,
    PoolBudgetError,
    check_pool_budget,
    dispose_after_fork,
    pgbouncer_engine_options,
)
from .database_routing import (
    ReplicaSet,
    RequestTokens,
    RoutingSession,
    current_tokens,
    find_set,
    register_set,
    routing_session_class,
    use_primary,
    use_replica,
)

if t.TYPE_CHECKING:
    from ..app import Carboy
    from ..wrappers import Request, Response

__all__ = [
    "EXTENSION_KEY",
    "Database",
    "PoolBudget",
    "PoolBudgetError",
    "ReplicasDegraded",
    "RoutingSession",
    "check_primary",
    "check_replicas",
    "pgbouncer_engine_options",
    "replica_health",
    "use_primary",
    "use_replica",
]

#: The key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "carboy.database"

_DEFAULTS: dict[str, t.Any] = {
    "SQLALCHEMY_REPLICA_URIS": None,
    "SQLALCHEMY_REPLICA_BINDS": {},
    "SQLALCHEMY_REPLICA_ENGINE_OPTIONS": None,
    "SQLALCHEMY_REPLICA_POLICY": "round_robin",
    "SQLALCHEMY_REPLICA_MAX_LAG": 5.0,
    "SQLALCHEMY_REPLICA_CHECK_INTERVAL": 0.5,
    "SQLALCHEMY_REPLICA_CHECK_TIMEOUT": 2.0,
    "SQLALCHEMY_READ_YOUR_WRITES": "lsn",
    "SQLALCHEMY_READ_YOUR_WRITES_PIN": 5.0,
    "SQLALCHEMY_READ_YOUR_WRITES_COOKIE": "carboy_ryw",
    "SQLALCHEMY_POOL_BUDGET": "warn",
    "SQLALCHEMY_POOL_HOSTS": 1,
    "SQLALCHEMY_POOL_WORKERS": None,
    "SQLALCHEMY_MIGRATION_LOCK_TIMEOUT": 600.0,
    "SQLALCHEMY_MIGRATION_LOCK_NAME": "carboy.migrate",
}
_SALT = "carboy.scale.database.read-your-writes"


class ReplicasDegraded(Exception):
    """Raised by :func:`check_replicas` when a replica cannot serve reads (its message names
    which and why).

    .. versionadded:: 0.1
    """


class _AppState:
    """What one app keeps: its replica sets by name, and the token cookie's settings."""

    def __init__(self, app: Carboy) -> None:
        self.app = app
        self.sets: dict[str, ReplicaSet] = {}
        config = app.config
        self.cookie = str(config["SQLALCHEMY_READ_YOUR_WRITES_COOKIE"])
        self._serializer: URLSafeTimedSerializer | None = None
        self._key: t.Any = None

    def serializer(self) -> URLSafeTimedSerializer | None:
        key = self.app.secret_key
        if not key:
            return None
        if self._serializer is None or key is not self._key:
            self._serializer = URLSafeTimedSerializer(key, salt=_SALT)
            self._key = key
        return self._serializer

    def max_age(self) -> float:
        return max((s.token_max_age for s in self.sets.values()), default=10.0)

    def load_tokens(self, request: Request) -> RequestTokens:
        """The user's tokens from the request's cookie (none if it is missing, forged, or
        older than the tokens can matter)."""
        raw = request.cookies.get(self.cookie)
        serializer = self.serializer() if raw else None
        if serializer is None or raw is None:
            return RequestTokens({})
        try:
            data = serializer.loads(raw, max_age=int(self.max_age()) + 1)
        except BadSignature:  # also SignatureExpired
            return RequestTokens({})
        if not isinstance(data, dict):
            return RequestTokens({})
        values = {str(k): v for k, v in data.items() if isinstance(v, int | float)}
        return RequestTokens(values, had_cookie=True)

    def after_request(self, response: Response) -> Response:
        tokens = current_tokens()
        if tokens is None:
            return response
        now = time.monotonic()
        values = tokens.values
        for name, value in list(values.items()):
            replica_set = self.sets.get(name)
            if replica_set is None or replica_set.caught_up(value, now):
                del values[name]
                tokens.changed = True
        if not tokens.changed:
            return response
        config = self.app.config
        path = config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/"
        serializer = self.serializer()
        if values and serializer is not None:
            response.set_cookie(
                self.cookie,
                serializer.dumps(values),
                max_age=int(self.max_age()) + 1,
                path=path,
                secure=bool(config.get("SESSION_COOKIE_SECURE")),
                httponly=True,
                samesite="Lax",
            )
        elif tokens.had_cookie:
            response.delete_cookie(self.cookie, path=path)
        return response


class Database:
    """Routes Flask-SQLAlchemy's (or plain SQLAlchemy's) sessions between a primary and its
    replicas, carries read-your-writes tokens, disposes pools after fork, checks the pool
    budget, and adds ``flask locked-upgrade``.

    :param app: the app to register with now, or ``None`` to call :meth:`init_app` later.
    :param db: the app's :class:`flask_sqlalchemy.SQLAlchemy`, already initialised on the app
        (``db.init_app(app)`` first), or ``None`` for plain SQLAlchemy (see :meth:`register`).

    The per-app state is kept in ``app.extensions["carboy.database"]``.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Carboy | None = None, db: t.Any = None) -> None:
        self.db = db
        self.app = app
        if app is not None:
            self.init_app(app, db)

    def init_app(self, app: Carboy, db: t.Any = None) -> None:
        """Read the ``SQLALCHEMY_*`` keys above; with *db*, route its session and register
        each bind that has replicas; then check the pool budget.

        :raises RuntimeError: *db* is not initialised on *app*.
        :raises ValueError: a bad config value (policy, mode).
        :raises PoolBudgetError: ``SQLALCHEMY_POOL_BUDGET = "strict"`` and the pools exceed a
            server's ``max_connections``.
        """
        for key, value in _DEFAULTS.items():
            app.config.setdefault(key, value)
        state = _AppState(app)
        app.extensions[EXTENSION_KEY] = state
        app.after_request(state.after_request)
        app.cli.add_command(locked_upgrade_command)
        db = db if db is not None else self.db
        engines: list[t.Any] = []
        if db is not None:
            engines = self._hook_flask_sqlalchemy(app, db)
        for replica_set in state.sets.values():
            engines.extend(replica_set.engines()[1:])
        self._check_budget(app, engines)

    def _hook_flask_sqlalchemy(self, app: Carboy, db: t.Any) -> list[t.Any]:
        if "sqlalchemy" not in app.extensions:
            raise RuntimeError(
                "Initialise Flask-SQLAlchemy first: db.init_app(app), then Database."
            )
        factory = db.session.session_factory
        factory.class_ = routing_session_class(factory.class_)
        with app.app_context():
            engines = dict(db.engines)
        config = app.config
        wanted: dict[str | None, t.Any] = dict(config["SQLALCHEMY_REPLICA_BINDS"] or {})
        if config["SQLALCHEMY_REPLICA_URIS"]:
            wanted[None] = config["SQLALCHEMY_REPLICA_URIS"]
        unknown = set(wanted) - set(engines)
        if unknown:
            raise ValueError(f"Replicas are configured for unknown bind keys: {unknown}.")
        for key, engine in engines.items():
            if key in wanted:
                self.register(engine, wanted[key], name=key or "default", app=app, check=False)
            else:
                dispose_after_fork(engine)
        return list(engines.values())

    def register(
        self,
        primary: t.Any,
        replicas: t.Any = (),
        *,
        name: str = "default",
        app: Carboy | None = None,
        check: bool = True,
    ) -> ReplicaSet | None:
        """Route the sessions bound to *primary* between it and *replicas* (plain SQLAlchemy;
        :meth:`init_app` does it for Flask-SQLAlchemy's binds).

        :param primary: an :class:`~sqlalchemy.Engine` or
            :class:`~sqlalchemy.ext.asyncio.AsyncEngine`; make the sessions with
            ``sessionmaker(primary, class_=RoutingSession)`` or ``async_sessionmaker(primary,
            sync_session_class=RoutingSession)``.
        :param replicas: engines of the same kind, or URLs (``str``, or ``{"url": ...,
            **create_engine options}``), made into engines with
            ``SQLALCHEMY_REPLICA_ENGINE_OPTIONS``; a single URL is one replica.
        :param name: the set's name in tokens and health reports.
        :param app: the app (default: the one given to the constructor).
        :param check: check the pool budget of these engines now.
        :returns: the :class:`ReplicaSet`, or ``None`` when there are no replicas (the engine
            is then only disposed after fork and budgeted).
        :raises RuntimeError: no app.
        :raises PoolBudgetError: see :meth:`init_app`.
        """
        app = app or self.app
        if app is None:
            raise RuntimeError("Database.register needs an app: Database(app) or app=...")
        state = t.cast(_AppState, app.extensions[EXTENSION_KEY])
        if isinstance(replicas, str | dict | sa.URL):
            replicas = [replicas]
        engines = [_replica_engine(app, primary, r) for r in replicas]
        dispose_after_fork(primary)
        for engine in engines:
            dispose_after_fork(engine)
        if not engines:
            if check:
                self._check_budget(app, [primary])
            return None
        config = app.config
        replica_set = ReplicaSet(
            name,
            primary,
            engines,
            policy=config["SQLALCHEMY_REPLICA_POLICY"],
            max_lag=config["SQLALCHEMY_REPLICA_MAX_LAG"],
            interval=config["SQLALCHEMY_REPLICA_CHECK_INTERVAL"],
            timeout=config["SQLALCHEMY_REPLICA_CHECK_TIMEOUT"],
            read_your_writes=config["SQLALCHEMY_READ_YOUR_WRITES"],
            pin=config["SQLALCHEMY_READ_YOUR_WRITES_PIN"],
        )
        state.sets[name] = replica_set
        register_set(replica_set)
        if check:
            self._check_budget(app, replica_set.engines())
        return replica_set

    def check_pool_budget(self, app: Carboy | None = None) -> list[PoolBudget]:
        """Check the budget of every engine of *app* now (see
        :func:`~carboy.scale.database_pools.check_pool_budget`), with the app's hosts,
        workers and mode.

        :raises PoolBudgetError: strict mode, over budget.
        """
        app = app or self.app
        if app is None:
            raise RuntimeError("No app: Database(app) or check_pool_budget(app).")
        engines: list[t.Any] = []
        if self.db is not None:
            with app.app_context():
                engines.extend(self.db.engines.values())
        for replica_set in t.cast(_AppState, app.extensions[EXTENSION_KEY]).sets.values():
            engines.extend(replica_set.engines())
        return self._check_budget(app, engines, force=True)

    def _check_budget(
        self, app: Carboy, engines: list[t.Any], force: bool = False
    ) -> list[PoolBudget]:
        config = app.config
        mode = config["SQLALCHEMY_POOL_BUDGET"]
        if (mode is None and not force) or not engines:
            return []
        engines = [e for e in engines if _is_postgres(e)]
        workers = config["SQLALCHEMY_POOL_WORKERS"] or int(os.environ.get("WEB_CONCURRENCY", 1))
        extra: dict[tuple[str, int], int] = {}
        state = t.cast(_AppState, app.extensions[EXTENSION_KEY])
        for replica_set in state.sets.values():  # each routing check holds one connection
            for engine in replica_set.engines():
                url = sa.make_url(getattr(engine, "url", engine))
                key = (url.host or "localhost", int(url.port or 5432))
                extra[key] = extra.get(key, 0) + 1
        return check_pool_budget(
            engines,
            hosts=int(config["SQLALCHEMY_POOL_HOSTS"]),
            workers=int(workers),
            mode=mode,
            extra={k: v for k, v in extra.items() if k in {_key(e) for e in engines}},
            timeout=float(config["SQLALCHEMY_REPLICA_CHECK_TIMEOUT"]),
        )


def _key(engine: t.Any) -> tuple[str, int]:
    url = sa.make_url(getattr(engine, "url", engine))
    return (url.host or "localhost", int(url.port or 5432))


def _is_postgres(engine: t.Any) -> bool:
    return str(getattr(engine, "url", engine)).startswith(("postgresql", "postgres"))


def _replica_engine(app: Carboy, primary: t.Any, replica: t.Any) -> t.Any:
    """*replica* as an engine of *primary*'s kind (sync or async)."""
    if isinstance(replica, sa.Engine) or hasattr(replica, "sync_engine"):
        return replica
    options = app.config["SQLALCHEMY_REPLICA_ENGINE_OPTIONS"]
    if options is None:
        options = app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
    options = dict(options)
    # A replica only reads: each read is its own snapshot (no BEGIN, no ROLLBACK round trips),
    # and a replica that goes away between two reads leaves no transaction to end.
    options.setdefault("isolation_level", "AUTOCOMMIT")
    options.setdefault("pool_pre_ping", True)
    if isinstance(replica, dict):
        replica = dict(replica)
        url = replica.pop("url")
        options.update(replica)
    else:
        url = replica
    if hasattr(primary, "sync_engine"):
        from sqlalchemy.ext.asyncio import create_async_engine

        return create_async_engine(url, **options)
    return sa.create_engine(url, **options)


def _state(app: Carboy | None) -> _AppState:
    if app is None:
        from ..globals import current_app

        app = current_app
    state = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise RuntimeError("No Database on this app: call Database(app) first.")
    return t.cast(_AppState, state)


def replica_health(app: Carboy | None = None) -> dict[str, t.Any]:
    """The replicas' state as this process last checked it (no query runs here; the checks
    start if they were idle).

    :param app: the app (default: the current app).
    :returns: ``{"status": ..., "sets": {name: {"status", "primary", "replicas"}}}``;
        ``status`` is ``"ok"`` when every replica can serve reads, ``"degraded"`` when one
        cannot (down, lagging past ``SQLALCHEMY_REPLICA_MAX_LAG``, or not checked recently:
        its reads go to the others or to the primary), ``"down"`` when the last check of a
        primary failed. Each replica: ``name``, ``up``, ``usable``, ``lag`` (seconds),
        ``replay_lsn``, ``checked`` (seconds ago), ``fallbacks`` (reads run again on the
        primary in this process) and ``error``.
    :raises RuntimeError: no :class:`Database` on the app.

    .. versionadded:: 0.1
    """
    now = time.monotonic()
    sets = {name: s.health(now) for name, s in _state(app).sets.items()}
    statuses = {s["status"] for s in sets.values()}
    status = "down" if "down" in statuses else "degraded" if "degraded" in statuses else "ok"
    return {"status": status, "sets": sets}


def check_replicas(app: Carboy | None = None) -> None:
    """A readiness check that fails while :func:`replica_health` is not ``"ok"``: register
    it with ``health.add_check("replicas", check_replicas)``
    (``carboy.scale.health.Health``) where a host without its replicas should leave the
    load balancer; most apps should not (reads fall back to the primary), and register
    :func:`check_primary` instead.

    :raises ReplicasDegraded: a replica cannot serve reads (the message says which, why).

    .. versionadded:: 0.1
    """
    report = replica_health(app)
    if report["status"] == "ok":
        return
    bad = []
    for replica_set in report["sets"].values():
        for r in replica_set["replicas"]:
            if not r["usable"]:
                why = r["error"] or (f"lag {r['lag']:.1f} s" if r["up"] else "not checked")
                bad.append(f"{r['name']} ({why})")
    raise ReplicasDegraded(f"{report['status']}: reads on the primary instead of {', '.join(bad)}")


def check_primary(app: Carboy | None = None) -> bool:
    """A readiness check: ``False`` when this process's last check of a primary failed
    (``health.add_check("database", check_primary)``); a replica outage does not fail it.

    .. versionadded:: 0.1
    """
    return all(s.primary_up is not False for s in _state(app).sets.values())


def replica_set(engine: t.Any) -> ReplicaSet | None:
    """The :class:`ReplicaSet` whose primary is *engine*, if one was registered.

    .. versionadded:: 0.1
    """
    return find_set(engine)
