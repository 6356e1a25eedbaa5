"""carboy.scale.health, drain and overload in process: the endpoints, the check cache, the
loopback drain endpoint, stream and WebSocket closing, and the concurrency limit, each under
WSGI and ASGI (the test clients). tests/test_scale_health_servers.py runs them under real
servers."""

from __future__ import annotations

import asyncio
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import carboy
from carboy.scale import drain
from carboy.scale.health import Health, HealthError
from carboy.scale.overload import Overload
from carboy.testing import ASGIClient
from carboy.websocket import WebSocketDisconnect, websocket
from redis_servers import RedisServer


@pytest.fixture(autouse=True)
def fresh_drain() -> t.Iterator[None]:
    """Each test starts with this process undrained, and leaves it so."""
    drain.reset()
    yield
    drain.reset()


@pytest.fixture(params=["wsgi", "wsgi-chain", "asgi"])
def protocol(request: pytest.FixtureRequest) -> str:
    """WSGI on carboy's short and bare paths, WSGI on Flask's method chain, and ASGI."""
    return t.cast(str, request.param)


class ChainApp(carboy.Carboy):
    """Overrides a dispatch step, so requests take Flask's plain method chain."""

    def dispatch_request(self) -> t.Any:
        return super().dispatch_request()


def make_app(protocol: str, tmp_path: Path, **config: t.Any) -> carboy.Carboy:
    app = (ChainApp if protocol == "wsgi-chain" else carboy.Carboy)(__name__)
    app.config.update(TESTING=True, HEALTH_DRAIN_FILE=str(tmp_path / "marker"), **config)
    if protocol == "asgi":
        app.test_client_class = ASGIClient
    return app


# -- /livez and /readyz -----------------------------------------------------------------------


def test_livez_and_readyz_without_checks(protocol: str, tmp_path: Path) -> None:
    app = make_app(protocol, tmp_path)
    Health(app)
    client = app.test_client()
    live = client.get("/livez")
    assert (live.status_code, live.get_json()) == (200, {"status": "alive"})
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "ready"
    assert ready.headers["Cache-Control"] == "no-store"
    assert client.head("/readyz").status_code == 200
    assert client.post("/readyz").status_code == 405


def test_failing_checks_are_named_never_500(protocol: str, tmp_path: Path) -> None:
    app = make_app(protocol, tmp_path, HEALTH_CHECK_TIMEOUT=0.3)
    health = Health(app)
    gate = threading.Event()

    @health.check
    def fine() -> None:
        pass

    @health.check(name="db")
    def database() -> None:
        raise ConnectionError("10.1.2.3 refused")

    @health.check
    async def queue() -> bool:
        return False

    @health.check
    def slow() -> None:
        gate.wait(5)

    @health.check(timeout=0.2)
    async def aslow() -> None:
        await asyncio.sleep(5)

    health.add_check("broker", lambda: (_ for _ in ()).throw(HealthError("broker lost")))

    started = time.monotonic()
    res = app.test_client().get("/readyz")
    took = time.monotonic() - started
    gate.set()
    body = res.get_json()
    assert res.status_code == 503
    assert body["status"] == "unready"
    assert sorted(body["failing"]) == ["aslow", "broker", "db", "queue", "slow"]
    checks = body["checks"]
    assert checks["fine"]["ok"] is True
    assert checks["db"]["error"] == "ConnectionError"  # no address leaked by default
    assert checks["queue"]["error"] == "returned False"
    assert checks["slow"]["error"] == "timed out after 0.3 s"
    assert checks["aslow"]["error"] == "timed out after 0.2 s"
    assert checks["broker"]["error"] == "broker lost"
    assert took < 3  # bounded by the timeouts, not by the 5 s the checks would take


def test_error_details_on_request(protocol: str, tmp_path: Path) -> None:
    app = make_app(protocol, tmp_path, HEALTH_ERROR_DETAILS=True)
    health = Health(app)
    health.add_check("db", lambda: 1 / 0)
    body = app.test_client().get("/readyz").get_json()
    assert body["checks"]["db"]["error"] == "ZeroDivisionError: division by zero"


