"""Issue 21's proofs: realtime fan-out on real servers with several workers.

``served_apps/realtime_app.py`` is served by uvicorn with 3 workers; clients run in this
process (:mod:`realtime_clients`: WebSocket clients on the ``websockets`` library's sans-I/O
protocol, SSE clients on httpx). Fan-out, resume and the slow consumer use the machine's Redis
(database 15, a key prefix of their own, deleted afterwards); the failure and idle tests start
a Redis of their own, since they kill its connections or give it an idle ``timeout``.

Figures (latency quantiles, reconnect times, RSS) are printed; the assertions are on counts
(every message, in order, once; every gap reported) with time bounds only where the issue
sets one (reconnect and gap report within 1 s). The latency target of the fan-out (p99 <= 50
ms) is asserted by ``benchmarks/realtime.py``, not here: on this 2-core machine other jobs run
at the same time, and the fan-out alone (30,000 frames a second through 3 workers and one
client process) keeps both cores busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis

import carboy
from carboy.scale.broadcast import Broadcast
from realtime_clients import WSClient, fan_out, paced, sse_events
from redis_servers import MACHINE_URL, RedisServer, machine_redis_or_skip
from servers import Server, free_port, tool

pytestmark = pytest.mark.realtime

APP = "realtime_app:app"
WORKERS = 3


def uvicorn(port: int, workers: int = WORKERS) -> list[str]:
    return [
        *tool("uvicorn"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--log-level", "warning", APP),
    ]


@contextlib.contextmanager
def served(
    log: Path, redis_url: str, prefix: str, backend: str = "streams", **env: str
) -> Iterator[Server]:
    """The realtime app under uvicorn (:data:`WORKERS` workers), up."""
    port = free_port()
    environment = {"RT_REDIS_URL": redis_url, "RT_PREFIX": prefix, "RT_BACKEND": backend, **env}
    with Server(uvicorn(port), port, log, environment) as server:
        server.wait_until_up("/pid")
        # Until every worker answers (each request on a new connection): a test that spreads
        # its clients over the workers then finds them all.
        pids: set[str] = set()
        deadline = time.monotonic() + 30
        while len(pids) < WORKERS:
            assert time.monotonic() < deadline, f"only workers {pids} answer"
            pids.add(httpx.get(server.base_url + "/pid", headers={"Connection": "close"}).text)
        yield server


def publisher(redis_url: str, prefix: str, backend: str = "streams", **config: t.Any) -> Broadcast:
    """A Broadcast in this process on the served app's channels (the test's publisher)."""
    app = carboy.Carboy(__name__)
    app.config.update(
        REDIS_URL=redis_url,
        BROADCAST_BACKEND=backend,
        BROADCAST_KEY_PREFIX=prefix,
        BROADCAST_KEY_TTL=600,
        **config,
    )
    return Broadcast(app)


@contextlib.contextmanager
def machine_prefix() -> Iterator[tuple[redis.Redis, str]]:
    client = machine_redis_or_skip()
    prefix = f"test-realtime-{uuid.uuid4().hex[:8]}:"
    try:
        yield client, prefix
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
        client.close()


def reader_names(client: redis.Redis, backend: str) -> dict[int, str]:
    """``{connection id: name}`` of the broadcast readers connected to *client*'s server."""
    prefix = f"carboy-broadcast:{backend}:"
    return {int(c["id"]): c["name"] for c in client.client_list() if c["name"].startswith(prefix)}


def records(client: redis.Redis, key: str) -> list[dict[str, t.Any]]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  [realtime] {line}")


async def spread(
    url: str,
    count: int,
    on_text: t.Callable[[], t.Callable[[str, float], None] | None] = lambda: None,
) -> list[WSClient]:
    """*count* clients of *url*, connected at once, and more until every worker has one;
    ``on_text()`` makes each one's frame callback (``None``: frames kept in ``.frames``)."""
    clients = list(await asyncio.gather(*(WSClient.connect(url, on_text()) for _ in range(count))))
    for _ in range(50):  # a worker may still be starting: wait up to 10 s for it
        pids = {(await c.hello).split()[1] for c in clients}
        if len(pids) == WORKERS:
            return clients
        await asyncio.sleep(0.2)
        # Several at once: one at a time, the kernel often hands every connection to the
        # same two workers (seen in CI with 24 clients at once and 50 single retries).
        batch = (WSClient.connect(url, on_text()) for _ in range(6))
        clients.extend(await asyncio.gather(*batch))
    pytest.fail(f"connections reached only the workers {pids}")


