"""carboy.scale.broadcast in one process: the behaviour every backend shares (run against the
in-process backend, on the machine's Redis the streams and pub/sub backends, and on the
machine's PostgreSQL the postgres backend), what differs (resume, gaps), the slow-consumer
policies, draining, and the SSE and WebSocket helpers driven through ASGI. The multi-worker
proofs are in tests/test_scale_realtime.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import typing as t
import uuid
from collections.abc import Callable, Coroutine, Iterator

import psycopg
import pytest

import carboy
from carboy import request, websocket
from carboy.scale.broadcast import (
    Broadcast,
    Gap,
    Message,
    SlowConsumer,
    Subscription,
    parse_id,
)
from carboy.scale.broadcast_http import format_event
from pg_servers import machine_postgres_or_skip
from redis_servers import MACHINE_URL, machine_redis_or_skip
from test_scale_sessions import cluster  # noqa: F401 (the 3-node Redis Cluster fixture)

BACKENDS = ["memory", "streams", "pubsub", "postgres"]
REDIS_BACKENDS = ["streams", "pubsub"]
#: The machine's PostgreSQL, as libpq spells it (the postgres backend's tests).
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


class Env:
    """An app with a Broadcast on *backend*, its key prefix, and the gaps it reported."""

    def __init__(self, backend: str, redis_url: str = MACHINE_URL, **config: t.Any) -> None:
        self.prefix = f"test-broadcast-{uuid.uuid4().hex[:8]}:"
        self.app = carboy.Carboy(__name__)
        self.app.config.update(
            BROADCAST_BACKEND=backend,
            BROADCAST_KEY_PREFIX=self.prefix,
            BROADCAST_LINGER=0.05,
            BROADCAST_KEY_TTL=120,
            **config,
        )
        if backend == "postgres":  # a table of its own, dropped afterwards (made_env)
            self.table = f"test_broadcast_{uuid.uuid4().hex[:8]}"
            self.app.config.update(
                BROADCAST_POSTGRES_URL=PG_URL, BROADCAST_POSTGRES_TABLE=self.table
            )
        elif backend != "memory":
            self.app.config["REDIS_URL"] = redis_url
        self.gaps: list[Gap] = []
        self.broadcast = Broadcast(self.app, on_gap=self.gaps.append)

    def run(self, main: Callable[[], Coroutine[t.Any, t.Any, t.Any]]) -> t.Any:
        """Run *main* on a new event loop, then close this loop's Redis client."""

        async def wrapper() -> t.Any:
            try:
                return await asyncio.wait_for(main(), 30)
            finally:
                layer = self.app.extensions.get("carboy.redis")
                if layer is not None:
                    await layer.aio.aclose()
                await self.broadcast.backend.aclose()  # postgres: this loop's listener, pool

        return asyncio.run(wrapper())


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with made_env(request.param) as made:
        yield made


@pytest.fixture(params=REDIS_BACKENDS)
def redis_env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with made_env(request.param) as made:
        yield made


@contextlib.contextmanager
def made_env(backend: str, **config: t.Any) -> Iterator[Env]:
    """An :class:`Env`; its Redis keys (or PostgreSQL table) are deleted afterwards."""
    if backend == "postgres":
        machine_postgres_or_skip()
    client = machine_redis_or_skip() if backend in REDIS_BACKENDS else None
    made = Env(backend, **config)
    try:
        yield made
    finally:
        if backend == "postgres":
            made.broadcast.backend.close()
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{made.table}"')
        if client is not None:
            for key in client.scan_iter(made.prefix + "*"):
                client.delete(key)
            client.close()


async def take(sub: Subscription, n: int, timeout: float = 5.0) -> list[Message]:
    out = []
    for _ in range(n):
        message = await sub.get(timeout)
        assert message is not None, f"only {len(out)} of {n} messages arrived"
        out.append(message)
    return out


