"""carboy served by real servers, each a subprocess on a free 127.0.0.1 port.

One module, ``served_apps/served_demo.py``, is served unchanged as ``served_demo:app`` by WSGI
servers (gunicorn sync and gevent workers, granian ``--interface wsgi``) and ASGI servers
(uvicorn, hypercorn, granian ``--interface asgi``), and driven with httpx and the ``websockets``
client. Deadlines in these tests only bound a hang: nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

import test_example_gunicorn as notes_over_http
from servers import Server, free_port, tool, wait_for

DEMO = "served_demo:app"
LIFESPAN_DEMO = "lifespan_demo:app"


def gunicorn(port: int, target: str, *options: str) -> list[str]:
    return [*tool("gunicorn"), "--bind", f"127.0.0.1:{port}", "--timeout", "30", *options, target]


def uvicorn(port: int, target: str, *options: str) -> list[str]:
    return [*tool("uvicorn"), "--host", "127.0.0.1", "--port", str(port), *options, target]


def hypercorn(port: int, target: str) -> list[str]:
    return [*tool("hypercorn"), "--bind", f"127.0.0.1:{port}", target]


def granian(port: int, target: str, interface: str) -> list[str]:
    return [
        *tool("granian"),
        *("--interface", interface, "--host", "127.0.0.1", "--port", str(port)),
        target,
    ]


#: name → (protocol, command line for a port); each serves ``served_demo:app`` with 1 worker.
SERVERS: dict[str, tuple[str, Callable[[int], list[str]]]] = {
    "gunicorn": ("wsgi", lambda port: gunicorn(port, DEMO, "--workers", "1")),
    "gunicorn-gevent": (
        "wsgi",
        lambda port: gunicorn(port, DEMO, "--workers", "1", "--worker-class", "gevent"),
    ),
    "granian-wsgi": ("wsgi", lambda port: granian(port, DEMO, "wsgi")),
    "uvicorn": ("asgi", lambda port: uvicorn(port, DEMO)),
    "hypercorn": ("asgi", lambda port: hypercorn(port, DEMO)),
    "granian-asgi": ("asgi", lambda port: granian(port, DEMO, "asgi")),
}
WSGI_SERVERS = [name for name, (kind, _) in SERVERS.items() if kind == "wsgi"]
ASGI_SERVERS = [name for name, (kind, _) in SERVERS.items() if kind == "asgi"]


class ServerPool:
    """The demo app's servers, each started on first use and kept for the whole module."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        #: Lines the demo app records (teardowns, closed generators), for all servers.
        self.events = directory / "events.log"
        self.events.touch()
        self._servers: dict[str, Server] = {}

    def get(self, name: str) -> Server:
        server = self._servers.get(name)
        if server is None:
            port = free_port()
            server = Server(
                SERVERS[name][1](port),
                port,
                self.directory / f"{name}.log",
                env={"DEMO_EVENTS": str(self.events)},
            )
            server.name = name
            server.start()
            try:
                server.wait_until_up("/sync")
            except BaseException:
                server.stop()
                raise
            self._servers[name] = server
        return server

    def event_lines(self) -> list[str]:
        return self.events.read_text().splitlines()

    def close(self) -> None:
        for server in self._servers.values():
            server.stop()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    servers = ServerPool(tmp_path_factory.mktemp("servers"))
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(params=list(SERVERS))
def served(request: pytest.FixtureRequest, pool: ServerPool) -> Server:
    return pool.get(request.param)


@pytest.fixture(params=ASGI_SERVERS)
def asgi_served(request: pytest.FixtureRequest, pool: ServerPool) -> Server:
    return pool.get(request.param)


@pytest.fixture(params=WSGI_SERVERS)
def wsgi_served(request: pytest.FixtureRequest, pool: ServerPool) -> Server:
    return pool.get(request.param)


def client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=10.0)


# -- 1. the same app under every server ---------------------------------------------------------


def test_served_over_the_expected_protocol(served: Server) -> None:
    """The same ``module:app`` is taken as WSGI or ASGI by each server (hypercorn decides by
    itself, from the app's ``__call__``)."""
    with client(served) as http:
        assert http.get("/protocol").text == SERVERS[served.name][0]


