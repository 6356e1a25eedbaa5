"""The app every rig host serves: one module, the same on each host, built from the environment.

Targets, ``benchmarks.rig.app:<name>`` (each built on first access, in each worker):

* ``carboy_hello``, ``flask_hello``: ``GET /`` answers ``Hello, World!``; nothing else runs.
* ``carboy_shared``, ``flask_shared``: issue 19's shared-state request, ``GET /shared`` (loads
  the session, checks a rate limit never tripped, includes a cached fragment; the apps of
  :mod:`benchmarks.shared_state`, carboy's ``carboy.scale`` modules and Flask with
  Flask-Session, Flask-Limiter and Flask-Caching), on the Redis named by ``SHARED_STATE_REDIS``
  under the key prefix ``SHARED_STATE_PREFIX``, plus the routes the rig's checks use:

  =========================  ====================================================================
  ``GET /``                  ``Hello, World!``
  ``POST /rig/note``         stores the form field ``note`` in the session
  ``GET /rig/note``          the session's note (empty when none)
  ``GET /rig/limited``       ``ok``, limited to ``RIG_LIMIT`` (default ``5/minute``) per client
  ``GET /rig/cached``        a value cached for an hour; each computation adds 1 to a Redis counter
  ``GET /rig/computed``      that counter: how many times, on all hosts, the value was computed
  =========================  ====================================================================

* ``carboy_realtime`` (ASGI servers only): issue 21's broadcast (:mod:`carboy.scale.broadcast`,
  Redis Streams on ``SHARED_STATE_REDIS``, keys under ``SHARED_STATE_PREFIX``), for the fan-out
  scenario (:mod:`benchmarks.rig.fanout`):

  ===============================  ==============================================================
  ``POST /rig/publish/<channel>``  publishes the body (an ``async def`` view); answers its id
  ``WS /rig/fanout/<channel>``     the WebSocket helper; its first frame, sent once subscribed,
                                   is ``hello <RIG_HOST>/<pid>``; then every message's data
  ===============================  ==============================================================

Every app answers ``GET /livez`` and ``GET /readyz`` (200, ``ok``): HAProxy checks ``/readyz``.
With ``RIG_HEALTH=module:callable`` (for instance the Health extension of issue 20, once it
lands) that callable is called with the carboy app instead, and provides those routes itself.

With ``RIG_WORKER_HEADER=wsgi`` (or ``asgi``, for ASGI servers) every answer carries
``X-Rig-Worker: <RIG_HOST>/<pid>``, counted by the worker-balance measurement; without it no
middleware is in the way.
"""

from __future__ import annotations

import importlib
import os
import typing as t

HELLO = "Hello, World!"
ENV_HOST = "RIG_HOST"
ENV_HEALTH = "RIG_HEALTH"
ENV_WORKER_HEADER = "RIG_WORKER_HEADER"
ENV_LIMIT = "RIG_LIMIT"
WORKER_HEADER = "X-Rig-Worker"


def worker_tag() -> str:
    return f"{os.environ.get(ENV_HOST, 'host')}/{os.getpid()}"


def _health(app: t.Any) -> None:
    spec = os.environ.get(ENV_HEALTH, "")
    if spec and spec != "rig":
        module, _, name = spec.partition(":")
        getattr(importlib.import_module(module), name or "Health")(app)
        return

    @app.get("/livez")
    def livez() -> str:
        return "ok"

    @app.get("/readyz")
    def readyz() -> str:
        return "ok"


ENV_DRAIN = "RIG_DRAIN_SECONDS"
ENV_STOP = "RIG_STOP_SECONDS"
SLOW_SECONDS = 2.0


def rolling_health(app: t.Any) -> None:
    """``RIG_HEALTH=benchmarks.rig.app:rolling_health``: carboy's ``Health`` with the drain and
    stop periods of ``RIG_DRAIN_SECONDS`` and ``RIG_STOP_SECONDS``, plus ``GET /rig/slow``,
    which answers ``slow`` after :data:`SLOW_SECONDS` (the rolling-restart proof's in-flight
    requests), and the WebSocket ``/rig/ws`` (ASGI servers: says ``hello``, then echoes until
    closed)."""
    import time

    from carboy.scale.health import Health

    app.config["HEALTH_DRAIN_SECONDS"] = float(os.environ.get(ENV_DRAIN, "5"))
    app.config["HEALTH_STOP_SECONDS"] = float(os.environ.get(ENV_STOP, "10"))

    @app.get("/rig/slow")
    def rig_slow() -> str:
        time.sleep(SLOW_SECONDS)
        return "slow"

    from carboy.websocket import WebSocketDisconnect, websocket

    @app.websocket("/rig/ws")
    async def rig_ws() -> None:
        await websocket.send("hello")
        try:
            while True:
                await websocket.send(await websocket.receive())
        except WebSocketDisconnect:
            pass

    Health(app)


