"""Primary/replica routing for SQLAlchemy 2.x sessions, and the replicas' health.

The session classes here choose, for each statement, the engine it runs on
(:meth:`sqlalchemy.orm.Session.get_bind`):

* a flush, an ``INSERT``/``UPDATE``/``DELETE``, a ``SELECT ... FOR UPDATE``/``FOR SHARE``, a
  textual statement that does not begin with ``SELECT``/``WITH``/``SHOW``/``VALUES``/``TABLE``/
  ``EXPLAIN`` (or that names ``nextval``, ``setval``, an advisory lock or ``INTO``), and a bare
  :meth:`~sqlalchemy.orm.Session.connection` go to the **primary**, and so does every later
  statement of the same transaction (it may read what it wrote);
* other reads go to a **replica** when the request's method is ``GET``, ``HEAD`` or
  ``OPTIONS``, or inside :func:`use_replica`; and to the primary otherwise (other methods, no
  request: the CLI, jobs), or inside :func:`use_primary`;
* a replica is chosen only if its last check (at most :attr:`ReplicaSet.interval` seconds
  old, run in a background thread of each process while requests come) found it up and no more
  than :attr:`ReplicaSet.max_lag` seconds behind, and if it has replayed the user's last
  commit (read-your-writes, :mod:`carboy.scale.database`); else the read goes to the primary;
* a read that fails on a replica (the replica went down, a recovery conflict cancelled it, the
  replica refused it as a write) runs again on the primary, once, and a replica that could not
  be reached is not used again until a check finds it up. So a replica outage costs reads their
  offload, never an error.

Statements the rules cannot see as writes (a ``SELECT`` calling a function that writes, a
data-modifying CTE inside a ``SELECT``) are sent to a replica, which refuses them
(``read_only_sql_transaction``); they then run again on the primary. Wrap such code in
:func:`use_primary` to skip that round trip.

.. versionadded:: 0.1
"""

from __future__ import annotations

import collections
import contextvars
import functools
import inspect
import itertools
import logging
import os
import random
import re
import threading
import time
import typing as t
import weakref

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

__all__ = [
    "PRIMARY",
    "REPLICA",
    "Replica",
    "ReplicaSet",
    "RoutingSession",
    "routing_session_class",
    "use_primary",
    "use_replica",
]

log = logging.getLogger("carboy.scale.database")

#: :func:`use_primary`'s and :func:`use_replica`'s targets.
PRIMARY = "primary"
REPLICA = "replica"
#: The request methods whose reads may go to a replica.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "carboy.database.route", default=None
)
_forced_get = _forced.get

#: The replica sets by the (sync) engine of their primary. Weak: an engine that goes away
#: takes its routing with it.
_sets: weakref.WeakKeyDictionary[sa.Engine, ReplicaSet] = weakref.WeakKeyDictionary()
#: Every replica's (sync) engine, to find a session's replica connections.
_replica_engines: weakref.WeakKeyDictionary[sa.Engine, Replica] = weakref.WeakKeyDictionary()


