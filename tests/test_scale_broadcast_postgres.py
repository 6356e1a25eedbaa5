"""The broadcast's PostgreSQL LISTEN/NOTIFY backend (carboy.scale.broadcast_postgres) on the
machine's PostgreSQL (database ``test``): what only it does. The behaviour every backend shares
runs against it in tests/test_scale_broadcast.py (``BACKENDS``).

Each test uses a table of sequence numbers and a channel prefix of its own, dropped afterwards.
Killed connections are the test's own listener's (``pg_terminate_backend`` on its server pid),
so nothing else on the server is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import typing as t
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

import carboy
from carboy.scale.broadcast import Broadcast, Gap, Message, Subscription
from carboy.scale.broadcast_postgres import (
    PAYLOAD_LIMIT,
    PostgresBackend,
    notify_channel,
    postgres_url,
)
from realtime_clients import WSClient, sse_events
from servers import Server, free_port, tool
from test_scale_broadcast import PG_URL, Env, made_env, own_reader_ids, take


@pytest.fixture
def pg() -> Iterator[Env]:
    with made_env("postgres") as made:
        yield made


def execute(query: str, params: t.Sequence[t.Any] = ()) -> list[tuple[t.Any, ...]]:
    """Run *query* on a connection of its own (autocommit); its rows."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        cursor = conn.execute(query.encode(), params)
        return cursor.fetchall() if cursor.description else []


def listener_pid(made: Env) -> int:
    """The server pid of this loop's listening connection (one per loop, for every channel)."""
    backend = t.cast(PostgresBackend, made.broadcast.backend)
    listener = backend.listener()
    assert listener is not None and listener.server_pid is not None
    return listener.server_pid


# -- gaps --------------------------------------------------------------------------------------


def test_a_sequence_jump_is_reported_with_the_numbers_missed(pg: Env) -> None:
    b = pg.broadcast
    seen: list[Gap] = []

    async def main() -> None:
        async with b.subscribe("q", on_gap=seen.append) as sub:
            first = b.publish("q", "a")
            # Two messages this process never received (as if they had been lost).
            key = notify_channel(pg.prefix, "q")
            execute(f'UPDATE "{pg.table}" SET seq = seq + 2 WHERE channel = %s', [key])
            last = await b.apublish("q", "d")
            assert [m.data for m in await take(sub, 2)] == ["a", "d"]
            assert (first, last) == ("1", "4")
            assert seen == [Gap("q", "sequence", "1", "3", 2)]

    pg.run(main)
    assert pg.gaps == seen


def test_listener_killed_mid_run_reports_exactly_what_it_missed(pg: Env) -> None:
    """A publisher thread sends 300 messages, one every 2 ms; mid-run the listener's
    connection is killed (``pg_terminate_backend``) and three more are published before it
    can come back. Every number is then either delivered, in order, or in a reported gap,
    never both; the gap is reported, and the listener back, within a second."""
    b = pg.broadcast
    gap_times: list[float] = []
    got: list[Message | Gap] = []

    def on_gap(gap: Gap) -> None:
        gap_times.append(time.monotonic())

    pg.broadcast.on_gap = on_gap
    count = 300
    stop = threading.Event()  # set once the listener is back

    def publisher() -> None:
        for i in range(count):
            if stop.is_set():
                return
            b.publish("k", f"p{i}")
            time.sleep(0.002)

    async def main() -> None:
        async with b.subscribe("k") as sub:
            first = b.publish("k", "start")
            assert (await take(sub, 1))[0].id == first
            thread = threading.Thread(target=publisher)
            thread.start()
            try:
                await asyncio.sleep(0.2)
                old = listener_pid(pg)
                # This loop is blocked until the three are committed: the listener cannot
                # reconnect before, so they are missed for sure (as may be the thread's).
                killed = time.monotonic()
                assert execute("SELECT pg_terminate_backend(%s, 5000)", [old]) == [(True,)]
                during = [b.publish("k", f"during{i}") for i in range(3)]
                while own_reader_ids("postgres") in ([], [old]):  # bounded by Env.run
                    await asyncio.sleep(0.005)
                back = time.monotonic() - killed
                assert back < 1.0, f"reconnected after {back:.3f} s"
                while not gap_times:  # LISTENing again once the gap is known
                    await asyncio.sleep(0.005)
            finally:
                stop.set()
                await asyncio.to_thread(thread.join)  # the loop goes on delivering meanwhile
            last = b.publish("k", "end")
            while True:
                item = await sub.get(5, gaps=True)
                assert item is not None, "the last message did not arrive"
                got.append(item)
                if isinstance(item, Message) and item.id == last:
                    break
            gaps = [g for g in got if isinstance(g, Gap)]
            assert gaps and all(g.reason == "reconnect" for g in gaps)
            reported = gap_times[0] - killed
            assert reported < 1.0, f"gap reported after {reported:.3f} s"
            # Every number from the first to the last exactly once: delivered or missed.
            numbers: list[int] = [int(first)]
            for item in got:
                if isinstance(item, Message):
                    numbers.append(int(item.id))
                else:
                    assert item.after is not None and item.until is not None
                    assert int(item.after) == numbers[-1]
                    missed = list(range(int(item.after) + 1, int(item.until) + 1))
                    assert item.missed == len(missed)
                    numbers += missed
            assert numbers == list(range(int(first), int(last) + 1))
            delivered = {item.id for item in got if isinstance(item, Message)}
            assert not delivered & set(during), "a message published while down arrived"

    pg.run(main)