def own_reader_ids(kind: str) -> list[int]:
    """The ids of this process's broadcast reader connections on the machine's Redis (or
    the server pids of its listening connections on the machine's PostgreSQL)."""
    if kind == "postgres":
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                [f"carboy-broadcast:postgres:{os.getpid()}"],
            ).fetchall()
        return [int(pid) for (pid,) in rows]
    client = machine_redis_or_skip()
    name = f"carboy-broadcast:{kind}:{os.getpid()}"
    return [int(c["id"]) for c in client.client_list() if c["name"] == name]


# -- what every backend does -------------------------------------------------------------------


def test_every_subscriber_gets_every_message_in_order(env: Env) -> None:
    b = env.broadcast

    async def main() -> None:
        async with b.subscribe("room") as one, b.subscribe("room") as two:
            ids = [b.publish("room", f"m{i}") for i in range(5)]
            ids.append(await b.apublish("room", b"\x00raw"))
            ids.append(await b.apublish("room", {"n": 1}))
            got_one, got_two = await take(one, 7), await take(two, 7)
            assert [m.id for m in got_one] == [m.id for m in got_two] == ids
            assert sorted(ids, key=parse_id) == ids and len(set(ids)) == 7
            expected = [*(f"m{i}" for i in range(5)), b"\x00raw", '{"n": 1}']
            assert [m.data for m in got_one] == expected
            assert got_one[-1].json() == {"n": 1}
            assert {m.channel for m in got_one} == {"room"}
            # Another channel's messages do not arrive here.
            b.publish("elsewhere", "x")
            assert await one.get(0.2) is None

    env.run(main)
    assert env.gaps == []


def test_one_reader_per_channel_per_process(env: Env) -> None:
    b = env.broadcast

    async def main() -> None:
        subs = [await b.subscribe("a").start() for _ in range(40)]
        subs += [await b.subscribe("b").start() for _ in range(10)]
        assert b.stats() == {"channels": 2, "subscribers": 50, "pending": 0}
        kind = env.app.config["BROADCAST_BACKEND"]
        if kind != "memory":  # postgres: one listening connection for every channel
            assert len(own_reader_ids(kind)) == (1 if kind == "postgres" else 2)
        b.publish("a", "to a")
        for sub in subs[:40]:
            assert (await take(sub, 1))[0].data == "to a"
        for sub in subs:
            await sub.aclose()
        assert b.stats()["subscribers"] == 0
        await asyncio.sleep(0.3)  # BROADCAST_LINGER: the readers stop
        assert b.stats()["channels"] == 0
        if env.app.config["BROADCAST_BACKEND"] != "memory":
            assert own_reader_ids(env.app.config["BROADCAST_BACKEND"]) == []

    env.run(main)


def test_publish_from_threads_keeps_each_publishers_order(env: Env) -> None:
    b = env.broadcast

    async def main() -> None:
        async with b.subscribe("t") as sub:

            def publisher(n: int) -> None:
                for i in range(50):
                    b.publish("t", f"{n}:{i}")

            threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            got = await take(sub, 200)
            for thread in threads:
                thread.join()
            for n in range(4):
                assert [m.data for m in got if m.data.startswith(f"{n}:")] == [  # type: ignore[union-attr]
                    f"{n}:{i}" for i in range(50)
                ]
            assert [m.id for m in got] == sorted((m.id for m in got), key=parse_id)

    env.run(main)


def test_slow_consumer_is_closed_and_the_others_get_everything(env: Env) -> None:
    b = env.broadcast

    async def main() -> None:
        async with (
            b.subscribe("s", queue_size=5, overflow="close") as slow,
            b.subscribe("s") as fast,
        ):
            for i in range(12):
                await b.apublish("s", str(i))
            assert [m.data for m in await take(fast, 12)] == [str(i) for i in range(12)]
            assert slow.ended == "slow" and slow.peak == 5 and slow.pending == 0
            with pytest.raises(SlowConsumer):
                await slow.get(1)
            assert b.stats()["subscribers"] == 1  # it left the channel

    env.run(main)