async def per_worker(
    url: str, each: int, on_text: t.Callable[[], t.Callable[[str, float], None] | None]
) -> dict[str, list[WSClient]]:
    """Exactly *each* clients of *url* on every worker (extra connections are closed), by
    worker pid; ``on_text()`` makes each one's frame callback (its ``on_text``).

    Connections go out in concurrent batches: one at a time, the kernel may hand every new
    connection to the same two of three workers."""
    kept: dict[str, list[WSClient]] = {}
    for _ in range(40):
        missing = each * WORKERS - sum(len(g) for g in kept.values())
        if missing == 0 and len(kept) == WORKERS:
            return kept
        batch = await asyncio.gather(
            *(WSClient.connect(url, on_text()) for _ in range(max(missing, 2 * WORKERS)))
        )
        for client in batch:
            group = kept.setdefault((await client.hello).split()[1], [])
            if len(group) < each:
                group.append(client)
            else:
                client.close()
    pytest.fail(f"could not place {each} clients on each worker: {kept}")


# -- fan-out -----------------------------------------------------------------------------------


def test_fan_out_300_websockets_on_3_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with machine_prefix() as (client, prefix):
        pub = publisher(MACHINE_URL, prefix)
        readers: dict[int, str] = {}
        with served(tmp_path / "uvicorn.log", MACHINE_URL, prefix) as server:
            result = asyncio.run(
                fan_out(
                    server.ws_url + "/ws/fan",
                    lambda text: pub.publish("fan", text),
                    clients=300,
                    messages=1000,
                    rate=100,
                    pad=40,
                    on_connected=lambda: readers.update(reader_names(client, "streams")),
                )
            )
    report(capsys, "fan-out: " + result.summary())
    assert result.complete == 300, result.summary()
    assert len(result.workers) == WORKERS and sum(result.workers.values()) == 300
    assert len(result.latencies) == 300 * 1000
    # Each worker reads the channel once, whatever its number of clients.
    assert sorted(name.rpartition(":")[2] for name in readers.values()) == sorted(result.workers)


# -- resume ------------------------------------------------------------------------------------


async def resume_run(base_url: str, pub: Broadcast, clients: int, messages: int, rate: float):
    """*clients* SSE clients; each cuts its connection once or twice mid-stream and comes
    back through another worker with ``Last-Event-ID``. Returns what each received."""
    rng = random.Random(21)
    ready = [asyncio.Event() for _ in range(clients)]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    moves: list[tuple[str, str]] = []
    gaps: list[str] = []

    async def one(i: int, http: httpx.AsyncClient) -> list[int]:
        cuts = sorted(rng.sample(range(5, messages - 10), rng.choice((1, 2))))
        got: list[int] = []
        last_id: str | None = None
        worker: str | None = None
        for _attempt in range(100):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            async with http.stream("GET", f"{base_url}/sse/resume", headers=headers) as r:
                assert r.status_code == 200
                pid = r.headers["X-Worker"]
                if pid == worker:
                    continue  # the same worker again: cut and try for another one
                if worker is not None:
                    moves.append((worker, pid))
                worker = pid
                async for event in sse_events(r):
                    if "retry" in event:
                        ready[i].set()  # subscribed
                    if event.get("event") == "gap":
                        gaps.append(event["data"])
                    if "id" not in event:
                        continue
                    last_id = event["id"]
                    got.append(int(event["data"].split(":")[0]))
                    if got[-1] == messages - 1:
                        return got
                    if cuts and len(got) >= cuts[0]:
                        cuts.pop(0)
                        break  # cut mid-stream: the connection closes unread
        pytest.fail(f"client {i} never finished: {len(got)} messages")

    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        tasks = [asyncio.ensure_future(one(i, http)) for i in range(clients)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 60)
        loop = asyncio.get_running_loop()
        sending = loop.run_in_executor(
            None, paced, lambda m: pub.publish("resume", m), messages, rate
        )
        results = await asyncio.wait_for(asyncio.gather(*tasks), messages / rate + 60)
        await sending
    return results, moves, gaps