def test_an_idle_listener_outlives_the_servers_idle_session_timeout() -> None:
    """The server closes sessions idle for 1 s; the listener checks its connection after
    0.3 s of silence, so it keeps it; the publishing pools' connections are closed by the
    server and replaced on the next publish."""
    url = PG_URL + "?options=-c%20idle_session_timeout%3D1000"
    with made_env("postgres", BROADCAST_BLOCK=0.3) as made:
        made.app.config["BROADCAST_POSTGRES_URL"] = url
        made.broadcast.init_app(made.app)
        b = made.broadcast
        me = f"carboy-broadcast:publish:{os.getpid()}"

        async def main() -> None:
            async with b.subscribe("idle") as sub:
                b.publish("idle", "one")
                await b.apublish("idle", "two")
                assert [m.data for m in await take(sub, 2)] == ["one", "two"]
                pid = listener_pid(made)
                await asyncio.sleep(2.5)
                assert own_reader_ids("postgres") == [pid] == [listener_pid(made)]
                query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                assert execute(query, [me]) == [(0,)]  # the server closed the pooled ones
                b.publish("idle", "three")
                await b.apublish("idle", "four")
                assert [m.data for m in await take(sub, 2)] == ["three", "four"]

        made.run(main)
        assert made.gaps == []


# -- payloads and channel names ----------------------------------------------------------------