def test_drop_oldest_reports_the_dropped_messages_as_a_gap(env: Env) -> None:
    b = env.broadcast
    seen: list[Gap] = []

    async def main() -> None:
        sub = b.subscribe("d", queue_size=5, overflow="drop_oldest", on_gap=seen.append)
        async with sub:
            ids = [b.publish("d", str(i)) for i in range(3)]
            assert [m.data for m in await take(sub, 1)] == ["0"]
            ids += [b.publish("d", str(i)) for i in range(3, 12)]
            await asyncio.sleep(0.3)  # all delivered to the queue
            assert sub.pending == 5 and sub.peak == 5 and sub.dropped == 6
            rest = await take(sub, 5)
            assert [m.data for m in rest] == [str(i) for i in range(7, 12)]
        assert seen == [Gap("d", "overflow", ids[0], ids[6], 6)]

    env.run(main)


def test_close_all_drains_every_subscription(env: Env) -> None:
    b = env.broadcast

    async def main() -> None:
        sub = await b.subscribe("x").start()
        waiting = asyncio.ensure_future(sub.get())
        await asyncio.sleep(0.05)
        # From another thread, the way a drain that does not import the module calls it.
        drain = env.app.extensions["carboy.broadcast"].close_all
        threading.Thread(target=drain, args=(1012,)).start()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)
        assert sub.ended == "drain" and sub.close_code == 1012
        assert b.draining
        late = b.subscribe("x")
        assert [m async for m in late] == []
        assert late.ended == "drain"

    env.run(main)


# -- resume ------------------------------------------------------------------------------------


def test_resume_after_an_id(env: Env) -> None:
    b = env.broadcast
    kept = env.app.config["BROADCAST_BACKEND"] in ("memory", "streams")
    seen: list[Gap] = []

    async def main() -> None:
        async with b.subscribe("r") as live:  # keeps this process's reader running
            ids = [b.publish("r", f"m{i}") for i in range(6)]
            await take(live, 6)
            async with b.subscribe("r", last_id=ids[2], on_gap=seen.append) as resumed:
                ids.append(b.publish("r", "m6"))
                if kept:
                    got = await take(resumed, 4)
                    assert [m.data for m in got] == ["m3", "m4", "m5", "m6"]
                    assert [m.id for m in got] == ids[3:]
                else:  # nothing kept: told how many it missed, then live
                    assert [m.data for m in await take(resumed, 1)] == ["m6"]
            # A client ahead of this process's reader (it resumed elsewhere): nothing twice.
            async with b.subscribe("r", last_id=ids[-1]) as ahead:
                ids.append(b.publish("r", "m7"))
                assert [m.data for m in await take(ahead, 1)] == ["m7"]
            # An id that is not one is ignored: from now on.
            async with b.subscribe("r", last_id="not-an-id") as fresh:
                b.publish("r", "m8")
                assert [m.data for m in await take(fresh, 1)] == ["m8"]

    env.run(main)
    if kept:
        assert seen == []
    else:
        assert [(g.reason, g.missed) for g in seen] == [("no_history", 3)]


@pytest.mark.parametrize("backend", ["memory", "streams"])
def test_resume_from_a_trimmed_id_reports_a_gap(backend: str) -> None:
    seen: list[Gap] = []
    with made_env(backend, BROADCAST_MAXLEN=5, BROADCAST_MAXLEN_APPROXIMATE=False) as made:
        b = made.broadcast

        async def main() -> list[str]:
            ids = [b.publish("tr", str(i)) for i in range(20)]
            async with b.subscribe("tr", last_id=ids[3], on_gap=seen.append) as sub:
                assert [m.data for m in await take(sub, 5)] == [str(i) for i in range(15, 20)]
            async with b.subscribe("tr", last_id=ids[16], on_gap=seen.append) as sub:
                assert [m.data for m in await take(sub, 3)] == ["17", "18", "19"]
            return ids

        ids = made.run(main)
    assert seen == [Gap("tr", "trimmed", ids[3], None, None)]


