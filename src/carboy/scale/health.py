"""Health endpoints and graceful drain for load balancers and orchestrators.

::

    from carboy.scale.health import Health

    health = Health(app)          # /livez, /readyz, /drainz

    @health.check
    def database() -> None:       # raise (or return False) to fail; sync or async
        db.session.execute(text("SELECT 1"))

* ``GET /livez`` answers 200 while the process can answer at all (plus the checks registered
  with ``live=True``, if any). A liveness probe that fails restarts the process, so keep
  dependencies out of it.
* ``GET /readyz`` answers 200 when every readiness check passes, else 503 with a JSON body
  that names the failing checks. Built in: ``redis``, a ``PING`` through the app's
  :class:`~carboy.scale.connection.RedisConnection` (made from ``REDIS_URL`` if no module
  made it yet), when there is one. Results are cached per worker for ``HEALTH_CHECK_TTL``
  seconds and one refresh runs at a time, so a busy ``/readyz`` costs at most one ``PING`` a
  second per worker. A check that raises, returns ``False`` or passes ``HEALTH_CHECK_TIMEOUT``
  fails; ``/readyz`` never answers 500 for it.
* ``POST /drainz``, from a loopback address only (403 otherwise, and for a request that
  carries a forwarding header, since a proxy on the same host would make every client look
  local), begins the drain on every worker of this server: see :mod:`carboy.scale.drain`.
* On SIGTERM (gunicorn workers, uvicorn, granian's ASGI workers; see
  ``docs/scale/deploying.md`` for each server), ``/readyz`` answers 503 at once, the worker
  serves on for ``HEALTH_DRAIN_SECONDS``, then closes its WebSockets with 1012 and ends the
  streams wrapped by :meth:`Health.stream`, then lets the server stop, and exits at most
  ``HEALTH_STOP_SECONDS`` later.

Config keys (``app.config``), with their defaults:

=============================  ============  ================================================
``HEALTH_LIVE_PATH``           ``/livez``    the liveness URL (``None``: no route)
``HEALTH_READY_PATH``          ``/readyz``   the readiness URL (``None``: no route)
``HEALTH_DRAIN_PATH``          ``/drainz``   the loopback drain URL (``None``: no route)
``HEALTH_CHECK_TTL``           ``1.0``       seconds a check's result is reused in a worker
``HEALTH_CHECK_TIMEOUT``       ``1.0``       seconds a check may take before it fails
``HEALTH_DRAIN_SECONDS``       ``5.0``       seconds served after the drain begins
``HEALTH_STOP_SECONDS``        ``10.0``      seconds the server gets to stop after that
``HEALTH_DRAIN_ON_SIGTERM``    ``True``      chain the server's SIGTERM handler (see above)
``HEALTH_DRAIN_FILE``          ``None``      the drain marker shared by the server's workers
                                             (default: :func:`carboy.scale.drain.marker_path`)
``HEALTH_ERROR_DETAILS``       ``False``     show a failing check's error message, not only
                                             its type (a :class:`HealthError`'s always shows)
``HEALTHZ``                    ``{}``        Flask-Healthz's mapping: ``"live"`` and
                                             ``"ready"`` to a check or its dotted name
=============================  ============  ================================================

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import ipaddress
import os
import threading
import time
import typing as t
from dataclasses import dataclass, field
from functools import partial

from werkzeug.utils import import_string

from ..globals import current_app, request
from . import drain

if t.TYPE_CHECKING:
    from ..app import Carboy

__all__ = ["EXTENSION_KEY", "Health", "HealthError"]

#: The key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "carboy.health"

_DEFAULTS: dict[str, t.Any] = {
    "HEALTH_LIVE_PATH": "/livez",
    "HEALTH_READY_PATH": "/readyz",
    "HEALTH_DRAIN_PATH": "/drainz",
    "HEALTH_CHECK_TTL": 1.0,
    "HEALTH_CHECK_TIMEOUT": 1.0,
    "HEALTH_DRAIN_SECONDS": 5.0,
    "HEALTH_STOP_SECONDS": 10.0,
    "HEALTH_DRAIN_ON_SIGTERM": True,
    "HEALTH_DRAIN_FILE": None,
    "HEALTH_ERROR_DETAILS": False,
    "HEALTHZ": {},
}
#: Request headers that mean a proxy forwarded the request (so its peer address is the
#: proxy's, not the client's); the drain endpoint refuses such requests.
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
_NO_STORE = {"Cache-Control": "no-store"}

CheckFunc = t.Callable[[], t.Any]
F = t.TypeVar("F", bound=CheckFunc)


class HealthError(Exception):
    """Raise in a check to fail it with this message (shown in ``/readyz``'s answer).

    Flask-Healthz-compatible: ``flask_healthz.HealthError``.

    .. versionadded:: 0.1
    """


@dataclass
class _Check:
    name: str
    func: CheckFunc
    timeout: float | None
    live: bool
    is_async: bool


@dataclass
class _AppState:
    """What one app's health keeps in one process."""

    app: Carboy
    ttl: float
    timeout: float
    details: bool
    redis: bool | None
    cache: dict[bool, tuple[float, dict[str, t.Any]]] = field(default_factory=dict)
    pending: dict[bool, concurrent.futures.Future[dict[str, t.Any]]] = field(default_factory=dict)
    running: dict[str, concurrent.futures.Future[t.Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    pid: int = field(default_factory=os.getpid)

    def forked(self) -> None:
        """Forget what a parent process had in progress (``gunicorn --preload``)."""
        if self.pid != os.getpid():
            with self.lock:
                self.pending, self.running, self.pid = {}, {}, os.getpid()

    def checks_redis(self) -> bool:
        """Whether the built-in Redis check runs (decided on each refresh: a
        :class:`~carboy.scale.connection.RedisConnection` may be made after ``Health``)."""
        if self.redis is not None:
            return self.redis
        return bool(self.app.config.get("REDIS_URL")) or "carboy.redis" in self.app.extensions


class Health:
    """Liveness, readiness and drain for an app (Flask extension pattern).

    :param app: the app to register with now, or ``None`` to call :meth:`init_app` later.
    :param redis: whether ``/readyz`` checks Redis (bool): ``None`` (default) when the app
        has a :class:`~carboy.scale.connection.RedisConnection` or sets ``REDIS_URL``,
        ``False`` never, ``True`` always.

    Checks registered on this object apply to every app it is registered with; the config and
    the cached results are per app (``app.extensions["carboy.health"]``).

    .. versionadded:: 0.1
    """

    def __init__(self, app: Carboy | None = None, *, redis: bool | None = None) -> None:
        self._checks: dict[str, _Check] = {}
        self._redis = redis
        if app is not None:
            self.init_app(app)

    # -- registration ---------------------------------------------------------------------------

    def init_app(self, app: Carboy) -> None:
        """Read the app's ``HEALTH_*`` config, add the routes and the drain's hooks.

        :raises ValueError: a negative drain or stop period, a TTL or timeout that is not
            positive.
        :raises ImportError: a ``HEALTHZ`` dotted name that does not import.
        """
        config = app.config
        for key, value in _DEFAULTS.items():
            config.setdefault(key, value)
        ttl = float(config["HEALTH_CHECK_TTL"])
        timeout = float(config["HEALTH_CHECK_TIMEOUT"])
        if ttl < 0 or timeout <= 0:
            raise ValueError("HEALTH_CHECK_TTL must be >= 0 and HEALTH_CHECK_TIMEOUT > 0.")
        app.extensions[EXTENSION_KEY] = _AppState(
            app=app, ttl=ttl, timeout=timeout, details=bool(config["HEALTH_ERROR_DETAILS"]),
            redis=self._redis,
        )  # fmt: skip
        for kind, target in dict(config["HEALTHZ"] or {}).items():
            if kind not in ("live", "ready"):
                raise ValueError(f"HEALTHZ keys are 'live' and 'ready', not {kind!r}.")
            func = import_string(target) if isinstance(target, str) else target
            self.add_check(kind, func, live=kind == "live")

        marker = config["HEALTH_DRAIN_FILE"]
        if marker is None and config["HEALTH_DRAIN_PATH"]:
            try:
                marker = drain.marker_path(app.import_name)
            except OSError as e:
                app.logger.warning("carboy: no drain marker (%s); /drainz drains one worker", e)
        stop = config["HEALTH_STOP_SECONDS"]
        state = drain.state()
        state.configure(
            float(config["HEALTH_DRAIN_SECONDS"]),
            None if stop is None else float(stop),
            marker,
        )

        if config["HEALTH_LIVE_PATH"]:
            app.add_url_rule(
                config["HEALTH_LIVE_PATH"], "health_live", self._live_view, methods=["GET"]
            )
        if config["HEALTH_READY_PATH"]:
            app.add_url_rule(
                config["HEALTH_READY_PATH"], "health_ready", self._ready_view, methods=["GET"]
            )
        if config["HEALTH_DRAIN_PATH"]:
            app.add_url_rule(
                config["HEALTH_DRAIN_PATH"], "health_drain", self._drain_view, methods=["POST"]
            )
        app.before_websocket(self._track_websocket)
        app.before_serving(self._serving)
        app.after_serving(self._stopped)
        if config["HEALTH_DRAIN_ON_SIGTERM"]:
            # Made while the server imports the app: gunicorn's workers (without --preload)
            # and uvicorn have their SIGTERM handler in place by then.
            state.install_signal_chain()

    def check(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        timeout: float | None = None,
        live: bool = False,
    ) -> t.Any:
        """Register a check; usable as ``@health.check`` or ``@health.check(name=...)``.

        A check is a function without arguments, sync (run on a daemon thread, inside an
        app context) or ``async def`` (awaited on the request's event loop). It passes unless
        it raises or returns ``False``.

        :param func: the check, a callable without arguments (sync or ``async def``).
        :param name: its name (str) in ``/readyz``'s answer (default: the function's name).
        :param timeout: seconds (float) it may take (default: ``HEALTH_CHECK_TIMEOUT``).
        :param live: (bool) a liveness check (``/livez``) instead of a readiness one.
        :returns: *func* unchanged, or a decorator.
        """

        def register(f: F) -> F:
            label = name or str(getattr(f, "__name__", None) or repr(f))
            self.add_check(label, f, timeout=timeout, live=live)
            return f

        return register(func) if func is not None else register

    def add_check(
        self, name: str, func: CheckFunc, *, timeout: float | None = None, live: bool = False
    ) -> None:
        """Register *func* as check *name* (see :meth:`check`); replaces one of that name.

        :raises TypeError: *func* is not callable.
        :raises ValueError: *timeout* is not positive.
        """
        if not callable(func):
            raise TypeError(f"A health check must be callable, not {func!r}.")
        if timeout is not None and timeout <= 0:
            raise ValueError("A check's timeout must be positive.")
        is_async = inspect.iscoroutinefunction(func)
        self._checks[name] = _Check(name, func, timeout, live, is_async)

    # -- drain ----------------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """Whether this worker is draining (``/readyz`` answers 503)."""
        return drain.state().draining

    @property
    def closing(self) -> bool:
        """Whether the drain period is over: long streams and WebSocket loops should end."""
        return drain.state().closing

    def drain(self, reason: str = "manual", *, all_workers: bool = False) -> bool:
        """Begin the drain now, as SIGTERM would but without stopping the server.

        :param reason: shown in the log and in ``/readyz``'s answer.
        :param all_workers: also write the drain marker, so the server's other workers drain.
        :returns: whether this call began it (``False``: it had begun).
        """
        return drain.state().begin(reason, mark=all_workers)

    def wait_closing(self, timeout: float | None) -> bool:
        """Sleep up to *timeout* seconds, waking when the drain period ends: use it instead of
        :func:`time.sleep` in a sync stream or polling loop.

        :returns: whether the drain period is over (so stop).
        """
        return drain.state().wait_closing(timeout)

    async def wait_closing_async(self, timeout: float | None) -> bool:
        """:meth:`wait_closing` for ``async def`` code (instead of :func:`asyncio.sleep`).

        :raises RuntimeError: no event loop is running.
        """
        event = drain.state().closing_event()
        if event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return event.is_set()

    @t.overload
    def stream(self, source: t.AsyncIterable[t.Any]) -> t.AsyncIterator[t.Any]: ...

    @t.overload
    def stream(self, source: t.Iterable[t.Any]) -> t.Iterator[t.Any]: ...

    def stream(self, source: t.Any) -> t.Any:
        """Wrap a streamed body (a sync or async iterable) so it ends cleanly when the drain
        period ends: the response finishes as a complete one, so an ``EventSource`` client
        reconnects, through the load balancer, to another host.

        An async source is stopped even while it waits for its next item; a sync one is
        checked between items, so a sync generator should wait with :meth:`wait_closing`.
        The source is closed either way (its ``finally`` blocks run).

        :param source: the body, e.g. a generator of SSE events.
        :returns: an iterator of the same kind.
        """
        if hasattr(source, "__aiter__"):
            return _stream_async(source)
        return _stream_sync(source)

    # -- running the checks ---------------------------------------------------------------------

    def _state(self, app: Carboy) -> _AppState:
        return t.cast(_AppState, app.extensions[EXTENSION_KEY])

    async def report(self, app: Carboy | None = None, *, live: bool = False) -> dict[str, t.Any]:
        """The result of the readiness (or liveness) checks, cached per worker for
        ``HEALTH_CHECK_TTL`` seconds; one refresh runs at a time and others wait for it (or
        take the previous result while it runs).

        :param app: the app (default: the current app).
        :param live: the liveness checks instead of the readiness ones.
        :returns: ``{"ok": bool, "checks": {name: {"ok": bool, "ms": float, "error"?: str}},
            "failing": [names], "age": seconds}``.
        """
        st = self._state(app if app is not None else current_app._get_current_object())  # type: ignore[attr-defined]
        st.forked()
        now = time.monotonic()
        cached = st.cache.get(live)
        if cached is not None and cached[0] > now:
            return _aged(cached, st.ttl, now)
        with st.lock:
            cached = st.cache.get(live)
            if cached is not None and cached[0] > now:
                return _aged(cached, st.ttl, now)
            pending = st.pending.get(live)
            mine = pending is None
            if pending is None:
                pending = st.pending[live] = concurrent.futures.Future()
        if not mine:
            if cached is not None:  # a refresh is running: the previous result meanwhile
                return _aged(cached, st.ttl, now)
            with contextlib.suppress(Exception):
                # Shielded: a waiter cancelled (its client gone) must not cancel the refresh.
                return await asyncio.shield(asyncio.wrap_future(pending))
            return await self._run_checks(st, live)  # the refresh failed: our own
        try:
            result = await self._run_checks(st, live)
        except BaseException as e:
            with st.lock:
                st.pending.pop(live, None)
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled
                pending.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
            raise
        with st.lock:
            st.cache[live] = (time.monotonic() + st.ttl, result)
            st.pending.pop(live, None)
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            pending.set_result(result)
        return result

    async def _run_checks(self, st: _AppState, live: bool) -> dict[str, t.Any]:
        checks = [c for c in self._checks.values() if c.live == live]
        if not live and "redis" not in self._checks and st.checks_redis():
            checks.insert(0, _Check("redis", partial(_ping_redis, st.app), None, False, False))
        results = await asyncio.gather(*(self._run_one(st, c) for c in checks))
        named = dict(zip((c.name for c in checks), results, strict=True))
        failing = [name for name, r in named.items() if not r["ok"]]
        return {"ok": not failing, "checks": named, "failing": failing, "age": 0.0}

    async def _run_one(self, st: _AppState, check: _Check) -> dict[str, t.Any]:
        timeout = check.timeout or st.timeout
        start = time.perf_counter()
        error: str | None = None
        try:
            if check.is_async:
                rv = await asyncio.wait_for(check.func(), timeout)
            else:
                running = st.running.get(check.name)
                if running is not None and not running.done():
                    raise _StillRunning()
                future = _in_thread(st.app, check.func)
                st.running[check.name] = future
                rv = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
            if rv is False:
                error = "returned False"
        except TimeoutError:
            error = f"timed out after {timeout:g} s"
        except _StillRunning:
            error = "still running since an earlier timeout"
        except HealthError as e:
            error = str(e) or "HealthError"
        except Exception as e:
            error = type(e).__name__
            if st.details and str(e):
                error += f": {e}"
        result: dict[str, t.Any] = {
            "ok": error is None,
            "ms": round((time.perf_counter() - start) * 1000, 3),
        }
        if error is not None:
            result["error"] = error[:300]
        return result

    # -- the views ------------------------------------------------------------------------------

    async def _live_view(self) -> t.Any:
        drain.state().watch()
        if not any(c.live for c in self._checks.values()):
            return {"status": "alive"}, 200, _NO_STORE
        result = await self.report(live=True)
        status = "alive" if result["ok"] else "failing"
        return {"status": status, **result}, 200 if result["ok"] else 503, _NO_STORE

    async def _ready_view(self) -> t.Any:
        state = drain.state()
        state.watch()
        if state.draining:
            return {"status": "draining", "drain": state.describe()}, 503, _NO_STORE
        result = await self.report()
        status = "ready" if result["ok"] else "unready"
        return {"status": status, **result}, 200 if result["ok"] else 503, _NO_STORE

    def _drain_view(self) -> t.Any:
        reason = _refusal(request.environ)
        if reason is not None:
            return {"error": reason}, 403, _NO_STORE
        state = drain.state()
        began = state.begin("endpoint", mark=True)
        return {"began": began, **state.describe()}, 202, _NO_STORE

    async def _track_websocket(self) -> t.Any:
        from ..websocket import websocket

        state = drain.state()
        if state.closing:
            return "This server is restarting.", 503, {"Retry-After": "1"}
        state.track(websocket._get_current_object())  # type: ignore[attr-defined]
        return None

    async def _serving(self) -> None:
        # On the ASGI server's loop (the main thread): granian's handler is on the loop.
        state = drain.state()
        state.watch()
        if current_app.config["HEALTH_DRAIN_ON_SIGTERM"]:
            state.install_signal_chain()

    def _stopped(self) -> None:
        drain.state().close()


class _StillRunning(Exception):
    pass


def _aged(cached: tuple[float, dict[str, t.Any]], ttl: float, now: float) -> dict[str, t.Any]:
    expires, result = cached
    return {**result, "age": round(max(0.0, now - (expires - ttl)), 3)}


def _in_thread(app: Carboy, func: CheckFunc) -> concurrent.futures.Future[t.Any]:
    """Run sync check *func* in an app context on a new daemon thread (at most one a second
    per check; a hung check never holds the process's exit, as a pool's thread would)."""
    future: concurrent.futures.Future[t.Any] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            with app.app_context():
                result = func()
        except BaseException as e:
            future.set_exception(e)
        else:
            future.set_result(result)

    threading.Thread(target=run, name="carboy-health-check", daemon=True).start()
    return future


def _ping_redis(app: Carboy) -> None:
    from .connection import EXTENSION_KEY as REDIS_KEY
    from .connection import RedisConnection

    layer = app.extensions.get(REDIS_KEY)
    if layer is None:
        layer = RedisConnection(app)
    t.cast(RedisConnection, layer).sync.ping()


def _refusal(environ: t.Mapping[str, t.Any]) -> str | None:
    """Why the drain endpoint refuses this request, or ``None`` (a loopback peer)."""
    if any(key in environ for key in FORWARDING_HEADERS):
        return "refused: the request was forwarded by a proxy"
    original = environ.get("werkzeug.proxy_fix.orig") or {}
    peer = original.get("REMOTE_ADDR") or environ.get("REMOTE_ADDR") or ""
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return "refused: only a loopback address may drain this server"
    mapped = getattr(address, "ipv4_mapped", None)
    if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
        return "refused: only a loopback address may drain this server"
    return None


def _stream_sync(source: t.Iterable[t.Any]) -> t.Iterator[t.Any]:
    state = drain.state()
    state.watch()
    iterator = iter(source)
    try:
        while not state.closing:
            try:
                item = next(iterator)
            except StopIteration:
                return
            if state.closing:
                return
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


async def _stream_async(source: t.AsyncIterable[t.Any]) -> t.AsyncIterator[t.Any]:
    event = drain.state().closing_event()
    iterator = source.__aiter__()
    waiter: asyncio.Future[t.Any] = asyncio.ensure_future(event.wait())
    try:
        while not event.is_set():
            step: asyncio.Future[t.Any] = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait({step, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                await asyncio.wait({step})  # the source sees the cancellation and ends
                if not step.cancelled():
                    step.exception()  # retrieved: not logged as never retrieved
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        waiter.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):  # already running or closed
                await aclose()