def test_a_check_still_hung_is_not_started_again(tmp_path: Path) -> None:
    app = make_app("wsgi", tmp_path, HEALTH_CHECK_TIMEOUT=0.1, HEALTH_CHECK_TTL=0)
    health = Health(app)
    gate = threading.Event()
    calls: list[int] = []

    @health.check
    def stuck() -> None:
        calls.append(1)
        gate.wait(5)

    client = app.test_client()
    try:
        first = client.get("/readyz").get_json()["checks"]["stuck"]["error"]
        second = client.get("/readyz").get_json()["checks"]["stuck"]["error"]
    finally:
        gate.set()
    assert first == "timed out after 0.1 s"
    assert second == "still running since an earlier timeout"
    assert len(calls) == 1


def test_checks_run_in_an_app_context(tmp_path: Path) -> None:
    app = make_app("wsgi", tmp_path, WHO="me")
    health = Health(app)
    seen: list[str] = []
    health.add_check("ctx", lambda: seen.append(carboy.current_app.config["WHO"]))
    assert app.test_client().get("/readyz").status_code == 200
    assert seen == ["me"]


def test_healthz_config_of_flask_healthz(tmp_path: Path) -> None:
    app = make_app("wsgi", tmp_path, HEALTHZ={"live": lambda: None, "ready": "os.path.sep"})
    with pytest.raises(TypeError):
        Health(app)
    app = make_app("wsgi", tmp_path, HEALTHZ={"live": lambda: False, "ready": lambda: None})
    Health(app)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    live = client.get("/livez")
    assert live.status_code == 503
    assert live.get_json()["failing"] == ["live"]


def test_readyz_cache_one_refresh_at_a_time(protocol: str, tmp_path: Path) -> None:
    """40 threads ask /readyz as fast as they can for about 1.5 s: the counting check runs
    about once per TTL (0.5 s), never once per request."""
    app = make_app(protocol, tmp_path, HEALTH_CHECK_TTL=0.5)
    health = Health(app)
    calls: list[float] = []

    @health.check
    def counted() -> None:
        calls.append(time.monotonic())
        time.sleep(0.02)  # a round trip, so refreshes would overlap if allowed

    deadline = time.monotonic() + 1.5

    def ask() -> list[int]:
        client = app.test_client()
        codes = []
        while time.monotonic() < deadline:
            codes.append(client.get("/readyz").status_code)
        return codes

    with ThreadPoolExecutor(40) as pool:
        codes = [c for batch in pool.map(lambda _: ask(), range(40)) for c in batch]
    assert set(codes) == {200}
    assert len(codes) > 100
    # 1.5 s at one refresh per 0.5 s: 3 or 4 runs (the first request starts one).
    assert 1 <= len(calls) <= 5, (len(calls), len(codes))


def test_a_cancelled_waiter_leaves_the_refresh_alone(tmp_path: Path) -> None:
    """A /readyz call waiting for another's refresh and cancelled (its client went away)
    does not cancel the shared refresh: the refreshing call still gets its answer."""
    app = make_app("asgi", tmp_path)
    health = Health(app)
    health.add_check("slow", lambda: time.sleep(0.2))

    async def scenario() -> dict[str, t.Any]:
        first = asyncio.ensure_future(health.report(app))
        await asyncio.sleep(0.05)  # the refresh is running
        waiter = asyncio.ensure_future(health.report(app))
        await asyncio.sleep(0.02)
        waiter.cancel()
        return await first

    assert asyncio.run(scenario())["ok"] is True


def test_redis_check_stopped_and_back(protocol: str, tmp_path: Path) -> None:
    with RedisServer() as server:
        app = make_app(protocol, tmp_path, REDIS_URL=server.url, HEALTH_CHECK_TTL=0)
        Health(app)
        client = app.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.get_json()["checks"]["redis"]["ok"] is True
        server.stop()
        for _ in range(3):
            ready = client.get("/readyz")
            assert ready.status_code == 503
            body = ready.get_json()
            assert body["failing"] == ["redis"]
            assert body["checks"]["redis"]["error"] in ("ConnectionError", "TimeoutError")
            assert client.get("/livez").status_code == 200
        server.start()
        assert client.get("/readyz").status_code == 200