def test_resume_300_sse_clients_through_another_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clients, messages = 300, 200
    with machine_prefix() as (_client, prefix):
        pub = publisher(MACHINE_URL, prefix)
        with served(tmp_path / "uvicorn.log", MACHINE_URL, prefix) as server:
            started = time.monotonic()
            results, moves, gaps = asyncio.run(
                resume_run(server.base_url, pub, clients, messages, rate=40)
            )
            seconds = time.monotonic() - started
    expected = list(range(messages))
    missing = sum(len(set(expected) - set(got)) for got in results)
    duplicates = sum(len(got) - len(set(got)) for got in results)
    report(
        capsys,
        f"resume: {clients} SSE clients, {len(moves)} cuts, each resumed on another worker"
        f" with Last-Event-ID: {missing} gaps, {duplicates} duplicates ({seconds:.1f} s)",
    )
    assert all(got == expected for got in results)
    assert missing == 0 and duplicates == 0 and gaps == []
    assert len(moves) >= clients and all(old != new for old, new in moves)


# -- drain -------------------------------------------------------------------------------------


class Resuming:
    """A WebSocket client's frame callback that keeps its place: frames are ``<id> <n>:...``
    (``?ids=1``); :attr:`done` resolves at message *last*."""

    def __init__(self, last: int) -> None:
        self.last = last
        self.got: list[int] = []
        self.last_id = ""
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __call__(self, text: str, _now: float) -> None:
        self.last_id, _, data = text.partition(" ")
        self.got.append(int(data.split(":")[0]))
        if self.got[-1] == self.last and not self.done.done():
            self.done.set_result(None)