def parse_lsn(text: str) -> int:
    """A PostgreSQL ``pg_lsn`` (``"16/B374D848"``) as an int.

    :raises ValueError: *text* is not an LSN.

    .. versionadded:: 0.1
    """
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"not a pg_lsn: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    """The ``pg_lsn`` text of an int from :func:`parse_lsn`.

    .. versionadded:: 0.1
    """
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# -- the request's view: method and read-your-writes tokens ---------------------------------------


class RequestTokens:
    """What one request knows about its user's writes: per replica set name, the primary's
    WAL position (an int, ``lsn`` mode) or the time until which reads stay on the primary
    (seconds since the epoch, ``time`` mode) after the user's last commit. Kept on the request
    context; loaded from, and written back to, the read-your-writes cookie by
    :mod:`carboy.scale.database`.
    """

    __slots__ = ("changed", "had_cookie", "values")

    def __init__(self, values: dict[str, float], had_cookie: bool = False) -> None:
        #: Set name -> LSN (an int) or pin time.
        self.values = values
        #: Whether the cookie must be written back.
        self.changed = False
        #: Whether the request carried a valid token cookie (to delete when it is spent).
        self.had_cookie = had_cookie


def _request_ctx() -> t.Any:
    """The current request context, or ``None``."""
    from ..globals import _cv_request_get

    return _cv_request_get(None)


def request_tokens(ctx: t.Any) -> RequestTokens:
    """The :class:`RequestTokens` of request context *ctx*, loaded from its cookie on first
    use (by the app's ``carboy.database`` state; none without one)."""
    tokens: RequestTokens | None = getattr(ctx, "_carboy_db_tokens", None)
    if tokens is None:
        state = ctx.app.extensions.get("carboy.database")
        tokens = state.load_tokens(ctx.request) if state is not None else RequestTokens({})
        ctx._carboy_db_tokens = tokens
    return tokens


def _token_of(ctx: t.Any, name: str) -> float | None:
    return request_tokens(ctx).values.get(name)


def current_tokens() -> RequestTokens | None:
    """The current request's :class:`RequestTokens` if anything loaded them, else ``None``."""
    ctx = _request_ctx()
    return None if ctx is None else getattr(ctx, "_carboy_db_tokens", None)


# -- use_primary / use_replica --------------------------------------------------------------------


class _Route:
    """A context manager and decorator that sets the route of the statements inside it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._tokens: list[contextvars.Token[str | None]] = []

    def __enter__(self) -> _Route:
        self._tokens.append(_forced.set(self.target))
        return self

    def __exit__(self, *exc_info: object) -> None:
        _forced.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        target = self.target
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: t.Any, **kwargs: t.Any) -> t.Any:
                token = _forced.set(target)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _forced.reset(token)

            return t.cast(F, run_async)

        @functools.wraps(func)
        def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
            token = _forced.set(target)
            try:
                return func(*args, **kwargs)
            finally:
                _forced.reset(token)

        return t.cast(F, run)


@t.overload
def use_primary(func: F) -> F: ...
@t.overload
def use_primary(func: None = None) -> _Route: ...
def use_primary(func: F | None = None) -> F | _Route:
    """Send every statement inside to the primary: ``@use_primary`` on a view or function
    (sync or ``async def``), or ``with use_primary():`` around a block.

    Use it for reads that must see the latest data whatever the request (a balance before a
    payment), and for statements the routing rules cannot see as writes. Each ``with`` needs
    its own ``use_primary()`` object (one object is not shared between threads).

    :param func: the function to decorate; omitted, a context manager (also a decorator) is
        returned.

    .. versionadded:: 0.1
    """
    route = _Route(PRIMARY)
    return route if func is None else route(func)


@t.overload
def use_replica(func: F) -> F: ...
@t.overload
def use_replica(func: None = None) -> _Route: ...
def use_replica(func: F | None = None) -> F | _Route:
    """Let reads inside go to a replica whatever the request's method, and outside requests
    (a CLI command, a report job): ``@use_replica`` or ``with use_replica():``.

    Writes still go to the primary, and so do the reads of a transaction that wrote; a
    replica is still chosen only when it is up, within the lag bound, and past the user's
    read-your-writes token; otherwise the primary answers.

    :param func: the function to decorate; omitted, a context manager (also a decorator) is
        returned.

    .. versionadded:: 0.1
    """
    route = _Route(REPLICA)
    return route if func is None else route(func)


# -- statements: read or write --------------------------------------------------------------------

_READ_TEXT = re.compile(
    r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*\(*\s*(?:select|with|show|values|table|explain)\b",
    re.IGNORECASE | re.DOTALL,
)
_WRITE_TEXT = re.compile(
    r"\b(?:insert|update|delete|merge|into|nextval|setval|pg_advisory\w*|for\s+share"
    r"|for\s+key\s+share|for\s+no\s+key\s+update|lock|notify|listen|call)\b",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=512)
def _text_is_read(text: str) -> bool:
    return _READ_TEXT.match(text) is not None and _WRITE_TEXT.search(text) is None


def is_read(clause: t.Any) -> bool:
    """Whether *clause* (the statement a session is about to run, or ``None``) may run on a
    replica: a ``SELECT`` without ``FOR UPDATE``/``FOR SHARE`` and without a data-modifying
    CTE, or a textual read (see the module docs).

    .. versionadded:: 0.1
    """
    if clause is None:
        return False
    if isinstance(clause, sa.TextClause):
        return _text_is_read(clause.text)
    if getattr(clause, "is_select", False):
        if getattr(clause, "_for_update_arg", None) is not None:
            return False
        for cte in getattr(clause, "_independent_ctes", ()):
            if getattr(cte.element, "is_dml", False):
                return False
        element = getattr(clause, "element", None)  # text(...).columns(...)
        if isinstance(element, sa.TextClause):
            return _text_is_read(element.text)
        return True
    return False


# -- replicas and their checks --------------------------------------------------------------------


class Replica:
    """One replica of a :class:`ReplicaSet`, and what the last check found.

    .. versionadded:: 0.1
    """

    def __init__(self, replica_set: ReplicaSet, engine: t.Any, name: str) -> None:
        #: The set this replica belongs to.
        self.set = replica_set
        #: The engine sessions use (the sync engine of an
        #: :class:`~sqlalchemy.ext.asyncio.AsyncEngine`).
        self.engine: sa.Engine = getattr(engine, "sync_engine", engine)
        #: The engine as given (sync or async), for :meth:`ReplicaSet.engines`.
        self.given = engine
        #: A name for logs and health reports (``host:port/database``).
        self.name = name
        #: ``True`` or ``False`` after a check; ``None`` before the first.
        self.up: bool | None = None
        #: The WAL position the replica has replayed (``pg_last_wal_replay_lsn()``), as an int.
        self.replay_lsn = 0
        #: Seconds the replica is behind the primary: how long ago the primary was first seen
        #: at a position the replica has not replayed (0 when it has replayed all it was seen
        #: at).
        self.lag = 0.0
        #: :func:`time.monotonic` of the last finished check.
        self.checked_at = -1e9
        #: The last check's or statement's error, if the replica is down.
        self.error: str | None = None
        #: Reads that failed here and ran again on the primary, in this process.
        self.fallbacks = 0

    def usable(self, now: float) -> bool:
        """Whether reads may go here: up, checked recently, and within the lag bound."""
        rs = self.set
        return bool(self.up) and now - self.checked_at <= rs.stale_after and self.lag <= rs.max_lag

    def describe(self, now: float) -> dict[str, t.Any]:
        """The replica's state as JSON-ready data."""
        return {
            "name": self.name,
            "up": self.up,
            "usable": self.usable(now),
            "lag": round(self.lag, 3),
            "replay_lsn": format_lsn(self.replay_lsn) if self.replay_lsn else None,
            "checked": round(now - self.checked_at, 3) if self.checked_at > 0 else None,
            "fallbacks": self.fallbacks,
            "error": self.error,
        }


_PRIMARY_SQL = "SELECT pg_current_wal_lsn()::text"
_REPLICA_SQL = (
    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    " ELSE pg_current_wal_lsn() END::text"
)


class ReplicaSet:
    """A primary engine, its replicas, and the routing settings between them.

    Made by :meth:`carboy.scale.database.Database.register` (one per Flask-SQLAlchemy bind
    that has replicas); the sessions of :func:`routing_session_class` find it by the primary
    engine.

    :param name: the set's name (the Flask-SQLAlchemy bind key, ``"default"`` for the default
        bind); the read-your-writes cookie keys its token by it.
    :param primary: the primary's :class:`~sqlalchemy.Engine` or
        :class:`~sqlalchemy.ext.asyncio.AsyncEngine`.
    :param replicas: the replicas' engines, of the same kind.
    :param policy: ``"round_robin"``, ``"random"``, or a callable that picks one of a list of
        usable :class:`Replica`.
    :param max_lag: seconds a replica may be behind and still serve reads.
    :param interval: seconds between two checks of each server (per process).
    :param timeout: seconds a check may take to connect, and to run.
    :param read_your_writes: ``"lsn"``, ``"time"`` or ``None`` (see
        :mod:`carboy.scale.database`).
    :param pin: seconds a user's reads stay on the primary after a commit, in ``time`` mode.
    :raises ValueError: an unknown policy or mode.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        name: str,
        primary: t.Any,
        replicas: t.Sequence[t.Any] = (),
        *,
        policy: str | t.Callable[[list[Replica]], Replica] = "round_robin",
        max_lag: float = 5.0,
        interval: float = 0.5,
        timeout: float = 2.0,
        read_your_writes: str | None = "lsn",
        pin: float = 5.0,
    ) -> None:
        if not callable(policy) and policy not in ("round_robin", "random"):
            raise ValueError(f"Unknown replica policy {policy!r}: round_robin or random.")
        if read_your_writes not in ("lsn", "time", None):
            raise ValueError(f"Unknown read-your-writes mode {read_your_writes!r}.")
        self.name = name
        #: The primary as given (sync or async engine).
        self.given = primary
        #: The primary's sync engine: the key sessions find this set by.
        self.primary: sa.Engine = getattr(primary, "sync_engine", primary)
        self.replicas = [Replica(self, e, _server_name(e)) for e in replicas]
        self.policy = policy
        self.max_lag = float(max_lag)
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.read_your_writes = read_your_writes
        self.pin = float(pin)
        #: A check older than this is not trusted (its thread may be stuck on a frozen server).
        self.stale_after = max(2.0, 4 * self.interval + self.timeout)
        #: Checks stop after this many seconds without a request that routes through the set.
        self.keepalive = 60.0
        #: How long a read-your-writes token can matter: a replica past it is skipped anyway.
        self.token_max_age = self.max_lag + 2 * self.interval + 1
        #: ``True``/``False`` after a check of the primary; ``None`` before.
        self.primary_up: bool | None = None
        self.primary_error: str | None = None
        # (monotonic time, LSN) of the primary, each LSN once, oldest first.
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=4096)
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._pid = 0
        self._demanded = 0.0
        self._probes: list[_Probe] = []

    def engines(self) -> list[t.Any]:
        """The primary's and the replicas' engines, as given."""
        return [self.given, *(r.given for r in self.replicas)]

    # -- the request path ---------------------------------------------------------------------

    def demand(self, now: float) -> None:
        """Note that a request routes through this set: start the checks in this process, or
        wake them after an idle spell."""
        if self._pid != os.getpid():
            self._start(now)
        if now - self._demanded > 1.0:
            self._demanded = now
            for probe in self._probes:
                probe.wake()

    def accepts(self, replica: Replica, token: float | None, now: float) -> bool:
        """Whether *replica* may serve a read now for a user holding *token* (``None``: no
        recent write): usable, and past the token (``lsn`` mode) or after it (``time``)."""
        if not replica.usable(now):
            return False
        if token is None or self.read_your_writes is None:
            return True
        if self.read_your_writes == "time":
            return token <= time.time()
        return replica.replay_lsn >= token

    def pick(self, token: float | None, now: float) -> Replica | None:
        """A replica that :meth:`accepts` *token*, by the set's policy; ``None`` if none."""
        self.demand(now)
        usable = [r for r in self.replicas if self.accepts(r, token, now)]
        if not usable:
            return None
        if len(usable) == 1:
            return usable[0]
        if self.policy == "round_robin":
            return usable[next(self._counter) % len(usable)]
        if self.policy == "random":
            return random.choice(usable)
        return t.cast(t.Callable[[list[Replica]], Replica], self.policy)(usable)

    def caught_up(self, token: float, now: float) -> bool:
        """Whether a token no longer matters: every usable replica has replayed it (``lsn``),
        or its pin time has passed (``time``)."""
        if self.read_your_writes == "time":
            return token <= time.time()
        usable = [r for r in self.replicas if r.usable(now)]
        return bool(usable) and all(r.replay_lsn >= token for r in usable)

    def failed(self, replica: Replica, error: BaseException) -> None:
        """A read failed on *replica* and runs again on the primary: count it, and stop using
        the replica until a check finds it up if the connection was lost."""
        replica.fallbacks += 1
        orig = getattr(error, "orig", None)
        lost = isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)) and (
            getattr(error, "connection_invalidated", False)
            or getattr(orig, "sqlstate", None) in (None, "57P01", "57P02", "57P03", "08006")
        )
        if lost:
            replica.up = False
            replica.error = f"{type(orig or error).__name__}: {orig or error}"[:300]
        log.warning(
            "A read failed on replica %s and runs again on the primary: %s",
            replica.name,
            type(orig or error).__name__,
        )

    def health(self, now: float | None = None) -> dict[str, t.Any]:
        """This set's state: ``"ok"`` when every replica may serve reads, ``"degraded"`` when
        some cannot (reads then go to the others, or the primary), ``"down"`` when the last
        check of the primary failed."""
        now = time.monotonic() if now is None else now
        self.demand(now)
        replicas = [r.describe(now) for r in self.replicas]
        status = "ok"
        if any(not r["usable"] for r in replicas):
            status = "degraded"
        if self.primary_up is False:
            status = "down"
        return {
            "status": status,
            "primary": {
                "name": _server_name(self.given),
                "up": self.primary_up,
                "error": self.primary_error,
            },
            "replicas": replicas,
        }

    # -- the checks -----------------------------------------------------------------------------

    def _start(self, now: float) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._demanded = now
            for replica in self.replicas:  # a forked child knows nothing yet
                replica.up, replica.checked_at = None, -1e9
            self._samples.clear()
            self._probes = [_Probe(self, None)] + [_Probe(self, r) for r in self.replicas]
            for probe in self._probes:
                probe.start()

    def _primary_at(self, lsn: int, now: float) -> None:
        samples = self._samples
        if not samples or lsn > samples[-1][1]:
            samples.append((now, lsn))
        horizon = now - (self.max_lag + 4 * self.interval + self.timeout + 1)
        while len(samples) > 1 and samples[0][0] < horizon:
            samples.popleft()

    def _lag_of(self, replay: int, now: float) -> float:
        for at, lsn in tuple(self._samples):
            if lsn > replay:
                return max(0.0, now - at)
        return 0.0


