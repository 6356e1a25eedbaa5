"""Issue 20's single-host proofs of health, drain and overload, under real servers on 127.0.0.1.

``served_apps/health_app.py`` is served by each server. The proofs:

* **readyz cache**: many concurrent ``/readyz`` calls cost at most about one Redis ``PING`` a
  second per worker (counted with ``INFO commandstats`` on a Redis this test starts); with
  that Redis stopped, ``/readyz`` answers 503 naming ``redis`` and ``/livez`` 200, never 500.
* **drain on SIGTERM**, for gunicorn (sync workers; gthread with ``--preload``), uvicorn (2
  workers) and
  granian (WSGI and ASGI): SIGTERM goes to the server's master process while 2-second
  requests run; ``/readyz`` turns 503 at once while ordinary requests still answer 200; the
  slow requests, and one started during the drain period that outlives it, complete with
  200; WebSockets (20 clients, ASGI servers) get close code 1012 and event streams end
  cleanly when the drain period ends; the server exits within the drain period + 2 s.
* **drain recipe** (carboy's SIGTERM chain turned off, as for a server it cannot chain):
  ``POST /drainz`` from loopback drains every worker, then SIGTERM stops the server at once.
* **overload**: 200 concurrent slow requests to one worker with a limit of 8: the excess gets
  503 with ``Retry-After`` before any admitted request finishes, the admitted ones complete,
  and the worker's memory stays flat over repeated rounds.

Timings are printed (``-s``) and only the issue's bounds are asserted.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
import typing as t
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from redis_servers import RedisServer
from servers import Server, free_port, tool, wait_for

APP = "health_app:app"
DRAIN = 2.0  # HEALTH_DRAIN_SECONDS of the served app
EXIT_BOUND = DRAIN + 2.0  # the bound on the exit, from SIGTERM
WEBSOCKETS = 20


@dataclass(frozen=True)
class Spec:
    name: str
    protocol: str
    workers: int
    command: Callable[[int], list[str]]


def gunicorn(*options: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--graceful-timeout", "20", *options, APP),
    ]


def uvicorn(*options: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *tool("uvicorn"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
        APP,
    ]


def granian(interface: str, *options: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *tool("granian"),
        *("--interface", interface, "--host", "127.0.0.1", "--port", str(port), *options, APP),
    ]


SPECS = {
    # 4 sync workers: the slow requests hold 3, one stays free for the probes.
    "gunicorn-sync": Spec("gunicorn-sync", "wsgi", 4, gunicorn("--workers", "4")),
    # --preload: the app is made in the master, before the workers fork and set their
    # handlers; each worker's main thread chains SIGTERM when asked (SIGURG).
    "gunicorn-gthread": Spec(
        "gunicorn-gthread", "wsgi", 2, gunicorn("--workers", "2", "--threads", "8", "--preload")
    ),
    "uvicorn": Spec("uvicorn", "asgi", 2, uvicorn("--workers", "2")),
    "granian-asgi": Spec("granian-asgi", "asgi", 2, granian("asgi", "--workers", "2")),
    "granian-wsgi": Spec("granian-wsgi", "wsgi", 2, granian("wsgi", "--workers", "2")),
}


def serve(spec: Spec, tmp_path: Path, **env: str) -> Server:
    port = free_port()
    server = Server(
        spec.command(port),
        port,
        tmp_path / f"{spec.name}.log",
        env={
            "HEALTH_APP_DRAIN_SECONDS": str(DRAIN),
            "HEALTH_APP_STOP_SECONDS": "5",
            "HEALTH_APP_MARKER": str(tmp_path / "drain-marker"),
            "HEALTH_APP_EVENTS": str(tmp_path / "events"),
            **env,
        },
    )
    server.start()
    try:
        server.wait_until_up("/hello")
    except BaseException:
        server.stop()
        raise
    return server


def warm(server: Server, workers: int) -> set[int]:
    """Send concurrent requests on fresh connections until every worker has answered one."""
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    with ThreadPoolExecutor(8) as pool:
        while len(seen) < workers:
            if time.monotonic() > deadline:
                pytest.fail(f"only workers {seen} of {workers} answered:\n{server.output()}")
            pids = pool.map(
                lambda _: httpx.get(server.base_url + "/pid", timeout=10).text, range(8)
            )
            seen.update(int(p) for p in pids)
    return seen


@dataclass
class Call:
    path: str
    sent: float
    done: float = 0.0
    status: int | str = "pending"  # an int, or the error's name
    body: str = ""


def fetch(base: str, path: str, timeout: float = 15.0) -> Call:
    call = Call(path, time.monotonic())
    try:
        response = httpx.get(base + path, timeout=timeout)
        call.status, call.body = response.status_code, response.text
    except httpx.HTTPError as e:
        call.status = type(e).__name__
    call.done = time.monotonic()
    return call


class Background:
    """Runs calls on threads; :meth:`join` waits for all of them (bounded)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.calls: list[Call] = []

    def get(self, base: str, path: str) -> None:
        def run() -> None:
            self.calls.append(fetch(base, path))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stream(self, base: str, path: str) -> None:
        """GET an event stream to its end; the call's body is the events' count."""

        def run() -> None:
            call = Call(path, time.monotonic())
            try:
                with httpx.stream("GET", base + path, timeout=15) as response:
                    text = "".join(response.iter_text())
                call.status, call.body = response.status_code, str(text.count("data:"))
            except httpx.HTTPError as e:
                call.status = type(e).__name__
            call.done = time.monotonic()
            self.calls.append(call)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> list[Call]:
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads)
        return self.calls