def test_drained_worker_sends_its_clients_to_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``close_all(1012)`` in one worker (what a drain calls): its SSE streams end and its
    WebSockets close with 1012; the clients come back on other workers with their last id and
    miss nothing."""
    messages, rate = 300, 100
    with machine_prefix() as (_client, prefix):
        pub = publisher(MACHINE_URL, prefix)
        with served(tmp_path / "uvicorn.log", MACHINE_URL, prefix) as server:
            first: list[str] = []  # the worker of each SSE client's first stream
            ended: list[str] = []  # the worker of each SSE stream that ended before the last
            codes: list[int | None] = []  # the close codes of the WebSockets

            async def sse_client(http: httpx.AsyncClient, ready: asyncio.Event) -> list[int]:
                got: list[int] = []
                last_id: str | None = None
                for _ in range(200):
                    headers = {"Last-Event-ID": last_id} if last_id else {}
                    url = server.base_url + "/sse/drain"
                    async with http.stream("GET", url, headers=headers) as r:
                        if not ready.is_set():
                            first.append(r.headers["X-Worker"])
                        async for event in sse_events(r):
                            ready.set()
                            if "id" in event:
                                last_id = event["id"]
                                got.append(int(event["data"].split(":")[0]))
                                if got[-1] == messages - 1:
                                    return got
                        ended.append(r.headers["X-Worker"])
                    await asyncio.sleep(0.05)  # the retry: hint, shortened
                pytest.fail("an SSE client never finished")

            async def ws_client(conn: WSClient) -> list[int]:
                place = t.cast(Resuming, conn.on_text)
                for _ in range(200):
                    await asyncio.wait((conn.closed, place.done), return_when="FIRST_COMPLETED")
                    if place.done.done():
                        conn.close()
                        return place.got
                    codes.append(conn.close_code)
                    query = f"?ids=1&last_id={place.last_id}"
                    conn = await WSClient.connect(server.ws_url + "/ws/drain" + query, place)
                    await conn.hello
                pytest.fail("a WebSocket client never finished")

            async def main() -> tuple[list[list[int]], str]:
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
                async with httpx.AsyncClient(limits=limits, timeout=30) as http:
                    # SSE streams until every worker has three; seven WebSockets on each.
                    ready = [asyncio.Event() for _ in range(24)]
                    tasks = [asyncio.ensure_future(sse_client(http, e)) for e in ready]
                    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 30)
                    url = server.ws_url + "/ws/drain?ids=1"
                    ws = await per_worker(url, 7, lambda: Resuming(messages - 1))
                    # Drain the worker with the most SSE streams (it has 7 WebSockets too).
                    target = max(set(first), key=first.count)
                    tasks += [asyncio.ensure_future(ws_client(c)) for g in ws.values() for c in g]
                    loop = asyncio.get_running_loop()
                    send = lambda m: pub.publish("drain", m)  # noqa: E731
                    sending = loop.run_in_executor(None, paced, send, messages, rate)
                    await asyncio.sleep(1.0)
                    for _ in range(200):
                        r = await http.post(f"{server.base_url}/drain?pid={target}")
                        if r.status_code == 200:
                            break
                    drained = r.text
                    assert drained == target
                    results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
                    await sending
                return results, drained

            results, drained = asyncio.run(main())
    report(
        capsys,
        f"drain: worker {drained} drained mid-stream: {ended.count(drained)} SSE streams ended"
        f" and {codes.count(1012)} WebSockets closed with 1012 there; all {len(results)}"
        f" clients got all {messages} messages in order, once",
    )
    assert all(got == list(range(messages)) for got in results)
    assert ended.count(drained) >= first.count(drained) >= 8 and set(ended) == {drained}
    assert codes.count(1012) >= 7 and set(codes) == {1012}


# -- failures: reader connections killed -------------------------------------------------------


@pytest.mark.parametrize("backend", ["streams", "pubsub"])
def test_reader_connections_killed_mid_run(
    backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"kill-{uuid.uuid4().hex[:8]}:"
    messages, rate = 300, 100
    with RedisServer() as rs:
        admin = rs.client()
        pub = publisher(rs.url, prefix, backend)
        with served(tmp_path / "uvicorn.log", rs.url, prefix, backend) as server:
            frames: list[list[str]] = []

            def collector() -> t.Callable[[str, float], None]:
                mine: list[str] = []
                frames.append(mine)
                return lambda text, _now: mine.append(text)

            async def main() -> tuple[float, float]:
                conns = await spread(server.ws_url + "/ws/kill?ids=1", 24, collector)
                loop = asyncio.get_running_loop()
                sending = loop.run_in_executor(
                    None, paced, lambda m: pub.publish("kill", m), messages, rate
                )
                await asyncio.sleep(1.0)
                killed = reader_names(admin, backend)
                assert len(killed) == WORKERS
                # Kill every reader and publish in the same transaction: that message is
                # published while no worker reads the channel.
                key = prefix + "kill"
                with admin.pipeline(transaction=True) as pipe:
                    for conn_id in killed:
                        pipe.execute_command("CLIENT", "KILL", "ID", conn_id)
                    if backend == "streams":
                        pipe.execute_command("XADD", key, "*", "d", "during")
                    else:
                        pipe.eval(
                            "local n = redis.call('INCR', KEYS[1]);"
                            " redis.call('PUBLISH', ARGV[1], n .. ':sduring'); return n",
                            1, prefix + "seq:kill", key,
                        )  # fmt: skip
                    kill_time = time.time()
                    pipe.execute()
                t0 = time.monotonic()
                while True:
                    now = reader_names(admin, backend)
                    if len(now) == WORKERS and not set(now) & set(killed):
                        break
                    assert time.monotonic() - t0 < 5, f"readers not back: {now}"
                    await asyncio.sleep(0.005)
                back = time.monotonic() - t0
                await sending
                await asyncio.sleep(1.0)  # the last deliveries
                for conn in conns:
                    conn.close()
                return kill_time, back

            kill_time, back = asyncio.run(main())
            gap_records = records(admin, prefix + "gaps")
            if backend == "streams":
                published = [raw[0].decode() for raw in admin.xrange(prefix + "kill")]
            else:
                published = [str(n) for n in range(1, int(admin.get(prefix + "seq:kill")) + 1)]

    received = [[f.split(" ", 1)[0] for f in got if not f.startswith("gap ")] for got in frames]
    reported = [[json.loads(f[4:]) for f in got if f.startswith("gap ")] for got in frames]
    assert back < 1.0, f"readers reconnected after {back:.3f} s"
    if backend == "streams":
        report(
            capsys,
            f"CLIENT KILL, streams: {len(frames)} clients got all {len(published)} messages;"
            f" readers back in {back * 1000:.0f} ms",
        )
        assert all(got == published for got in received)
        assert gap_records == [] and reported == [[] for _ in frames]
        return
    # pub/sub: each client got every message but the ones its worker missed, and was told
    # which those were; each worker reported its gap within a second of the kill.
    delays = sorted(r["time"] - kill_time for r in gap_records)
    report(
        capsys,
        f"CLIENT KILL, pubsub: {len(gap_records)} gaps reported, {delays[0] * 1000:.0f}"
        f"-{delays[-1] * 1000:.0f} ms after the kill; readers back in {back * 1000:.0f} ms",
    )
    assert len({r["pid"] for r in gap_records}) == WORKERS
    assert all(r["reason"] == "reconnect" and r["missed"] >= 1 for r in gap_records)
    assert all(0 <= delay < 1.0 for delay in delays), delays
    for got, told in zip(received, reported, strict=True):
        missed = {
            str(n) for gap in told for n in range(int(gap["after"]) + 1, int(gap["until"]) + 1)
        }
        assert told and set(got) | missed == set(published) and not set(got) & missed
        assert got == sorted(got, key=int)


# -- idle: Redis closes idle connections -------------------------------------------------------


def test_idle_subscribers_survive_redis_idle_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with RedisServer(["--timeout", "5"]) as rs:
        admin = rs.client()
        prefix = f"idle-{uuid.uuid4().hex[:8]}:"
        with (
            served(tmp_path / "streams.log", rs.url, prefix + "s:", "streams") as streams,
            served(tmp_path / "pubsub.log", rs.url, prefix + "p:", "pubsub") as pubsub,
        ):
            servers = (streams, pubsub)

            def unnamed() -> int:
                """Connections of the workers' pools (the readers are named; ours runs
                CLIENT LIST)."""
                return sum(
                    1
                    for c in admin.client_list()
                    if not c["name"] and c["cmd"] not in ("client|list", "client")
                )

            async def main() -> list[list[str]]:
                ws = [await per_worker(s.ws_url + "/ws/idle", 3, lambda: None) for s in servers]
                got: list[list[str]] = []
                async with httpx.AsyncClient(timeout=30) as http:
                    # Every worker's pools get connections: publish through each view.
                    for server in servers:
                        for path in ("publish", "apublish"):
                            for _ in range(6):
                                r = await http.post(f"{server.base_url}/{path}/warm", content="w")
                                assert r.status_code == 200
                    assert unnamed() > 0
                    await asyncio.sleep(15)  # idle: Redis closes the pools' connections at 5 s
                    assert unnamed() == 0, admin.client_list()
                    for server in servers:
                        for path in ("publish", "apublish"):
                            r = await http.post(f"{server.base_url}/{path}/idle", content=path)
                            assert r.status_code == 200, r.text
                conns = [c for by_pid in ws for group in by_pid.values() for c in group]
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    got = [c.frames for c in conns]
                    if all(len(frames) >= 2 for frames in got):
                        break
                    await asyncio.sleep(0.02)
                for conn in conns:
                    conn.close()
                return got

            got = asyncio.run(main())
    report(capsys, f"idle: {len(got)} WebSocket clients idle 15 s under Redis timeout 5")
    assert all(frames == ["publish", "apublish"] for frames in got), got


# -- a slow consumer ---------------------------------------------------------------------------


class Latencies:
    """A fast client's frame callback: keeps ``(phase, publish time, latency)`` of each
    message ``<phase>|<n>:<publish time>:<filler>``."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, float, float]] = []

    def __call__(self, text: str, now: float) -> None:
        phase, _, rest = text.partition("|")
        sent = float(rest.split(":", 2)[1])
        self.samples.append((int(phase), sent, now - sent))


