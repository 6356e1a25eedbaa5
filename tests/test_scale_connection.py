"""The Redis connection layer: URLs, one client per process and per event loop, timeouts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest
import redis

import carboy
from carboy.scale.connection import RedisConnection, _parse, get_redis

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