def test_payloads_over_the_limit_are_refused_at_publish(pg: Env) -> None:
    b = pg.broadcast
    text = "x" * PAYLOAD_LIMIT
    accents = "é" * (PAYLOAD_LIMIT // 2)  # two bytes each
    binary = bytes(range(256)) * (PAYLOAD_LIMIT * 3 // 4 // 256) + b"\x00" * 37  # 5,925 bytes
    assert len(binary) * 4 // 3 == PAYLOAD_LIMIT

    async def main() -> None:
        async with b.subscribe("big") as sub:
            ids = [b.publish("big", text), await b.apublish("big", accents)]
            ids.append(b.publish("big", binary))
            for too_big in (text + "x", accents + "é", binary + b"\x01"):
                with pytest.raises(ValueError, match=r"limit of 7900 bytes.*8000") as refused:
                    b.publish("big", too_big)
                assert "over the postgres broadcast backend's limit" in str(refused.value)
                with pytest.raises(ValueError, match="7900"):
                    await b.apublish("big", too_big)
            ids.append(b.publish("big", "small"))
            got = await take(sub, 4)
            assert [m.data for m in got] == [text, accents, binary, "small"]
            assert [m.id for m in got] == ids == ["1", "2", "3", "4"]  # nothing else was sent

    pg.run(main)
    assert pg.gaps == []


NAMES = [
    "room",
    "Room",  # PostgreSQL folds unquoted identifiers: not the same channel here
    "",
    "a b",
    "'; DROP TABLE pg_class; --",
    'say "hi"',
    "x" * 300,  # identifiers are cut at 63 bytes
    "x" * 301,
    "é☃\U0001f600",
    "nul\x00inside",
    "back\\slash",
]


def test_any_string_is_a_channel_and_none_reaches_sql(pg: Env) -> None:
    b = pg.broadcast
    keys = {notify_channel(pg.prefix, name) for name in NAMES}
    assert len(keys) == len(NAMES)
    assert all(len(k) <= 63 and k.isidentifier() and k.islower() for k in keys)

    async def main() -> None:
        subs: list[Subscription] = [await b.subscribe(name).start() for name in NAMES]
        try:
            for i, name in enumerate(NAMES):
                if i % 2:
                    b.publish(name, f"to {i}")
                else:
                    await b.apublish(name, f"to {i}")
            for i, sub in enumerate(subs):
                got = await take(sub, 1)
                assert [(m.channel, m.data, m.id) for m in got] == [(NAMES[i], f"to {i}", "1")]
                assert await sub.get(0.05) is None  # no other channel's message
            assert len(own_reader_ids("postgres")) == 1  # one connection LISTENs to all
            # Killed, it LISTENs to every channel again: one message each while it was away
            # is a gap of one on each; the next one arrives.
            assert execute("SELECT pg_terminate_backend(%s, 5000)", [listener_pid(pg)])
            for name in NAMES:
                b.publish(name, "missed")
            for i, sub in enumerate(subs):
                item = await sub.get(5, gaps=True)
                assert item == Gap(NAMES[i], "reconnect", "1", "2", 1)
                b.publish(NAMES[i], "again")
                assert [m.data for m in await take(sub, 1)] == ["again"]
        finally:
            for sub in subs:
                await sub.aclose()

    pg.run(main)
    assert execute(f'SELECT count(*) FROM "{pg.table}"') == [(len(NAMES),)]


# -- configuration -----------------------------------------------------------------------------


def test_urls_and_configuration() -> None:
    assert postgres_url("postgresql+psycopg://app:pw@db:5433/app?sslmode=require") == (
        "postgresql://app:pw@db:5433/app?sslmode=require"
    )
    assert postgres_url("postgres://db/app") == "postgresql://db/app"
    sa = pytest.importorskip("sqlalchemy")
    assert postgres_url(sa.make_url("postgresql+psycopg://u:secret@h/d")) == (
        "postgresql://u:secret@h/d"
    )
    for bad in ("sqlite:///x.db", "mysql://h/d", "db.internal"):
        with pytest.raises(ValueError, match="Not a PostgreSQL URL"):
            postgres_url(bad)

    app = carboy.Carboy(__name__)
    app.config["BROADCAST_BACKEND"] = "postgres"
    with pytest.raises(ValueError, match="BROADCAST_POSTGRES_URL"):
        Broadcast(app)
    app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://app@primary/app"
    backend = Broadcast(app).backend
    assert isinstance(backend, PostgresBackend) and backend.url == "postgresql://app@primary/app"
    assert backend.name == "postgres" and not backend.keeps_history
    app.config["BROADCAST_POSTGRES_URL"] = "sqlite:///x.db"
    with pytest.raises(ValueError, match="Not a PostgreSQL URL"):
        Broadcast(app)


def test_unreachable_server_fails_fast() -> None:
    from carboy.scale import broadcast as module

    made = Env("postgres", BROADCAST_BLOCK=0.2)
    made.app.config["BROADCAST_POSTGRES_URL"] = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    made.broadcast.init_app(made.app)
    b = made.broadcast
    try:
        with pytest.raises(psycopg.OperationalError):
            b.publish("c", "x")

        async def main() -> None:
            with pytest.raises(psycopg.OperationalError):
                await b.apublish("c", "x")
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(module, "READY_TIMEOUT", 0.3)
                with pytest.raises(TimeoutError):
                    await b.subscribe("c").start()
            await asyncio.sleep(0.3)  # BROADCAST_LINGER: nobody wants the channel any more
            assert b.stats()["channels"] == 0

        made.run(main)
    finally:
        made.broadcast.backend.close()


# -- two workers -------------------------------------------------------------------------------


@contextlib.contextmanager
def served(log: Path, table: str, prefix: str, workers: int = 2) -> Iterator[Server]:
    port = free_port()
    cmd = [
        *tool("uvicorn"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--log-level", "warning", "realtime_app:app"),
    ]
    env = {"RT_BACKEND": "postgres", "RT_PG_URL": PG_URL, "RT_TABLE": table, "RT_PREFIX": prefix}
    with Server(cmd, port, log, env) as server:
        server.wait_until_up("/pid")
        yield server


def test_a_publish_through_one_worker_reaches_clients_of_both(pg: Env, tmp_path: Path) -> None:
    """uvicorn with 2 workers on the postgres backend: WebSocket clients on both workers and
    an SSE stream get what a sync view and an ``async def`` view of either worker publish."""

    async def main() -> None:
        with served(tmp_path / "uvicorn.log", pg.table, pg.prefix) as server:
            url = server.ws_url + "/ws/room?ids=1"
            clients = [await WSClient.connect(url) for _ in range(4)]
            for _ in range(30):  # new connections until both workers have one
                pids = {(await c.hello).split()[1] for c in clients}
                if len(pids) == 2:
                    break
                clients += await asyncio.gather(*(WSClient.connect(url) for _ in range(4)))
            assert len(pids) == 2, f"connections reached only the workers {pids}"
            async with (
                httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
                http.stream("GET", "/sse/room") as stream,
            ):
                events = sse_events(stream)
                assert "retry" in await anext(events)  # subscribed
                sent = []
                for i in range(6):
                    path = "/publish/room" if i % 2 else "/apublish/room"
                    reply = await http.post(path, content=f"m{i}")
                    assert reply.status_code == 200, reply.text
                    sent.append(f"{reply.text} m{i}")
                deadline = time.monotonic() + 10
                while any(len(c.frames) < 6 for c in clients):
                    assert time.monotonic() < deadline, [c.frames for c in clients]
                    await asyncio.sleep(0.02)
                assert all(c.frames == sent for c in clients)
                got = []
                while len(got) < 6:
                    event = await anext(events)
                    if "data" in event:
                        got.append(f"{event['id']} {event['data']}")
                assert got == sent
            for client in clients:
                client.close()
            # One listening connection per worker, for its clients and its SSE stream.
            names = [f"carboy-broadcast:postgres:{pid}" for pid in pids]
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)"
            assert execute(query, [names]) == [(2,)]

    asyncio.run(asyncio.wait_for(main(), 60))