def p99(values: list[float]) -> float:
    """The 99th percentile of *values* (seconds), in milliseconds."""
    values = sorted(values)
    return values[int(0.99 * (len(values) - 1))] * 1000


def test_slow_consumer_is_bounded_and_does_not_slow_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two clients stop reading (one per slow-consumer policy, on one worker) while 10,000
    messages of 4 KB are published; two fast clients per worker read on.

    The others' latency is compared at the same time, which the other jobs on this 2-core
    machine load alike: the fast clients on the stalled clients' worker against those on the
    other workers, while the stall lasts, and (the same comparison without a stall) before and
    after it."""
    rate, pad, queue = 1000, 4000, 200
    with machine_prefix() as (client, prefix):
        pub = publisher(MACHINE_URL, prefix, BROADCAST_MAXLEN=3000)
        env = {"RT_MAXLEN": "3000"}
        with served(tmp_path / "uvicorn.log", MACHINE_URL, prefix, **env) as server:
            stalled_records: list[dict[str, t.Any]] = []
            url = server.ws_url + "/ws/slow"

            async def run_phase(n: int, count: int) -> None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(
                    None, paced, lambda m: pub.publish("slow", f"{n}|{m}"), count, rate, pad
                )
                await asyncio.sleep(0.5)

            async def stalled_pair() -> tuple[str, WSClient, WSClient]:
                """One client of each policy, on the same worker, with small buffers."""
                for _ in range(100):
                    pair = [
                        await WSClient.connect(f"{url}?queue={queue}&policy={p}", rcvbuf=4096)
                        for p in ("close", "drop_oldest")
                    ]
                    pids = {(await c.hello).split()[1] for c in pair}
                    if len(pids) == 1:
                        return pids.pop(), pair[0], pair[1]
                    for c in pair:
                        c.close()
                pytest.fail("no two connections on one worker")

            async def main() -> None:
                fast = await per_worker(url, 2, Latencies)
                seen["fast"] = fast
                await run_phase(0, 3000)  # before: only fast clients
                before = {pid: psutil.Process(int(pid)).memory_info().rss for pid in fast}
                worker, closing, dropping = await stalled_pair()
                seen["worker"] = worker
                closing.stall()
                dropping.stall()
                await run_phase(1, 10_000)
                after = {pid: psutil.Process(int(pid)).memory_info().rss for pid in fast}
                seen["rss"] = {pid: before[pid] // 2**20 for pid in fast}
                seen["grown"] = {pid: (after[pid] - before[pid]) / 2**20 for pid in fast}
                # The closing client was closed: reading again, it finds the close frame after
                # what its buffers held.
                closing.unstall()
                seen["code"] = await asyncio.wait_for(closing.closed, 30)
                dropping.abort()
                deadline = time.monotonic() + 30
                while len(stalled_records) < 2:
                    assert time.monotonic() < deadline, stalled_records
                    await asyncio.sleep(0.05)
                    found = records(client, prefix + "closed")
                    stalled_records[:] = [r for r in found if r["queue_size"] == queue]
                await run_phase(2, 3000)  # after: only fast clients again
                for group in fast.values():
                    for conn in group:
                        conn.close()

            seen: dict[str, t.Any] = {}
            asyncio.run(main())

    fast: dict[str, list[WSClient]] = seen["fast"]
    worker: str = seen["worker"]

    def samples(phases: tuple[int, ...], there: bool) -> list[tuple[float, float]]:
        """``(publish time, latency)`` of the fast clients in *phases*, on the stalled
        clients' worker (*there*) or on the others."""
        return [
            (sent, latency)
            for pid, group in fast.items()
            if (pid == worker) == there
            for conn in group
            for phase, sent, latency in t.cast(Latencies, conn.on_text).samples
            if phase in phases
        ]

    def windowed(pairs: list[tuple[float, float]]) -> float:
        """The median of the p99s of each half second of publishing: a burst of another
        job's load moves one window, not the median."""
        by_window: dict[int, list[float]] = {}
        for sent, latency in pairs:
            by_window.setdefault(int(sent * 2), []).append(latency)
        return statistics.median(p99(v) for v in by_window.values() if len(v) >= 100)

    counts = [len(samples((n,), True)) + len(samples((n,), False)) for n in range(3)]
    figures = {
        (when, there): (
            p99([latency for _, latency in samples(phases, there)]),
            windowed(samples(phases, there)),
        )
        for when, phases in (("during", (1,)), ("quiet", (0, 2)))
        for there in (True, False)
    }
    by_reason = {r["reason"]: r for r in stalled_records}  # the two stalled clients
    grown = {pid: f"{mb:+.1f}" for pid, mb in seen["grown"].items()}
    report(
        capsys,
        f"slow consumer: 10,000 x {pad} B at {rate}/s while 2 clients on worker {worker} stall:"
        f" their queues peaked at {by_reason['slow']['peak']} (close: code {seen['code']}) and"
        f" {by_reason['disconnected']['peak']} (drop_oldest: {by_reason['disconnected']['dropped']}"
        f" dropped) of {queue}; worker RSS {seen['rss']} MB grew by {grown} MB; the fast"
        " clients' p99 (and median of half-second p99s) on that worker / on the others:"
        + "".join(
            f" {when} {figures[when, True][0]:.1f} ({figures[when, True][1]:.1f}) /"
            f" {figures[when, False][0]:.1f} ({figures[when, False][1]:.1f}) ms;"
            for when in ("during", "quiet")
        ),
    )
    assert set(by_reason) == {"slow", "disconnected"}
    assert by_reason["slow"]["peak"] == queue and seen["code"] == 1013
    assert by_reason["disconnected"]["peak"] == queue
    assert by_reason["disconnected"]["dropped"] > 5000
    assert all(mb < 20 for mb in seen["grown"].values()), grown
    assert counts == [6 * 3000, 6 * 10_000, 6 * 3000]  # the others lost nothing
    # The stall does not slow the clients of its worker: against the other workers' clients
    # at the same time (which the other jobs on the machine load alike), 10% plus 5 ms, beyond
    # what the same comparison gives without a stall (the workers are not exactly alike).
    there, elsewhere = figures["during", True][1], figures["during", False][1]
    allowance = max(0.0, figures["quiet", True][1] - figures["quiet", False][1])
    assert there <= 1.10 * elsewhere + allowance + 5, figures