# -- Redis: gaps and reconnects ----------------------------------------------------------------


def test_pubsub_sequence_jump_is_reported() -> None:
    with made_env("pubsub") as made:
        b = made.broadcast
        seen: list[Gap] = []

        async def main() -> None:
            async with b.subscribe("q", on_gap=seen.append) as sub:
                first = b.publish("q", "a")
                # A message this process never received (as if Redis dropped it).
                machine_redis_or_skip().incr(made.prefix + "seq:q")
                b.publish("q", "c")
                assert [m.data for m in await take(sub, 2)] == ["a", "c"]
                assert seen == [Gap("q", "sequence", first, str(int(first) + 1), 1)]

        made.run(main)
        assert made.gaps == seen


def test_reader_connection_killed_streams_lose_nothing_pubsub_report_the_gap(
    redis_env: Env,
) -> None:
    b = redis_env.broadcast
    kind = redis_env.app.config["BROADCAST_BACKEND"]
    seen: list[Gap] = []
    killer = machine_redis_or_skip()

    async def main() -> None:
        async with b.subscribe("k", on_gap=seen.append) as sub:
            b.publish("k", "before")
            assert [m.data for m in await take(sub, 1)] == ["before"]
            ids = own_reader_ids(kind)
            assert len(ids) == 1
            # Kill the reader's connection and publish in the same transaction: the message
            # is published while this process is not subscribed.
            with killer.pipeline(transaction=True) as pipe:
                pipe.execute_command("CLIENT", "KILL", "ID", ids[0])
                key = redis_env.prefix + "k"
                if kind == "streams":
                    pipe.execute_command("XADD", key, "*", "d", "during")
                else:
                    pipe.eval(
                        "local n = redis.call('INCR', KEYS[1]);"
                        " redis.call('PUBLISH', ARGV[1], n .. ':sduring'); return n",
                        1, redis_env.prefix + "seq:k", key,
                    )  # fmt: skip
                pipe.execute()
            killed = time.monotonic()
            while own_reader_ids(kind) in ([], ids):  # bounded by wait_for
                await asyncio.sleep(0.01)
            back = time.monotonic() - killed
            assert back < 1.0, f"reconnected after {back:.3f} s"
            if kind == "pubsub":  # a new connection is not yet a subscription: wait for it
                while killer.pubsub_numsub(key)[0][1] < 1:  # bounded by wait_for
                    await asyncio.sleep(0.01)
            b.publish("k", "after")
            expected = ["during", "after"] if kind == "streams" else ["after"]
            assert [m.data for m in await take(sub, len(expected))] == expected

    redis_env.run(main)
    if kind == "streams":
        assert seen == [] and redis_env.gaps == []
    else:
        assert [(g.reason, g.missed) for g in seen] == [("reconnect", 1)]
        assert redis_env.gaps == seen