class _Probe:
    """The thread that checks one server of a set every :attr:`ReplicaSet.interval` seconds
    while requests come, on a connection of its own (autocommit)."""

    def __init__(self, replica_set: ReplicaSet, replica: Replica | None) -> None:
        self.set = replica_set
        self.replica = replica
        self._wake = threading.Event()
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None

    def start(self) -> None:
        name = self.replica.name if self.replica else "primary"
        thread = threading.Thread(target=self._run, name=f"carboy-db-check {name}", daemon=True)
        thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        rs = self.set
        pid = os.getpid()
        while rs._pid == pid:
            if time.monotonic() - rs._demanded > rs.keepalive:
                self._close()
                self._wake.clear()
                self._wake.wait()
                continue
            self.check()
            self._wake.wait(rs.interval)
            self._wake.clear()

    def check(self) -> None:
        """One check; never raises."""
        rs, replica = self.set, self.replica
        try:
            conn = self._connection()
            text = conn.exec_driver_sql(_REPLICA_SQL if replica else _PRIMARY_SQL).scalar()
        except Exception as e:  # any failure means down: the reads go elsewhere
            self._close()
            error = f"{type(e).__name__}: {getattr(e, 'orig', None) or e}"[:300]
            if replica is None:
                rs.primary_up, rs.primary_error = False, error
            else:
                if replica.up is not False:
                    log.warning("Replica %s is down: %s", replica.name, error)
                replica.up, replica.error = False, error
                replica.checked_at = time.monotonic()
            return
        now = time.monotonic()
        lsn = parse_lsn(text) if text else 0
        if replica is None:
            rs.primary_up, rs.primary_error = True, None
            rs._primary_at(lsn, now)
            return
        replica.replay_lsn = max(lsn, replica.replay_lsn) if replica.up else lsn
        replica.lag = rs._lag_of(replica.replay_lsn, now)
        if replica.up is False:
            log.warning("Replica %s is up again.", replica.name)
        replica.up, replica.error, replica.checked_at = True, None, now

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            if self._engine is None:
                source = self.replica.given if self.replica else self.set.given
                self._engine = _check_engine(source, self.set.timeout)
            self._conn = self._engine.connect()
            millis = int(self.set.timeout * 1000)
            self._conn.exec_driver_sql(f"SET statement_timeout = {millis}")
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:
                pass