def test_no_redis_check_without_redis(tmp_path: Path) -> None:
    app = make_app("wsgi", tmp_path)
    Health(app)
    assert app.test_client().get("/readyz").get_json()["checks"] == {}
    app = make_app("wsgi", tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    Health(app, redis=False)
    assert app.test_client().get("/readyz").get_json()["checks"] == {}


def test_redis_connection_made_after_health_is_checked(tmp_path: Path) -> None:
    from carboy.scale.connection import RedisConnection

    app = make_app("wsgi", tmp_path, HEALTH_CHECK_TTL=0)
    Health(app)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    RedisConnection(app, url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["failing"] == ["redis"]


# -- the drain endpoint -----------------------------------------------------------------------


def test_drain_endpoint_only_from_loopback(protocol: str, tmp_path: Path) -> None:
    app = make_app(protocol, tmp_path)
    Health(app)
    client = app.test_client()
    far = client.post("/drainz", environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert far.status_code == 403
    assert "loopback" in far.get_json()["error"]
    forwarded = client.post(
        "/drainz", environ_base={"REMOTE_ADDR": "127.0.0.1"}, headers={"X-Forwarded-For": "::1"}
    )
    assert forwarded.status_code == 403
    assert "proxy" in forwarded.get_json()["error"]
    assert client.post("/drainz", environ_base={"REMOTE_ADDR": ""}).status_code == 403
    assert client.get("/drainz").status_code == 405
    assert client.get("/readyz").status_code == 200  # nothing refused began a drain
    assert not (tmp_path / "marker").exists()

    near = client.post("/drainz", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert near.status_code == 202
    assert near.get_json()["began"] is True
    assert near.get_json()["reason"] == "endpoint"
    assert (tmp_path / "marker").exists()  # for the server's other workers
    again = client.post("/drainz", environ_base={"REMOTE_ADDR": "::1"})
    assert (again.status_code, again.get_json()["began"]) == (202, False)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "draining"
    assert client.get("/livez").status_code == 200  # alive, only not ready


def test_ipv6_and_mapped_loopback(tmp_path: Path) -> None:
    for address in ("::1", "::ffff:127.0.0.1"):
        drain.reset()
        app = make_app("wsgi", tmp_path)
        Health(app)
        res = app.test_client().post("/drainz", environ_base={"REMOTE_ADDR": address})
        assert res.status_code == 202, address


def test_marker_drains_the_other_workers(tmp_path: Path) -> None:
    """Another worker of the server (here: this process after its state is forgotten) sees the
    marker the drain endpoint wrote; a marker older than the process is ignored."""
    app = make_app("wsgi", tmp_path)
    Health(app)
    app.test_client().post("/drainz", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    marker = tmp_path / "marker"
    assert marker.exists()
    state = drain.reset()  # removes the markers it wrote, as a stopping worker does
    assert not marker.exists()
    marker.touch()  # written by a sibling worker now
    state.configure(1.0, None, str(marker))
    assert state.draining
    assert state.reason == "marker"
    state = drain.reset()
    marker.touch()
    import os

    os.utime(marker, (1, 1))  # a marker from a server that ran long ago
    state.configure(1.0, None, str(marker))
    assert not state.draining


def test_custom_paths_and_disabled_routes(tmp_path: Path) -> None:
    app = make_app(
        "wsgi", tmp_path, HEALTH_LIVE_PATH="/-/live", HEALTH_READY_PATH=None, HEALTH_DRAIN_PATH=None
    )
    Health(app)
    client = app.test_client()
    assert client.get("/-/live").status_code == 200
    assert client.get("/readyz").status_code == 404
    assert client.post("/drainz").status_code == 404


# -- the drain period's end: streams and WebSockets -----------------------------------------


def test_streams_end_when_the_drain_period_ends(protocol: str, tmp_path: Path) -> None:
    app = make_app(protocol, tmp_path, HEALTH_DRAIN_SECONDS=0.3)
    health = Health(app)
    closed: list[str] = []

    @app.get("/sync")
    def sync_stream() -> t.Any:
        def ticks() -> t.Iterator[str]:
            try:
                while True:
                    yield "tick\n"
                    if health.wait_closing(0.05):
                        return
            finally:
                closed.append("sync")

        return health.stream(ticks())

    @app.get("/async")
    async def async_stream() -> t.Any:
        async def ticks() -> t.AsyncIterator[str]:
            try:
                while True:
                    yield "tick\n"
                    await asyncio.sleep(10)  # stopped while it waits
            finally:
                closed.append("async")

        return health.stream(ticks())

    def body(path: str) -> str:
        return app.test_client().get(path).get_data(as_text=True)

    health.drain("test")
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        sync_body, async_body = pool.map(body, ["/sync", "/async"])
    assert time.monotonic() - started < 5
    assert sync_body.startswith("tick\n") and set(sync_body.split()) == {"tick"}
    assert async_body == "tick\n"
    assert sorted(closed) == ["async", "sync"]
    assert health.closing
    # After the drain period a new stream ends at once.
    assert body("/sync") == ""


def test_websockets_closed_with_1012(tmp_path: Path) -> None:
    app = make_app("asgi", tmp_path, HEALTH_DRAIN_SECONDS=0.2)
    health = Health(app)

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.send("hi")
        while True:
            await websocket.send(await websocket.receive())

    client = app.test_client()
    with client.websocket("/ws") as one, client.websocket("/ws") as two:
        assert one.receive() == two.receive() == "hi"
        assert drain.state().open_websockets == 2
        health.drain("test")
        for session in (one, two):
            with pytest.raises(WebSocketDisconnect) as info:
                session.receive(timeout=5)
            assert (info.value.code, info.value.reason) == (1012, "service restart")
    # After the drain period a new connection is refused.
    from carboy.websocket_testing import WebsocketRejected

    with pytest.raises(WebsocketRejected) as rejected, client.websocket("/ws"):
        pass
    assert rejected.value.status_code == 503


def test_drain_starts_once_and_reports(tmp_path: Path) -> None:
    app = make_app("wsgi", tmp_path, HEALTH_DRAIN_SECONDS=30)
    health = Health(app)
    assert not health.draining
    assert health.drain("first") is True
    assert health.drain("second") is False
    body = app.test_client().get("/readyz").get_json()
    assert body["drain"]["reason"] == "first"
    assert body["drain"]["drain_seconds"] == 30
    assert not health.closing


def test_signal_chain_only_for_server_handlers() -> None:
    """In this process SIGTERM has no server's handler: nothing is chained (so a test run or
    a task queue worker that imports the app never has its SIGTERM delayed)."""
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert drain.install_signal_chain() == "no server handler yet"
        assert signal.getsignal(signal.SIGTERM) is previous

        def mine(signum: int, frame: t.Any) -> None:
            pass

        signal.signal(signal.SIGTERM, mine)
        assert drain.install_signal_chain() == "no server handler yet"
        assert drain.install_signal_chain(force=True) == "signal"
        assert signal.getsignal(signal.SIGTERM) is not mine
        assert drain.install_signal_chain() == "already chained"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_bad_config(tmp_path: Path) -> None:
    for config in ({"HEALTH_CHECK_TIMEOUT": 0}, {"HEALTH_DRAIN_SECONDS": -1}):
        with pytest.raises(ValueError):
            Health(make_app("wsgi", tmp_path, **config))
    health = Health()
    with pytest.raises(TypeError):
        health.add_check("x", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        health.add_check("x", lambda: None, timeout=0)


# -- overload ---------------------------------------------------------------------------------


def test_overload_is_off_by_default(tmp_path: Path) -> None:
    app = make_app("wsgi", tmp_path)
    overload = Overload(app)
    assert overload.limit is None
    assert "wsgi_app" not in app.__dict__ and "asgi_app" not in app.__dict__


def test_overload_refuses_past_the_limit(protocol: str, tmp_path: Path) -> None:
    app = make_app(protocol, tmp_path, MAX_CONCURRENT_REQUESTS=2, OVERLOAD_RETRY_AFTER=3)
    Health(app)
    overload = Overload(app)
    release = threading.Event()
    inside = threading.Semaphore(0)

    @app.get("/hold")
    def hold() -> str:
        inside.release()
        release.wait(10)
        return "held"

    @app.get("/quick")
    async def quick() -> str:
        return "quick"

    def get(path: str) -> t.Any:
        return app.test_client().get(path)

    with ThreadPoolExecutor(4) as pool:
        held = [pool.submit(get, "/hold") for _ in range(2)]
        for _ in range(2):
            assert inside.acquire(timeout=10)
        assert overload.in_flight == 2
        refused = get("/quick")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "3"
        assert b"limit" in refused.data
        assert get("/readyz").status_code == 200  # health URLs are never refused
        assert get("/livez").status_code == 200
        release.set()
        assert [f.result().get_data(as_text=True) for f in held] == ["held", "held"]
    assert overload.in_flight == 0
    assert overload.refused == 1
    assert get("/quick").get_data(as_text=True) == "quick"


def test_overload_steps_aside_for_asgi(tmp_path: Path) -> None:
    """Served over ASGI, the WSGI wrapper leaves app.wsgi_app, so requests keep the native
    ASGI path (async views on the loop); the ASGI wrapper counts them."""
    app = make_app("asgi", tmp_path, MAX_CONCURRENT_REQUESTS=4)
    overload = Overload(app)
    loops: list[object] = []

    @app.get("/where")
    async def where() -> str:
        loops.append(asyncio.get_running_loop())
        return "ok"

    assert "wsgi_app" in app.__dict__
    assert app.test_client().get("/where").status_code == 200
    assert "wsgi_app" not in app.__dict__
    assert overload.in_flight == 0 and overload.refused == 0


def test_overload_config_errors(tmp_path: Path) -> None:
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            Overload(make_app("wsgi", tmp_path), limit=limit)  # type: ignore[arg-type]


_HELPER_SCRIPT = """
import signal, sys, threading, time
from carboy.scale import drain

def server_handler(signum, frame):
    pass

server_handler.__module__ = "uvicorn.server"  # looks like a server worker's handler
state = drain.state()
print(state.install_signal_chain(), flush=True)  # nothing to chain yet: arms SIGURG
signal.signal(signal.SIGTERM, server_handler)   # the server sets its handler later
if sys.argv[1] == "lock-held":
    # SIGURG arrives while the main thread holds the drain's lock (as in watch()).
    with state._lock:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGURG)
        time.sleep(0.1)
else:
    # A request thread asks; the main thread is busy waiting.
    asker = threading.Thread(target=lambda: print(state.install_signal_chain(), flush=True))
    asker.start()
    deadline = time.monotonic() + 10
    while state._chain is None and time.monotonic() < deadline:
        time.sleep(0.01)
    asker.join()
print(state._chain[0] if state._chain else None, signal.getsignal(signal.SIGTERM).__self__ is state)
"""


@pytest.mark.parametrize("case", ["lock-held", "from-a-thread"])
def test_main_thread_chains_sigterm_when_asked(case: str) -> None:
    """A thread that cannot set signal handlers asks the main thread with SIGURG; the
    handler chains SIGTERM without taking the drain's lock, so it cannot deadlock with the
    main thread holding it (a uvicorn worker hung at lifespan startup that way)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, "-c", _HELPER_SCRIPT, case],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    lines = proc.stdout.split("\n")
    assert proc.returncode == 0, proc.stderr
    assert lines[0] == "no server handler yet"
    assert lines[-2] == "signal True", proc.stdout