def test_worker_shutdown_stops_the_readers(redis_env: Env) -> None:
    b = redis_env.broadcast
    kind = redis_env.app.config["BROADCAST_BACKEND"]

    async def main() -> None:
        await b.subscribe("z").start()
        assert b.stats()["channels"] == 1 and len(own_reader_ids(kind)) == 1
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, t.Any]] = []

        async def receive() -> dict[str, t.Any]:
            return inbox.pop(0)

        async def send(message: dict[str, t.Any]) -> None:
            sent.append(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        await redis_env.app(scope, receive, send)  # type: ignore[arg-type]
        assert [m["type"] for m in sent] == [
            "lifespan.startup.complete", "lifespan.shutdown.complete"
        ]  # fmt: skip
        assert b.stats()["channels"] == 0
        for _ in range(100):  # Redis sees the closed socket at once, or nearly
            if not own_reader_ids(kind):
                break
            await asyncio.sleep(0.01)
        assert own_reader_ids(kind) == []

    redis_env.run(main)


# -- configuration -----------------------------------------------------------------------------


def test_default_backend_follows_redis_url() -> None:
    app = carboy.Carboy(__name__)
    assert Broadcast(app).backend.name == "memory"
    app = carboy.Carboy(__name__)
    app.config["REDIS_URL"] = MACHINE_URL
    assert Broadcast(app).backend.name == "streams"


@pytest.mark.parametrize(
    "config", [{"BROADCAST_BACKEND": "kafka"}, {"BROADCAST_SLOW_CONSUMER": "ignore"}]
)
def test_bad_config_is_a_clear_error(config: dict[str, str]) -> None:
    app = carboy.Carboy(__name__)
    app.config.update(config)
    with pytest.raises(ValueError, match=r"BROADCAST|backend"):
        Broadcast(app)


def test_subscription_arguments_are_checked() -> None:
    b = Broadcast(carboy.Carboy(__name__))
    with pytest.raises(ValueError, match="overflow"):
        b.subscribe("c", overflow="nope")
    with pytest.raises(ValueError, match="queue_size"):
        b.subscribe("c", queue_size=-1)


# -- the SSE helper ----------------------------------------------------------------------------


def http_scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, t.Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *(headers or [])],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


class Stream:
    """An ASGI HTTP exchange whose body is read as it comes, until :meth:`disconnect`."""

    def __init__(self, app: carboy.Carboy, scope: dict[str, t.Any]) -> None:
        self.start: dict[str, t.Any] = {}
        self.body = b""
        self.ended = asyncio.Event()
        self.arrived = asyncio.Event()
        self._gone = asyncio.Event()
        self.task = asyncio.ensure_future(app(scope, self.receive, self.send))

    async def receive(self) -> dict[str, t.Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, t.Any]) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        else:
            self.body += message.get("body", b"")
            self.arrived.set()
            if not message.get("more_body"):
                self.ended.set()

    async def until(self, text: str, timeout: float = 5.0) -> None:
        async def wait() -> None:
            while text not in self.body.decode():
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), timeout)

    async def disconnect(self) -> None:
        self._gone.set()
        await asyncio.wait_for(self.task, 5)

    def events(self) -> list[dict[str, str]]:
        out = []
        for block in self.body.decode().split("\n\n"):
            event: dict[str, str] = {}
            for line in block.split("\n"):
                if line and not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    event[name] = event[name] + "\n" + value if name in event else value
            if event:
                out.append(event)
        return out


def sse_app(backend: str = "memory", **config: t.Any) -> Env:
    made = Env(backend, BROADCAST_SSE_RETRY=1500, **config)

    @made.app.get("/events/<channel>")
    def events(channel: str) -> t.Any:
        return made.broadcast.sse(channel, heartbeat=float(request.args.get("beat", "15")))

    return made


def test_sse_streams_events_with_ids_retry_and_heartbeats() -> None:
    made = sse_app()
    b = made.broadcast

    async def main() -> None:
        stream = Stream(made.app, http_scope("/events/news"))
        await stream.until("retry: 1500\n\n")  # sent once subscribed
        assert stream.start["status"] == 200
        headers = dict(stream.start["headers"])
        assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
        assert headers[b"cache-control"] == b"no-cache"
        first = b.publish("news", "one")
        second = b.publish("news", "two\nlines")
        await stream.until("data: lines")
        await stream.disconnect()
        assert stream.events() == [
            {"retry": "1500"},
            {"id": first, "data": "one"},
            {"id": second, "data": "two\nlines"},
        ]
        assert b.stats()["subscribers"] == 0  # the stream left when the client did

        beating = Stream(made.app, {**http_scope("/events/quiet"), "query_string": b"beat=0.05"})
        await beating.until(":\n\n:\n\n")
        await beating.disconnect()

    made.run(main)