def _hello(app: t.Any) -> t.Any:
    @app.get("/")
    def hello() -> str:
        return HELLO

    return app


def build_hello(framework: str) -> t.Any:
    if framework == "carboy":
        import carboy

        app = carboy.Carboy("rig_hello_carboy")
    else:
        from flask import Flask

        app = Flask("rig_hello_flask")
    _hello(app)
    _health(app)
    return app


_counter_client: t.Any = None


def _counter() -> t.Any:
    global _counter_client
    if _counter_client is None:
        import redis

        from benchmarks.shared_state import _env

        _counter_client = redis.Redis.from_url(_env()[0])
    return _counter_client


def _rig_routes(framework: str) -> t.Callable[[t.Any, t.Any, t.Any], None]:
    def routes(app: t.Any, cache: t.Any, limiter: t.Any) -> None:
        if framework == "carboy":
            from carboy import request, session
        else:
            from flask import request, session
        from benchmarks.shared_state import _env

        computed_key = f"{_env()[1]}{framework}:rig:computed"
        _hello(app)
        _health(app)

        @app.post("/rig/note")
        def rig_note_set() -> str:
            session["note"] = request.form["note"]
            return "ok"

        @app.get("/rig/note")
        def rig_note_get() -> str:
            return str(session.get("note", ""))

        @app.get("/rig/limited")
        @limiter.limit(os.environ.get(ENV_LIMIT, "5/minute"))
        def rig_limited() -> str:
            return "ok"

        @cache.cached(timeout=3600, key_prefix="rig-once")
        def value() -> str:
            _counter().incr(computed_key)
            return "the cached value"

        @app.get("/rig/cached")
        def rig_cached() -> str:
            return value()

        @app.get("/rig/computed")
        def rig_computed() -> str:
            return (_counter().get(computed_key) or b"0").decode()

    return routes


def build_shared(framework: str) -> t.Any:
    from benchmarks import shared_state

    if framework == "carboy":
        return shared_state.build_carboy("carboy-wsgi", False, _rig_routes("carboy"))
    return shared_state.build_flask(_rig_routes("flask"))


def build_realtime() -> t.Any:
    import carboy
    from benchmarks.shared_state import _env
    from carboy import request, websocket
    from carboy.scale.broadcast import Broadcast, Subscription

    redis_url, prefix = _env()
    app = carboy.Carboy("rig_realtime_carboy")
    app.config.update(
        REDIS_URL=redis_url,
        BROADCAST_BACKEND="streams",
        BROADCAST_KEY_PREFIX=f"{prefix}broadcast:",
        BROADCAST_KEY_TTL=600,
    )
    broadcast = Broadcast(app)
    _health(app)

    @app.post("/rig/publish/<channel>")
    async def rig_publish(channel: str) -> str:
        return await broadcast.apublish(channel, request.get_data(as_text=True))

    @app.websocket("/rig/fanout/<channel>")
    async def rig_fanout(channel: str) -> None:
        async def greet(_sub: Subscription) -> None:
            await websocket.send(f"hello {worker_tag()}")

        await broadcast.serve_websocket(channel, on_open=greet)

    return app


def tag_wsgi(app: t.Any) -> t.Any:
    """*app* with :data:`WORKER_HEADER` on every answer (WSGI). The tag is read per request:
    a server that loads the app before it forks (``gunicorn --preload``) still tags each
    worker with its own pid."""

    def tagged(environ: t.Any, start_response: t.Any) -> t.Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
            headers.append((WORKER_HEADER, worker_tag()))
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return tagged


def tag_asgi(app: t.Any) -> t.Any:
    """*app* with :data:`WORKER_HEADER` on every answer (ASGI; other scopes pass through)."""
    name = WORKER_HEADER.lower().encode()

    async def tagged(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def tagging_send(message: t.Any) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (name, worker_tag().encode())],
                }
            await send(message)

        await app(scope, receive, tagging_send)

    return tagged


_BUILDERS: dict[str, t.Callable[[], t.Any]] = {
    "carboy_hello": lambda: build_hello("carboy"),
    "flask_hello": lambda: build_hello("flask"),
    "carboy_shared": lambda: build_shared("carboy"),
    "flask_shared": lambda: build_shared("flask"),
    "carboy_realtime": build_realtime,
}
APPS = tuple(_BUILDERS)


def __getattr__(name: str) -> t.Any:
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = builder()
    tag = os.environ.get(ENV_WORKER_HEADER, "")
    if tag == "wsgi":
        app = tag_wsgi(app)
    elif tag == "asgi":
        app = tag_asgi(app)
    globals()[name] = app
    return app