def test_sync_and_async_views(served: Server) -> None:
    with client(served) as http:
        res = http.get("/sync", params={"name": "ada"})
        assert res.status_code == 200
        assert res.headers["content-type"] == "text/html; charset=utf-8"
        assert res.text == "sync ok ada"
        res = http.get("/async", params={"name": "grace"})
        assert res.status_code == 200
        assert res.headers["content-type"] == "text/html; charset=utf-8"
        assert res.text == "async ok grace"


def test_json_post_echoed_by_async_view(served: Server) -> None:
    payload = {"title": "über", "tags": ["a", "b"], "n": 3, "nested": {"ok": True}}
    with client(served) as http:
        res = http.post("/echo", json=payload)
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    assert res.json() == {"got": payload, "method": "POST"}


def test_json_body_arriving_after_the_headers(served: Server) -> None:
    """The body reaches the server after it has parsed the headers, so the view's read must
    wait on the connection (under gevent: from the greenlet that owns the socket)."""
    body = json.dumps({"late": True, "text": "ünïcode"}).encode()
    head = (
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10.0) as sock:
        sock.sendall(head.encode())
        time.sleep(0.3)  # ordering, not timing: let the server start on the request first
        sock.sendall(body)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    assert status_line.split()[1] == b"200", raw
    payload = rest.partition(b"\r\n\r\n")[2]
    assert json.loads(payload) == {"got": {"late": True, "text": "ünïcode"}, "method": "POST"}


def test_session_round_trip(served: Server) -> None:
    with client(served) as http:
        res = http.post("/session", data={"value": "kept across requests"})
        assert res.status_code == 200
        assert "session" in http.cookies
        assert http.get("/session").json() == {"value": "kept across requests"}
    with client(served) as stranger:
        assert stranger.get("/session").json() == {"value": None}


def test_not_found(served: Server) -> None:
    with client(served) as http:
        res = http.get("/no/such/page")
    assert res.status_code == 404
    assert "Not Found" in res.text


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_streamed_generator(served: Server, kind: str) -> None:
    with client(served) as http, http.stream("GET", f"/stream/{kind}", params={"n": 50}) as res:
        assert res.status_code == 200
        assert res.headers["content-type"] == "text/plain"
        body = b"".join(res.iter_bytes())
    assert body.decode() == "".join(f"{kind}-{i}\n" for i in range(50))


# -- WebSockets: served under ASGI, refused over HTTP under WSGI ------------------------------