def _check_engine(source: t.Any, timeout: float) -> sa.Engine:
    """A sync engine without a pool to *source*'s server, for the checks (an async driver's URL
    is checked with psycopg)."""
    url = sa.make_url(getattr(source, "url", source))
    if url.drivername in ("postgresql+asyncpg", "postgresql+psycopg_async"):
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, t.Any] = {}
    if url.get_driver_name() in ("psycopg", "psycopg2"):
        connect_args["connect_timeout"] = max(2, int(timeout + 0.999))
    return sa.create_engine(
        url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT", connect_args=connect_args
    )


def _server_name(engine: t.Any) -> str:
    url = sa.make_url(getattr(engine, "url", engine))
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


# -- the session ----------------------------------------------------------------------------------

_WROTE = "carboy.wrote"  # session.info: primaries this transaction wrote to
_STICKY = "carboy.replica"  # session.info: primary -> the replica this transaction reads from
_CONNS = "carboy.primary_connections"  # session.info: primary -> its connection
_READS = "carboy.replica_connections"  # session.info: replica engines this transaction used


class RoutingMixin:
    """The routing :meth:`get_bind` and the fall-back of failed replica reads, mixed into a
    :class:`~sqlalchemy.orm.Session` subclass by :func:`routing_session_class`.

    .. versionadded:: 0.1
    """

    #: The replica the last statement was routed to (``None``: the primary).
    _carboy_last: Replica | None = None

    if t.TYPE_CHECKING:
        info: dict[t.Any, t.Any]
        _flushing: bool

    def get_bind(  # type: ignore[no-untyped-def]
        self, mapper=None, clause=None, bind=None, **kw
    ):
        """The engine for *clause*: the primary's (found by the base class: the session's bind,
        or Flask-SQLAlchemy's bind key) or one of its replicas (see the module docs)."""
        self._carboy_last = None
        if bind is not None:
            return bind
        primary = super().get_bind(mapper, clause=clause, **kw)  # type: ignore[misc]
        replicas = _sets.get(primary)
        if replicas is None:
            return primary
        forced = _forced_get()
        if forced == PRIMARY:
            return primary
        info = self.info
        if self._flushing or not is_read(clause):
            wrote = info.get(_WROTE)
            if wrote is None:
                wrote = info[_WROTE] = set()
            wrote.add(primary)
            return primary
        wrote = info.get(_WROTE)
        if wrote and primary in wrote:
            return primary
        ctx = _request_ctx()
        if forced != REPLICA and (ctx is None or ctx.request.method not in READ_METHODS):
            return primary
        token = _token_of(ctx, replicas.name) if ctx is not None else None
        now = time.monotonic()
        sticky = info.get(_STICKY)
        replica = sticky.get(primary) if sticky else None
        if replica is None or not replicas.accepts(replica, token, now):
            replica = replicas.pick(token, now)
            if replica is None:
                return primary
            if sticky is None:
                sticky = info[_STICKY] = {}
            sticky[primary] = replica
        self._carboy_last = replica
        return replica.engine

    def _carboy_fallback(self, error: BaseException) -> sa.Engine | None:
        """After *error* on a statement: the primary to run it on again if it ran on a
        replica (the replica's connection is then taken out of the transaction), else
        ``None``."""
        replica, self._carboy_last = self._carboy_last, None
        if replica is None or not isinstance(error, sa_exc.DBAPIError):
            return None
        replica.set.failed(replica, error)
        if getattr(getattr(error, "orig", None), "sqlstate", None) == "25006":
            # The replica refused a write: the rest of this transaction is the primary's.
            self.info.setdefault(_WROTE, set()).add(replica.set.primary)
        sticky = self.info.get(_STICKY)
        if sticky:
            sticky.pop(replica.set.primary, None)
        _detach(t.cast(Session, self), replica.engine)
        return replica.set.primary

    def close(self) -> None:
        """:meth:`sqlalchemy.orm.Session.close`, which first lets go of the replicas'
        connections without raising: a replica that went away after the last read must not
        fail the request's teardown (nor leave the primary's connection unreturned)."""
        _release_replicas(t.cast(Session, self))
        super().close()  # type: ignore[misc]

    def rollback(self) -> None:
        """:meth:`sqlalchemy.orm.Session.rollback`, after :meth:`close`'s release of the
        replicas' connections."""
        _release_replicas(t.cast(Session, self))
        super().rollback()  # type: ignore[misc]

    def execute(self, statement: t.Any, *args: t.Any, **kw: t.Any) -> t.Any:
        """:meth:`sqlalchemy.orm.Session.execute`, run again on the primary if it failed on a
        replica."""
        try:
            return super().execute(statement, *args, **kw)  # type: ignore[misc]
        except sa_exc.DBAPIError as e:
            primary = self._carboy_fallback(e)
            if primary is None:
                raise
            kw["bind_arguments"] = {**(kw.get("bind_arguments") or {}), "bind": primary}
            return super().execute(statement, *args, **kw)  # type: ignore[misc]

    def scalars(self, statement: t.Any, *args: t.Any, **kw: t.Any) -> t.Any:
        """:meth:`sqlalchemy.orm.Session.scalars`, with :meth:`execute`'s fall-back."""
        try:
            return super().scalars(statement, *args, **kw)  # type: ignore[misc]
        except sa_exc.DBAPIError as e:
            primary = self._carboy_fallback(e)
            if primary is None:
                raise
            kw["bind_arguments"] = {**(kw.get("bind_arguments") or {}), "bind": primary}
            return super().scalars(statement, *args, **kw)  # type: ignore[misc]

    def scalar(self, statement: t.Any, *args: t.Any, **kw: t.Any) -> t.Any:
        """:meth:`sqlalchemy.orm.Session.scalar`, with :meth:`execute`'s fall-back."""
        try:
            return super().scalar(statement, *args, **kw)  # type: ignore[misc]
        except sa_exc.DBAPIError as e:
            primary = self._carboy_fallback(e)
            if primary is None:
                raise
            kw["bind_arguments"] = {**(kw.get("bind_arguments") or {}), "bind": primary}
            return super().scalar(statement, *args, **kw)  # type: ignore[misc]