def test_sse_resumes_from_last_event_id_and_ends_at_drain() -> None:
    made = sse_app()
    b = made.broadcast

    async def main() -> None:
        ids = [b.publish("feed", f"m{i}") for i in range(5)]
        header = [(b"last-event-id", ids[1].encode())]
        stream = Stream(made.app, http_scope("/events/feed", header))
        await stream.until("data: m4")
        assert [e.get("data") for e in stream.events()[1:]] == ["m2", "m3", "m4"]
        b.close_all()
        await asyncio.wait_for(stream.ended.wait(), 5)
        assert stream.body.endswith(b": end\n\n")
        await stream.disconnect()

    made.run(main)


def test_sse_sends_gaps_as_named_events() -> None:
    with made_env("pubsub") as made:

        @made.app.get("/events/<channel>")
        def events(channel: str) -> t.Any:
            return made.broadcast.sse(channel)

        b = made.broadcast

        async def main() -> None:
            first = b.publish("g", "a")
            header = [(b"last-event-id", b"0")]
            stream = Stream(made.app, http_scope("/events/g", header))
            await stream.until("event: gap")
            b.publish("g", "b")
            await stream.until("data: b")
            await stream.disconnect()
            gap, message = stream.events()[1:]
            assert gap["event"] == "gap"
            assert json.loads(gap["data"]) == {
                "channel": "g", "reason": "no_history", "after": "0", "until": first,
                "missed": 1,
            }  # fmt: skip
            assert message["data"] == "b"

        made.run(main)


def test_format_event() -> None:
    assert format_event(Message("c", "1-0", "x")) == "id: 1-0\ndata: x\n\n"
    assert format_event(Message("c", "1-0", b"a\r\nb\rc"), "tick") == (
        "id: 1-0\nevent: tick\ndata: a\ndata: b\ndata: c\n\n"
    )


def test_sse_under_wsgi() -> None:
    made = sse_app()
    b = made.broadcast
    response = made.app.test_client().get("/events/w", buffered=False)
    chunks = iter(response.response)
    assert next(chunks) == b"retry: 1500\n\n"
    first = b.publish("w", "hello")
    assert next(chunks) == f"id: {first}\ndata: hello\n\n".encode()
    response.close()
    assert b.stats()["subscribers"] == 0


# -- the WebSocket helper ----------------------------------------------------------------------


def ws_app(**config: t.Any) -> Env:
    made = Env("memory", **config)
    results: list[tuple[str, int, int]] = []  # (why it ended, queue peak, queue bound)
    made.app.config["results"] = results

    @made.app.websocket("/ws/<channel>")
    async def forward(channel: str) -> None:
        opened: list[Subscription] = []

        async def on_open(sub: Subscription) -> None:
            opened.append(sub)
            await websocket.send("hello")

        async def echo(data: str | bytes) -> None:
            await made.broadcast.apublish(channel, f"echo {data!s}")

        reason = await made.broadcast.serve_websocket(
            channel,
            request.args.get("last_id"),
            encode=(lambda m: f"{m.id} {m.data!s}") if request.args.get("ids") else None,
            on_message=echo,
            on_open=on_open,
            queue_size=request.args.get("queue", type=int),
            overflow=request.args.get("policy"),
        )
        results.append((reason, opened[0].peak, opened[0].queue_size))

    return made