@dataclass
class Sockets:
    """WebSocket clients on their own thread and loop, each waiting for the server's close."""

    url: str
    count: int
    connected: threading.Event = field(default_factory=threading.Event)
    closes: list[tuple[int | None, str | None, float]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    pids: set[str] = field(default_factory=set)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        thread.start()
        if not self.connected.wait(20):
            pytest.fail(f"WebSocket clients did not connect: {self.errors}")
        return thread

    async def _main(self) -> None:
        ready = 0

        async def client() -> None:
            nonlocal ready
            try:
                async with connect(self.url, open_timeout=10, close_timeout=5) as ws:
                    self.pids.add(str(await asyncio.wait_for(ws.recv(), 10)))
                    ready += 1
                    if ready == self.count:
                        self.connected.set()
                    while True:
                        await asyncio.wait_for(ws.recv(), 20)
            except ConnectionClosed as e:
                rcvd = e.rcvd
                self.closes.append(
                    (rcvd.code if rcvd else None, rcvd.reason if rcvd else None, time.monotonic())
                )
            except BaseException as e:
                self.errors.append(e)
                self.connected.set()

        await asyncio.gather(*(client() for _ in range(self.count)))


def probe_until(server: Server, until: float) -> list[Call]:
    """``/readyz`` and ``/hello`` on fresh connections, every 50 ms until *until*."""
    calls = []
    while time.monotonic() < until:
        calls.append(fetch(server.base_url, "/readyz", timeout=5))
        calls.append(fetch(server.base_url, "/hello", timeout=5))
        time.sleep(0.05)
    return calls


# -- drain on SIGTERM, per server -------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPECS))
def test_sigterm_drains_then_stops(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    events = tmp_path / "events"
    with serve(spec, tmp_path) as server:
        assert server.proc is not None
        warm(server, spec.workers)
        background = Background()
        sockets = None
        if spec.protocol == "asgi":
            sockets = Sockets(server.ws_url + "/ws/hold", WEBSOCKETS)
            socket_thread = sockets.start()
            assert not sockets.errors
            background.stream(server.base_url, "/asse")
        if name != "gunicorn-sync":  # a sync worker held by a stream could not be probed
            background.stream(server.base_url, "/sse")
        for tag in ("early-1", "early-2"):
            background.get(server.base_url, f"/slow?s=2&tag={tag}")
        wait_for(
            lambda: events.exists() and events.read_text().count("early-") == 2,
            "the slow requests to start",
        )

        sigterm = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        probes = probe_until(server, sigterm + DRAIN - 0.8)
        # A request that starts inside the drain period and outlives it.
        background.get(server.base_url, "/slow?s=1&tag=late")
        # Probes stop 0.6 s before the drain ends: a connection still in the listen backlog
        # when a worker closes its socket is reset (gunicorn #3397, docs/scale/deploying.md),
        # and on a loaded machine a worker can take a few hundred ms to accept.
        probes += probe_until(server, sigterm + DRAIN - 0.6)
        status = server.wait_for_exit(timeout=EXIT_BOUND + 10)
        exited = time.monotonic() - sigterm
        calls = background.join()
        output = server.output()

    readyz = [p for p in probes if p.path == "/readyz"]
    hello = [p for p in probes if p.path == "/hello"]
    first_503 = next(p for p in readyz if p.status == 503)
    turned = first_503.sent - sigterm
    print(
        f"\n{name}: /readyz 503 after {turned:.3f} s; {len(hello)} /hello during the drain;"
        f" exit after {exited:.2f} s (status {status})"
        + (f"; WebSockets on {len(sockets.pids)} worker(s)" if sockets else "")
    )
    # /readyz: 200 until the worker learns of SIGTERM, then 503 only. (uvicorn's master
    # passes the signal on within 0.5 s; the others at once.)
    after = readyz[readyz.index(first_503) :]
    assert {p.status for p in readyz[: readyz.index(first_503)]} <= {200}
    assert {p.status for p in after} == {503}, [(p.status, p.done - sigterm) for p in after]
    assert turned < (1.0 if name == "uvicorn" else 0.5)
    assert '"status":"draining"' in first_503.body.replace(" ", "")
    # Everything else is served through the drain period.
    assert {p.status for p in hello} == {200}, [(p.status, p.sent - sigterm) for p in hello]
    slow = [c for c in calls if c.path.startswith("/slow")]
    assert [(c.status, c.body) for c in slow] == [(200, "slow done")] * 3
    late = next(c for c in slow if "late" in c.path)
    assert late.done > sigterm + DRAIN  # it was in flight when the server began to stop
    streams = [c for c in calls if c.path in ("/sse", "/asse")]
    for stream in streams:  # ended cleanly when the drain period ended
        assert stream.status == 200, stream
        assert int(stream.body) > 5
        assert stream.done >= sigterm + DRAIN
    if sockets is not None:
        socket_thread.join(10)
        assert not sockets.errors
        assert len(sockets.closes) == WEBSOCKETS
        assert {(code, reason) for code, reason, _ in sockets.closes} == {(1012, "service restart")}
        assert min(at for _, _, at in sockets.closes) >= sigterm + DRAIN
    assert output.count("draining (SIGTERM)") == spec.workers, output
    assert "did not stop within" not in output
    assert exited < EXIT_BOUND


# -- the drain endpoint recipe ----------------------------------------------------------------


def test_drain_endpoint_recipe_then_sigterm(tmp_path: Path) -> None:
    """For a server whose SIGTERM carboy cannot chain (turned off here): ``POST /drainz``
    from loopback drains every worker (the marker), streams and WebSockets close after the
    drain period, and SIGTERM afterwards stops the server at once."""
    spec = SPECS["uvicorn"]
    with serve(spec, tmp_path, HEALTH_APP_NO_CHAIN="1") as server:
        assert server.proc is not None
        workers = warm(server, spec.workers)
        sockets = Sockets(server.ws_url + "/ws/hold", 6)
        socket_thread = sockets.start()
        background = Background()
        background.stream(server.base_url, "/asse")

        started = time.monotonic()
        answer = httpx.post(server.base_url + "/drainz", timeout=5)
        assert answer.status_code == 202
        assert answer.json()["began"] is True
        draining: set[int] = set()
        hello = []
        deadline = time.monotonic() + 10
        while draining != workers and time.monotonic() < deadline:
            ready = httpx.get(server.base_url + "/readyz", timeout=5)
            assert ready.status_code == 503
            draining.add(ready.json()["drain"]["pid"])
            hello.append(fetch(server.base_url, "/hello").status)
        assert draining == workers  # the marker reached the worker the POST did not
        assert set(hello) == {200}
        socket_thread.join(DRAIN + 10)
        assert {(code, reason) for code, reason, _ in sockets.closes} == {(1012, "service restart")}
        assert min(at for _, _, at in sockets.closes) >= started + DRAIN
        # The drain period is over: SIGTERM now stops the server without waiting.
        stopping = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        server.wait_for_exit(timeout=10)
        exited = time.monotonic() - stopping
        stream = background.join()[0]
    print(f"\nrecipe: every worker draining; exit {exited:.2f} s after SIGTERM")
    assert stream.status == 200 and stream.done >= started + DRAIN
    assert exited < 2.0
    # Removed by the worker that wrote it, when its drain period ended.
    assert not (tmp_path / "drain-marker").exists()


# -- /readyz cache and Redis --------------------------------------------------------------------


def ping_calls(redis_server: RedisServer) -> int:
    with redis_server.client() as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


def test_readyz_costs_one_ping_per_second_per_worker(tmp_path: Path) -> None:
    spec = SPECS["gunicorn-gthread"]
    with (
        RedisServer() as redis_server,
        serve(spec, tmp_path, HEALTH_APP_REDIS_URL=redis_server.url) as server,
    ):
        warm(server, spec.workers)
        before = ping_calls(redis_server)
        seconds = 3.0
        deadline = time.monotonic() + seconds

        slowest = [0.0]

        def ask() -> list[int]:
            codes = []
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                while time.monotonic() < deadline:
                    sent = time.monotonic()
                    codes.append(client.get("/readyz").status_code)
                    slowest[0] = max(slowest[0], time.monotonic() - sent)
            return codes

        with ThreadPoolExecutor(16) as pool:
            codes = [c for batch in pool.map(lambda _: ask(), range(16)) for c in batch]
        pings = ping_calls(redis_server) - before
        print(
            f"\n{len(codes)} /readyz in {seconds:.0f} s over {spec.workers} workers"
            f" (slowest {slowest[0]:.3f} s): {pings} PINGs"
        )
        assert set(codes) == {200}
        assert len(codes) > 50  # many at once (hundreds to thousands, with the machine idle)
        # One refresh per worker per second (TTL 1 s), plus the one each may start at
        # the edges of the window.
        assert 1 <= pings <= spec.workers * (seconds + 2)

        redis_server.stop()
        answers = []
        for _ in range(10):
            ready = httpx.get(server.base_url + "/readyz", timeout=10)
            live = httpx.get(server.base_url + "/livez", timeout=10)
            answers.append((ready.status_code, live.status_code))
            if ready.status_code == 503:
                body = ready.json()
                assert body["failing"] == ["redis"]
                assert body["checks"]["redis"]["ok"] is False
            time.sleep(0.15)
        # Cached "ready" answers may last a TTL; then 503, and never a 500.
        assert answers[-1] == (503, 200)
        assert {s for pair in answers for s in pair} <= {200, 503}


# -- overload ---------------------------------------------------------------------------------


async def _burst(port: int, path: str, count: int, rounds: int, pid: int) -> list[t.Any]:
    """*rounds* bursts of *count* requests at once, each on its own connection opened
    beforehand (so the burst measures the server, not the client's connecting)."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[t.Any, ...]:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        done = time.monotonic()
        status = int(head.split(" ", 2)[1])
        length = int(re.search(r"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        retry = re.search(r"(?i)retry-after: *(\d+)", head)
        return status, done, retry.group(1) if retry else None

    results = []
    try:
        for _ in range(rounds):
            start = time.monotonic()
            answers = await asyncio.gather(*(one(r, w) for r, w in conns))
            results.append((start, answers, psutil.Process(pid).memory_info().rss))
    finally:
        for _, writer in conns:
            writer.close()
    return results


@pytest.mark.parametrize(
    ("name", "path"),
    [("uvicorn", "/aslow?s=1.5"), ("uvicorn", "/slow?s=1.5"), ("granian-wsgi", "/slow?s=1.5")],
    ids=["uvicorn-async", "uvicorn-sync", "granian-wsgi"],
)
def test_overload_refuses_the_excess_at_once(name: str, path: str, tmp_path: Path) -> None:
    base = SPECS[name]
    command = uvicorn() if name == "uvicorn" else granian("wsgi")
    spec = Spec(name, base.protocol, 1, command)
    with serve(spec, tmp_path, HEALTH_APP_LIMIT="8") as server:
        assert server.proc is not None
        worker = server.proc.pid
        children = psutil.Process(worker).children()
        if children:  # granian: the worker is the master's child
            worker = children[0].pid
        rss_before = psutil.Process(worker).memory_info().rss
        rounds = asyncio.run(_burst(server.port, path, 200, 3, worker))
        assert httpx.get(server.base_url + "/readyz", timeout=5).status_code == 200
    report = []
    for start, answers, rss in rounds:
        admitted = [done for status, done, _ in answers if status == 200]
        refused = [done for status, done, _ in answers if status == 503]
        retry = {r for status, _, r in answers if status == 503}
        report.append(
            f"{len(admitted)} admitted, {len(refused)} refused (slowest 503 after"
            f" {max(refused) - start:.3f} s, first 200 after {min(admitted) - start:.2f} s),"
            f" RSS {rss / 1e6:.0f} MB"
        )
        assert len(admitted) + len(refused) == 200
        assert 8 <= len(admitted) <= 16  # 8 at once; a few more if a burst took long to send
        assert retry == {"1"}
        # Fast: every 503 came back before the first admitted request finished.
        assert max(refused) < min(admitted)
    print(f"\n{name} {path}: RSS {rss_before / 1e6:.0f} MB before; " + "; ".join(report))
    # Memory stays bounded: flat from the first burst to the last.
    assert rounds[-1][2] - rounds[0][2] < 20e6