def _detach(session: Session, engine: sa.Engine) -> None:
    """Take *engine*'s connection out of *session*'s transaction, rolled back and closed, so
    that the transaction can still commit after a read on it failed."""
    trans = getattr(session, "_transaction", None)
    while trans is not None:
        connections = getattr(trans, "_connections", None)
        entry = connections.pop(engine, None) if connections is not None else None
        if entry is not None:
            connections.pop(entry[0], None)  # type: ignore[union-attr]
            if trans.parent is None:
                conn, transaction, _should_commit, autoclose = entry
                try:
                    transaction.rollback()
                except Exception:  # the replica is gone: drop the connection, not the request
                    try:
                        conn.invalidate()
                    except Exception:
                        pass
                if autoclose:
                    try:
                        conn.close()
                    except Exception:
                        pass
        trans = trans.parent


def _release_replicas(session: Session) -> None:
    """Take every replica connection out of *session*'s transaction (they only read: there is
    nothing to commit there), swallowing a replica's errors."""
    engines = session.info.pop(_READS, None)
    if engines:
        for engine in engines:
            _detach(session, engine)


def _after_begin(session: Session, transaction: t.Any, connection: sa.Connection) -> None:
    engine = connection.engine
    if engine in _sets:
        session.info.setdefault(_CONNS, {})[engine] = connection
    elif engine in _replica_engines:
        session.info.setdefault(_READS, set()).add(engine)