def test_websocket_forwards_messages_and_client_frames() -> None:
    made = ws_app()
    b = made.broadcast
    with made.app.test_client().websocket("/ws/chat") as ws:
        assert ws.receive() == "hello"  # subscribed: nothing published from now is missed
        first = b.publish("chat", "hi")
        b.publish("chat", b"\x01bin")
        assert ws.receive() == "hi"
        assert ws.receive() == b"\x01bin"
        ws.send("ping")
        assert ws.receive() == "echo ping"
    with made.app.test_client().websocket(f"/ws/chat?ids=1&last_id={first}") as ws:
        assert ws.receive() == "hello"
        assert t.cast(str, ws.receive()).endswith(" b'\\x01bin'")
        assert t.cast(str, ws.receive()).endswith(" echo ping")
    deadline = time.monotonic() + 5
    while len(made.app.config["results"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r[0] for r in made.app.config["results"]] == ["disconnected", "disconnected"]


def test_websocket_closes_with_1012_at_drain() -> None:
    made = ws_app()
    with made.app.test_client().websocket("/ws/d") as ws:
        assert ws.receive() == "hello"
        made.broadcast.close_all()
        with pytest.raises(carboy.WebSocketDisconnect) as closed:
            ws.receive()
        assert closed.value.code == 1012


class StalledSocket:
    """An ASGI WebSocket client that accepts, then stops taking frames after *take* of them
    (its ``send`` never returns), as a client whose socket buffers are full."""

    def __init__(self, app: carboy.Carboy, path: str, take: int) -> None:
        self.take = take
        self.frames: list[t.Any] = []
        self.closed: dict[str, t.Any] | None = None
        self.stalled = asyncio.Event()
        self._gone = asyncio.Event()
        self._connected = False
        path, _, query = path.partition("?")
        scope = {
            "type": "websocket", "path": path, "raw_path": path.encode(), "root_path": "",
            "query_string": query.encode(), "headers": [(b"host", b"testserver")],
            "scheme": "ws", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
            "subprotocols": [], "asgi": {"version": "3.0"},
        }  # fmt: skip
        self.task = asyncio.ensure_future(app(scope, self.receive, self.send))

    async def receive(self) -> dict[str, t.Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        await self._gone.wait()
        return {"type": "websocket.disconnect", "code": 1001}

    async def send(self, message: dict[str, t.Any]) -> None:
        if message["type"] == "websocket.close":
            self.closed = message
            return
        if message["type"] == "websocket.send":
            if len(self.frames) >= self.take:
                self.stalled.set()
                await asyncio.Event().wait()  # never drains
            self.frames.append(message.get("text", message.get("bytes")))


def test_websocket_slow_consumer_is_closed_without_slowing_the_others() -> None:
    made = ws_app(BROADCAST_WS_CLOSE_TIMEOUT=0.2)
    b = made.broadcast

    async def main() -> None:
        slow = StalledSocket(made.app, "/ws/s?queue=10&policy=close", take=3)
        dropping = StalledSocket(made.app, "/ws/s?queue=10&policy=drop_oldest", take=3)
        fast = StalledSocket(made.app, "/ws/s", take=10**9)
        for client in (slow, dropping, fast):
            while not client.frames:  # the hello
                await asyncio.sleep(0.01)
        for i in range(500):
            await b.apublish("s", str(i))
            if i % 50 == 0:
                await asyncio.sleep(0)
        while len(fast.frames) < 501:
            await asyncio.sleep(0.01)
        assert fast.frames == ["hello", *(str(i) for i in range(500))]
        await asyncio.wait_for(slow.task, 5)
        assert slow.closed == {"type": "websocket.close", "code": 1013, "reason": "slow consumer"}
        assert made.app.config["results"][0][:2] == ("slow", 10)
        # drop_oldest: still open, its queue never above its bound.
        assert not dropping.task.done()
        assert b.stats()["pending"] <= 10
        dropping._gone.set()
        fast._gone.set()
        await asyncio.wait_for(asyncio.gather(dropping.task, fast.task), 5)
        reasons = sorted(r[0] for r in made.app.config["results"])
        assert reasons == ["disconnected", "disconnected", "slow"]
        bounded = [r for r in made.app.config["results"] if r[2] == 10]
        assert len(bounded) == 2 and all(peak == 10 for _, peak, _ in bounded)

    made.run(main)


# -- Redis unreachable -------------------------------------------------------------------------


def test_unreachable_redis_fails_fast_and_the_reader_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    from carboy.scale import broadcast as module
    from servers import free_port

    monkeypatch.setattr(module, "READY_TIMEOUT", 0.3)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    made = Env("streams", nowhere, BROADCAST_SSE_RETRY=1500)
    b = made.broadcast

    @made.app.get("/events")
    def events() -> t.Any:
        return b.sse("c")

    @made.app.websocket("/ws")
    async def ws() -> None:
        made.app.config["reason"] = await b.serve_websocket("c")

    with pytest.raises(redis.ConnectionError):
        b.publish("c", "x")

    async def main() -> None:
        with pytest.raises(redis.ConnectionError):
            await b.apublish("c", "x")
        with pytest.raises(TimeoutError):
            await b.subscribe("c").start()
        stream = Stream(made.app, http_scope("/events"))
        await asyncio.wait_for(stream.ended.wait(), 5)
        assert stream.body == b"retry: 1500\n: unavailable\n\n"
        socket = StalledSocket(made.app, "/ws", take=10)
        await asyncio.wait_for(socket.task, 5)
        assert socket.closed == {
            "type": "websocket.close", "code": 1013, "reason": "broadcast unavailable"
        }  # fmt: skip
        assert made.app.config["reason"] == "unavailable"
        await asyncio.sleep(0.3)  # BROADCAST_LINGER: nobody wants the channel, its reader stops
        assert b.stats() == {"channels": 0, "subscribers": 0, "pending": 0}

    made.run(main)


# -- Redis Cluster -----------------------------------------------------------------------------


def test_streams_on_a_redis_cluster(cluster: str) -> None:  # noqa: F811 (the fixture)
    made = Env("streams", cluster)
    b = made.broadcast

    async def main() -> None:
        async with b.subscribe("a") as one, b.subscribe("b") as two:  # keys in other slots
            ids = [b.publish("a", f"a{i}") for i in range(3)]
            ids.append(await b.apublish("a", "a3"))
            b.publish("b", "b0")
            assert [m.data for m in await take(one, 4)] == ["a0", "a1", "a2", "a3"]
            assert [m.data for m in await take(two, 1)] == ["b0"]
            async with b.subscribe("a", last_id=ids[1]) as resumed:
                assert [m.data for m in await take(resumed, 2)] == ["a2", "a3"]

    made.run(main)
    app = carboy.Carboy(__name__)
    app.config.update(REDIS_URL=cluster, BROADCAST_BACKEND="pubsub")
    with pytest.raises(ValueError, match="one Redis server"):
        Broadcast(app)


def test_publish_script_numbers_and_publishes_in_one_step() -> None:
    """``lua/broadcast_publish.lua`` on its own: the next sequence number, the TTL, and the
    ``<n>:<kind><data>`` payload on the channel."""
    from importlib import resources

    client = machine_redis_or_skip()
    prefix = f"test-broadcast-script-{uuid.uuid4().hex[:8]}:"
    source = resources.files("carboy.scale").joinpath("lua/broadcast_publish.lua").read_text()
    script = client.register_script(source)
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(prefix + "c")
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
        assert script(keys=[prefix + "seq:c"], args=[prefix + "c", b"shello", 60000]) == 1
        assert script(keys=[prefix + "seq:c"], args=[prefix + "c", b"b\x00\xff", 0]) == 2
        got = [pubsub.get_message(timeout=2) for _ in range(2)]
        assert [m["data"] for m in got] == [b"1:shello", b"2:b\x00\xff"]  # type: ignore[index]
        assert 0 < client.pttl(prefix + "seq:c") <= 60000
    finally:
        pubsub.close()
        client.delete(prefix + "seq:c")
