"""The Redis connection layer: URLs, one client per process and per event loop, timeouts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import typing as t

import pytest
import redis
from redis.exceptions import NoScriptError

import carboy
from carboy.scale.connection import RedisConnection, _held_connection, _parse, execute, get_redis
from redis_servers import RedisServer

URL = "redis://127.0.0.1:6379/15"


def make_app(url: str | None = URL) -> carboy.Carboy:
    app = carboy.Carboy(__name__)
    if url is not None:
        app.config["REDIS_URL"] = url
    return app


def test_importing_carboy_imports_no_redis_client() -> None:
    code = "import sys, carboy, carboy.scale; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("url", "kind", "parts"),
    [
        ("redis://localhost:6379/0", "single", {}),
        ("rediss://:pw@example.test:6380", "single", {}),
        ("unix:///run/redis.sock", "single", {}),
        (
            "redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2/mymaster/3",
            "sentinel",
            {
                "hosts": [("10.0.0.1", 26379), ("10.0.0.2", 26379)],
                "password": "s@cret",
                "service": "mymaster",
                "db": 3,
            },
        ),
        (
            "redis+cluster://[::1]:7000,127.0.0.1:7001",
            "cluster",
            {"hosts": [("::1", 7000), ("127.0.0.1", 7001)], "password": None},
        ),
    ],
)
def test_urls(url: str, kind: str, parts: dict[str, object]) -> None:
    assert _parse(url) == (kind, parts)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memcached://localhost", "Unsupported Redis URL scheme"),
        ("redis+sentinel://localhost:26379", "service name"),
        ("redis+cluster://:7000", "host is missing"),
    ],
)
def test_bad_urls_fail_at_init_app(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisConnection(make_app(url))


def test_a_url_is_required() -> None:
    with pytest.raises(ValueError, match="REDIS_URL"):
        RedisConnection(make_app(None))
    with pytest.raises(RuntimeError, match="No RedisConnection"):
        get_redis(make_app())


def test_sync_and_asyncio_clients_reach_the_server() -> None:
    app = make_app()
    layer = RedisConnection(app)
    assert get_redis(app) is layer
    assert layer.sync is layer.sync
    layer.sync.set("carboy-test:conn", "1", ex=5)

    async def read() -> bytes | None:
        return await layer.aio.get("carboy-test:conn")  # type: ignore[no-any-return]

    assert asyncio.run(read()) == b"1"


def test_each_event_loop_gets_its_own_asyncio_client() -> None:
    layer = RedisConnection(make_app())
    clients: list[object] = []

    async def grab() -> None:
        clients.append(layer.aio)
        assert layer.aio is clients[-1]
        await layer.aio.ping()

    asyncio.run(grab())
    thread = threading.Thread(target=lambda: asyncio.run(grab()))
    thread.start()
    thread.join()
    assert len(clients) == 2 and clients[0] is not clients[1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_its_own_client() -> None:
    layer = RedisConnection(make_app())
    parent = layer.sync
    parent.ping()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new client, which works
        try:
            ok = layer.sync is not parent and layer.sync.ping()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert layer.sync is parent


def test_an_unreachable_server_fails_fast_with_a_redis_error() -> None:
    app = make_app("redis://127.0.0.1:1/0")  # nothing listens on port 1
    layer = RedisConnection(app)
    assert layer.ping() is False
    with pytest.raises(redis.ConnectionError):
        layer.sync.get("x")


def test_execute_sends_commands_in_one_round_trip_and_returns_error_replies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = RedisConnection(make_app())
    client = layer.sync
    client.set("carboy-test:exec", "v", px=5000)
    sent: list[object] = []
    conn_class = client.connection_pool.connection_class
    original = conn_class.send_packed_command

    def spy(self: t.Any, command: t.Any, check_health: bool = True) -> None:
        sent.append(command)
        original(self, command, check_health)

    # monkeypatch removes the class attribute afterwards (a plain assignment back would leave
    # one on the subclass, hiding later patches of the base class from other tests).
    monkeypatch.setattr(conn_class, "send_packed_command", spy)
    replies = execute(
        client,
        [("GET", "carboy-test:exec"), ("EVALSHA", "0" * 40, 0), ("PTTL", "carboy-test:exec")],
    )
    monkeypatch.undo()
    assert len(sent) == 1  # one write: the three commands are pipelined
    assert replies[0] == b"v"
    assert isinstance(replies[1], NoScriptError)  # an error reply is returned in its place
    assert 0 < replies[2] <= 5000
    assert client.get("carboy-test:exec") == b"v"  # the connection went back usable


def test_execute_retries_once_when_a_connection_fails_mid_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with RedisServer() as server:
        layer = RedisConnection(make_app(server.url))
        client = layer.sync
        assert execute(client, [("SET", "k", "1")]) == [b"OK"]
        conn_class = client.connection_pool.connection_class
        original = conn_class.pack_commands  # used by pipelines only, not the handshake
        failures = [redis.ConnectionError("reset by peer")] * 1

        def flaky(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
            if failures:
                raise failures.pop()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(conn_class, "pack_commands", flaky)
        assert execute(client, [("GET", "k")]) == [b"1"]  # failed once, retried
        failures[:] = [redis.TimeoutError("slow")] * 2
        with pytest.raises(redis.TimeoutError):  # failed twice: raised
            execute(client, [("GET", "k")])
        monkeypatch.undo()
        assert execute(client, [("GET", "k")]) == [b"1"]
        server.stop()
        with pytest.raises(redis.ConnectionError):
            execute(client, [("GET", "k")])
        server.start()
        assert execute(client, [("GET", "k")]) == [None]  # back (no persistence: empty)


def test_execute_on_a_cluster_client_falls_back_to_its_own_commands() -> None:
    class Fake:
        def __init__(self) -> None:
            self.calls: list[tuple[object, ...]] = []

        def execute_command(self, *args: object) -> object:
            self.calls.append(args)
            if args[0] == "EVALSHA":
                raise NoScriptError("NOSCRIPT")
            return b"x"

    fake = Fake()
    assert execute(fake, [("GET", "a")]) == [b"x"]
    (reply,) = execute(fake, [("EVALSHA", "0" * 40, 0)])
    assert isinstance(reply, NoScriptError)
    assert fake.calls == [("GET", "a"), ("EVALSHA", "0" * 40, 0)]


def test_execute_keeps_one_connection_per_thread_and_hands_it_back_when_the_thread_ends() -> None:
    layer = RedisConnection(make_app())
    client = layer.sync
    pool = client.connection_pool
    seen: list[object] = []

    def work() -> None:
        for _ in range(3):
            assert execute(client, [("PING",)]) == [b"PONG"]
            seen.append(_held_connection(pool))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert len(set(map(id, seen))) == 1  # one connection for the thread's three round trips
    assert seen[0] not in pool._in_use_connections  # type: ignore[attr-defined]
    assert seen[0] in pool._available_connections  # type: ignore[attr-defined]
    # Another thread gets its own (the first is back in the pool, so it may be reused).
    other: list[object] = []
    worker = threading.Thread(target=lambda: other.append(_held_connection(pool)))
    worker.start()
    worker.join()
    assert other[0] in pool._available_connections  # type: ignore[attr-defined]