def _before_commit(session: Session) -> None:
    # A replica that went away must not fail the commit of the primary (and the connections
    # commit in no set order).
    _release_replicas(session)


def _after_commit(session: Session) -> None:
    wrote: set[sa.Engine] | None = session.info.pop(_WROTE, None)
    if not wrote:
        return
    connections = session.info.get(_CONNS) or {}
    for engine in wrote:
        replica_set = _sets.get(engine)
        if replica_set is None or replica_set.read_your_writes is None:
            continue
        ctx = _request_ctx()
        if ctx is None:
            continue  # no request: no user to carry a token
        tokens = request_tokens(ctx)
        if replica_set.read_your_writes == "time":
            value: float = time.time() + replica_set.pin
        else:
            conn = connections.get(engine)
            try:
                # PERF: one round trip on the connection that committed (and the rollback its
                # pool sends on return): the commit record's end is only known after it.
                if conn is None:
                    raise RuntimeError("no connection")
                value = parse_lsn(conn.exec_driver_sql(_PRIMARY_SQL).scalar_one())
            except Exception as e:
                log.warning("Could not read the primary's WAL position after a commit: %r", e)
                value = 2**64  # reads stay on the primary until the token expires
        old = tokens.values.get(replica_set.name)
        if old is None or value > old:
            tokens.values[replica_set.name] = value
            tokens.changed = True