def test_websocket_echo(asgi_served: Server) -> None:
    with connect(asgi_served.ws_url + "/ws/echo", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"
        ws.send(b"\x00\xffbytes")
        assert ws.recv(timeout=10) == b"echo:\x00\xffbytes"
        ws.send("again")
        assert ws.recv(timeout=10) == "echo:again"
    with connect(asgi_served.ws_url + "/ws/json?who=ada", open_timeout=10) as ws:
        ws.send(json.dumps({"n": [1, 2, 3], "s": "ü"}))
        assert json.loads(ws.recv(timeout=10)) == {"got": {"n": [1, 2, 3], "s": "ü"}, "who": "ada"}


def test_before_websocket_rejects_with_403(asgi_served: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(asgi_served.ws_url + "/ws/guarded", open_timeout=10)
    assert info.value.response.status_code == 403
    with connect(asgi_served.ws_url + "/ws/guarded?token=letmein", open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "welcome"


def test_websocket_handler_error_closes_with_1011(asgi_served: Server) -> None:
    with connect(asgi_served.ws_url + "/ws/boom", open_timeout=10) as ws:
        ws.send("go")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1011
    wait_for(
        lambda: "the handler failed on purpose" in asgi_served.output(),
        "the handler's error in the server log",
    )


def test_websocket_route_over_wsgi_is_refused(wsgi_served: Server) -> None:
    with client(wsgi_served) as http:
        res = http.get("/ws/echo")
    assert 400 <= res.status_code < 500 or res.status_code == 501
    # A real handshake is refused too, with an HTTP answer instead of a hang.
    with pytest.raises(InvalidStatus) as info:
        connect(wsgi_served.ws_url + "/ws/echo", open_timeout=10)
    status = info.value.response.status_code
    assert 400 <= status < 500 or status == 501
    # The worker is still free for the next request.
    with client(wsgi_served) as http:
        assert http.get("/sync").text == "sync ok "


# -- 2. concurrency on one uvicorn worker ---------------------------------------------------


def test_uvicorn_worker_runs_async_views_concurrently(pool: ServerPool) -> None:
    """20 requests all park on one asyncio.Event in a single worker before it is set: every
    one of them started before any finished, so they ran concurrently on the event loop."""
    server = pool.get("uvicorn")
    key = uuid.uuid4().hex
    count = 20

    async def scenario() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=count + 5)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60.0, limits=limits) as http:
            waiting = [
                asyncio.ensure_future(http.get(f"/gate/{key}/wait", params={"i": i}))
                for i in range(count)
            ]
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30.0
                while True:
                    started = (await http.get(f"/gate/{key}/started")).json()["started"]
                    if started == count:
                        break
                    assert started < count
                    assert loop.time() < deadline, f"only {started} of {count} started"
                    await asyncio.sleep(0.05)
                assert not any(task.done() for task in waiting)
                assert (await http.post(f"/gate/{key}/open")).text == "opened"
                return await asyncio.wait_for(asyncio.gather(*waiting), timeout=30.0)
            finally:
                for task in waiting:
                    task.cancel()

    responses = asyncio.run(scenario())
    assert [res.status_code for res in responses] == [200] * count
    assert [res.json()["released"] for res in responses] == [str(i) for i in range(count)]


# -- 5. client disconnects under uvicorn ----------------------------------------------------


def test_uvicorn_disconnect_closes_sync_stream_with_context(pool: ServerPool) -> None:
    server = pool.get("uvicorn")
    tag = uuid.uuid4().hex
    line = f"teardown {tag}"
    with (
        httpx.Client(base_url=server.base_url, timeout=10.0) as http,
        http.stream("GET", "/forever/sync", params={"tag": tag}) as res,
    ):
        assert res.status_code == 200
        chunks = res.iter_raw()  # kept: dropping it would close the connection already
        assert next(chunks).startswith(f"tick {tag}\n".encode())
        # stream_with_context keeps the request open while the body streams.
        assert line not in pool.event_lines()
    # Leaving the block closed the connection with the endless body unread.
    wait_for(lambda: line in pool.event_lines(), f"{line!r} in the events file")
    assert pool.event_lines().count(line) == 1


def test_uvicorn_disconnect_closes_async_generator(pool: ServerPool) -> None:
    server = pool.get("uvicorn")
    tag = uuid.uuid4().hex
    line = f"async-closed {tag}"
    with (
        httpx.Client(base_url=server.base_url, timeout=10.0) as http,
        http.stream("GET", "/forever/async", params={"tag": tag}) as res,
    ):
        assert res.status_code == 200
        chunks = res.iter_raw()
        assert next(chunks).startswith(f"tick {tag}\n".encode())
        assert line not in pool.event_lines()
    wait_for(lambda: line in pool.event_lines(), f"{line!r} in the events file")
    assert pool.event_lines().count(line) == 1


# -- 4. gevent: async views on greenlets ----------------------------------------------------


def test_gevent_worker_serves_concurrent_async_views(pool: ServerPool) -> None:
    server = pool.get("gunicorn-gevent")
    values = [f"value-{i}-{uuid.uuid4().hex[:6]}" for i in range(10)]

    def fetch(value: str) -> httpx.Response:
        return httpx.get(
            server.base_url + "/sleepy", params={"value": value, "delay": "0.2"}, timeout=30.0
        )

    with ThreadPoolExecutor(max_workers=len(values)) as threads:
        responses = list(threads.map(fetch, values))
    assert [res.status_code for res in responses] == [200] * len(values)
    assert [res.json()["value"] for res in responses] == values
    assert len({res.json()["pid"] for res in responses}) == 1  # one worker served them all


# -- 3. worker lifespan -------------------------------------------------------------------


def lifespan_server(
    tmp_path: Path, make_cmd: Callable[[int], list[str]], fail: bool = False
) -> tuple[Server, Path]:
    port = free_port()
    lines = tmp_path / "lifespan.log"
    env = {"LIFESPAN_LOG": str(lines)}
    if fail:
        env["LIFESPAN_FAIL"] = "1"
    return Server(make_cmd(port), port, tmp_path / "server.log", env), lines


def events(lines: Path) -> list[tuple[str, int]]:
    if not lines.exists():
        return []
    return [(e, int(pid)) for e, pid in (line.split() for line in lines.read_text().splitlines())]


def assert_one_lifespan_per_worker(recorded: list[tuple[str, int]], workers: set[int]) -> None:
    """Each worker started once before its first request and stopped once after its last."""
    assert {pid for _, pid in recorded} == workers
    for pid in workers:
        mine = [event for event, p in recorded if p == pid]
        assert mine.count("start") == 1, recorded
        assert mine.count("stop") == 1, recorded
        assert mine[0] == "start", recorded
        assert mine[-1] == "stop", recorded
        assert "request" in mine, recorded


@pytest.mark.parametrize(
    "make_cmd",
    [
        pytest.param(lambda port: uvicorn(port, LIFESPAN_DEMO), id="uvicorn"),
        pytest.param(lambda port: hypercorn(port, LIFESPAN_DEMO), id="hypercorn"),
    ],
)
def test_asgi_lifespan_runs_once_around_serving(
    tmp_path: Path, make_cmd: Callable[[int], list[str]]
) -> None:
    server, lines = lifespan_server(tmp_path, make_cmd)
    with server:
        server.wait_until_up("/")
        with client(server) as http:
            pids = {http.get("/").json()["pid"] for _ in range(3)}
        (pid,) = pids
        recorded = events(lines)
        assert recorded[0] == ("start", pid)  # before the first request was served
        assert ("stop", pid) not in recorded
        status = server.stop(signal.SIGTERM)
    # After a graceful shutdown uvicorn re-raises the signal it caught, so it ends "killed by
    # SIGTERM"; hypercorn exits 0. The stop line below is what shows the shutdown was clean.
    assert status in (0, -signal.SIGTERM), server.output()
    assert_one_lifespan_per_worker(events(lines), {pid})


def test_uvicorn_exits_when_startup_fails(tmp_path: Path) -> None:
    server, lines = lifespan_server(tmp_path, lambda port: uvicorn(port, LIFESPAN_DEMO), True)
    with server:
        status = server.wait_for_exit()
    assert status != 0
    output = server.output()
    assert "explode_on_startup" in output
    assert "startup exploded on purpose" in output
    assert [event for event, _ in events(lines)] == ["start"]  # nothing was served


def test_gunicorn_halts_when_startup_fails(tmp_path: Path) -> None:
    """Under WSGI, startup runs on the worker's first request; its failure should stop the
    worker with status 3, which gunicorn reports as a boot failure and halts on."""
    server, lines = lifespan_server(
        tmp_path, lambda port: gunicorn(port, LIFESPAN_DEMO, "--workers", "1"), True
    )

    def startup_ran() -> bool:
        try:
            httpx.get(server.base_url + "/", timeout=5.0)
        except httpx.TransportError:
            pass  # not listening yet, or the worker went away mid-request
        return lines.exists() and "start" in lines.read_text()

    with server:
        wait_for(startup_ran, "the first request to run the startup functions", timeout=30.0)
        status = server.wait_for_exit(timeout=10.0)
    assert status == 3
    output = server.output()
    assert "Worker failed to boot" in output
    assert "explode_on_startup" in output
    assert [event for event, _ in events(lines)] == ["start"]


def test_gunicorn_runs_startup_once_per_worker(tmp_path: Path) -> None:
    server, lines = lifespan_server(
        tmp_path, lambda port: gunicorn(port, LIFESPAN_DEMO, "--workers", "2")
    )
    seen: set[int] = set()

    def both_workers_served() -> bool:
        # Slow requests in parallel: while one sync worker is busy, the other must accept.
        def fetch(_: int) -> int:
            return int(httpx.get(server.base_url + "/?delay=0.2", timeout=30.0).json()["pid"])

        with ThreadPoolExecutor(max_workers=4) as threads:
            seen.update(threads.map(fetch, range(4)))
        return len(seen) == 2

    with server:
        server.wait_until_up("/")
        wait_for(both_workers_served, "both workers to serve a request", timeout=30.0)
        recorded = events(lines)
        for pid in seen:
            mine = [event for event, p in recorded if p == pid]
            assert mine[0] == "start"
            assert mine.count("start") == 1
        assert server.stop(signal.SIGTERM) == 0
    assert_one_lifespan_per_worker(events(lines), seen)  # and nothing ran in the master


# -- 6. the example app under uvicorn -------------------------------------------------------


@pytest.fixture
def uvicorn_notes_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    cmd = uvicorn(port, "examples.notes:create_app", "--factory")
    yield from notes_over_http.run_server(cmd, tmp_path, port)


def test_uvicorn_serves_notes_end_to_end(uvicorn_notes_url: str) -> None:
    notes_over_http.test_gunicorn_serves_notes_end_to_end(uvicorn_notes_url)