def _after_transaction_end(session: Session, transaction: t.Any) -> None:
    if transaction.parent is None:
        info = session.info
        info.pop(_WROTE, None)
        info.pop(_STICKY, None)
        info.pop(_CONNS, None)
        info.pop(_READS, None)


def routing_session_class(base: type[Session]) -> type[Session]:
    """A subclass of *base* (a :class:`~sqlalchemy.orm.Session` subclass, such as
    Flask-SQLAlchemy's) that routes its statements (``RoutingMixin``) and keeps the
    read-your-writes token up to date.

    :raises TypeError: *base* is not a Session subclass.

    .. versionadded:: 0.1
    """
    if not (isinstance(base, type) and issubclass(base, Session)):
        raise TypeError(f"expected a Session subclass, got {base!r}")
    if issubclass(base, RoutingMixin):
        return base
    cls = type(base.__name__, (RoutingMixin, base), {"__module__": base.__module__})
    event.listen(cls, "after_begin", _after_begin)
    event.listen(cls, "before_commit", _before_commit)
    event.listen(cls, "after_commit", _after_commit)
    event.listen(cls, "after_transaction_end", _after_transaction_end)
    return t.cast(type[Session], cls)


#: A plain SQLAlchemy session that routes: ``sessionmaker(engine, class_=RoutingSession)``, or
#: ``AsyncSession(engine, sync_session_class=RoutingSession)`` for asyncio.
#:
#: .. versionadded:: 0.1
RoutingSession: type[Session] = routing_session_class(Session)


def register_set(replica_set: ReplicaSet) -> None:
    """Route the sessions bound to *replica_set*'s primary through it."""
    _sets[replica_set.primary] = replica_set
    for replica in replica_set.replicas:
        _replica_engines[replica.engine] = replica


def find_set(engine: t.Any) -> ReplicaSet | None:
    """The :class:`ReplicaSet` whose primary is *engine* (sync or async), if any."""
    return _sets.get(getattr(engine, "sync_engine", engine))
