"""carboy.scale.caching: Flask-Caching's API, single-flight recomputes, stale-while-revalidate,
async views, ETag/304 and the Redis outage, in process and on real servers with several workers.

The served tests drive ``served_apps/scale_cache_app.py`` under gunicorn (4 workers, 50 threads
each, so 200 requests are in flight at once) and uvicorn, with bounded thread pools of httpx
clients. Recomputes are counted in Redis by the view itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import typing as t
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from redis.cluster import key_slot

import carboy
from carboy import render_template_string, request
from carboy.scale.caching import Cache, make_template_fragment_key
from carboy.scale.caching_backends import (
    RedisCache,
    SimpleCache,
    dumps,
    loads,
    lock_key,
    lock_shares_slot,
)
from redis_servers import MACHINE_URL, RedisServer, machine_redis_or_skip
from servers import Server, free_port, tool, wait_for

# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def machine() -> redis.Redis:
    return machine_redis_or_skip()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix of this test alone; its keys on the machine's Redis are deleted after."""
    name = f"carboy-cache-test-{uuid.uuid4().hex[:12]}:"
    yield name
    try:
        client = redis.Redis.from_url(MACHINE_URL, socket_connect_timeout=1)
        keys = list(client.scan_iter(match=f"*{name}*"))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass


@pytest.fixture(params=["simple", "redis"])
def backend_config(request: pytest.FixtureRequest, prefix: str) -> dict[str, t.Any]:
    if request.param == "simple":
        return {"CACHE_TYPE": "SimpleCache"}
    machine_redis_or_skip()
    return {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": MACHINE_URL, "CACHE_KEY_PREFIX": prefix}


# -- the plain API ---------------------------------------------------------------------------


def test_key_value_api(backend_config: dict[str, t.Any]) -> None:
    app = carboy.Carboy(__name__)
    cache = Cache(app, config=backend_config)
    with app.app_context():
        assert cache.get("missing") is None
        assert cache.set("a", {"x": [1, 2]}) is True
        assert cache.get("a") == {"x": [1, 2]}
        assert cache.has("a") and not cache.has("b")
        assert cache.add("a", 5) is False and cache.get("a") == {"x": [1, 2]}
        assert cache.add("b", "bee") is True
        assert cache.get_many("a", "b", "c") == [{"x": [1, 2]}, "bee", None]
        assert sorted(cache.set_many({"c": 3, "d": None})) == ["c", "d"]
        assert cache.get_dict("c", "d") == {"c": 3, "d": None}
        assert cache.inc("n") == 1 and cache.inc("n", 5) == 6 and cache.dec("n", 2) == 4
        assert cache.get("n") == 4
        assert cache.delete("a") is True and cache.get("a") is None
        assert sorted(cache.delete_many("b", "c", "zz")) == ["b", "c"]
        cache.set("short", 1, timeout=1)
        assert cache.get("short") == 1
        time.sleep(1.1)
        assert cache.get("short") is None
        assert cache.clear() is True
        assert cache.get("n") is None


def test_values_are_copies_in_process() -> None:
    app = carboy.Carboy(__name__)
    cache = Cache(app, config={"CACHE_TYPE": "simple"})
    with app.app_context():
        items = [1]
        cache.set("l", items)
        items.append(2)
        cache.get("l").append(3)
        assert cache.get("l") == [1]


def test_simple_cache_is_bounded_and_thread_safe() -> None:
    backend = SimpleCache(threshold=10)
    for i in range(50):
        backend.set(f"k{i}", dumps(i))
    assert len(backend._data) <= 10
    assert loads(backend.get("k49")) == 49 and backend.get("k0") is None

    def bump() -> None:
        for _ in range(200):
            backend.inc("counter", 1)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads(backend.get("counter")) == 1600


def test_serialization_is_cachelibs() -> None:
    # Flask-Caching's RedisCache reads and writes the same bytes.
    from cachelib.serializers import RedisSerializer

    theirs = RedisSerializer()
    for value in [7, "text", {"a": [1, None]}, b"raw", None]:
        assert theirs.loads(dumps(value)) == value
        assert loads(theirs.dumps(value)) == value


def test_bad_config_fails_at_init_app() -> None:
    with pytest.raises(ValueError, match="Unknown CACHE_TYPE"):
        Cache(carboy.Carboy(__name__), config={"CACHE_TYPE": "MemcachedCache"})
    with pytest.raises(ValueError, match="dict"):
        Cache(carboy.Carboy(__name__), config=["CACHE_TYPE"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        Cache(carboy.Carboy(__name__), config={"CACHE_DEFAULT_TIMEOUT": -1})


def test_the_embedded_default_imports_no_redis() -> None:
    code = (
        "import sys, carboy\n"
        "from carboy.scale.caching import Cache\n"
        "app = carboy.Carboy('x'); cache = Cache(app)\n"
        "with app.app_context(): cache.set('k', 1); assert cache.get('k') == 1\n"
        "print('redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_default_backend_follows_redis_url(prefix: str) -> None:
    app = carboy.Carboy(__name__)
    Cache(app)
    assert isinstance(next(iter(app.extensions["cache"].values())), SimpleCache)
    app = carboy.Carboy(__name__)
    app.config["REDIS_URL"] = MACHINE_URL
    Cache(app)
    backend = next(iter(app.extensions["cache"].values()))
    assert isinstance(backend, RedisCache)
    assert backend.connection is app.extensions["carboy.redis"]


# -- the Lua scripts, each on its own ----------------------------------------------------------


def test_lua_cache_fill_stores_and_releases_only_its_own_lock(
    machine: redis.Redis, prefix: str
) -> None:
    app = carboy.Carboy(__name__)
    cache = Cache(app, config={"CACHE_REDIS_URL": MACHINE_URL, "CACHE_KEY_PREFIX": prefix})
    backend = t.cast(RedisCache, app.extensions["cache"][cache])
    full = prefix + "k"
    assert backend.lock("k", "tok-a", 5, 0) == (True, None)
    assert backend.lock("k", "tok-b", 5, 0) == (False, None)
    backend.fill("k", b"!v1", 10, "tok-b")  # not the holder: stores, leaves the lock
    assert machine.get(full) == b"!v1" and machine.get(lock_key(full)) == b"tok-a"
    assert 9000 < machine.pttl(full) <= 10000
    backend.fill("k", b"!v2", 0, "tok-a")  # the holder: stores without expiry, releases
    assert machine.get(full) == b"!v2" and machine.pttl(full) == -1
    assert machine.exists(lock_key(full)) == 0


def test_lua_cache_unlock_checks_the_token(machine: redis.Redis, prefix: str) -> None:
    app = carboy.Carboy(__name__)
    cache = Cache(app, config={"CACHE_REDIS_URL": MACHINE_URL, "CACHE_KEY_PREFIX": prefix})
    backend = t.cast(RedisCache, app.extensions["cache"][cache])
    assert backend.lock("k", "mine", 5, 0) == (True, None)
    backend.unlock("k", "someone-else")
    assert backend.poll("k") == (None, True)
    backend.unlock("k", "mine")
    assert backend.poll("k") == (None, False)


def test_lua_cache_lock_returns_a_fresh_entry_instead(machine: redis.Redis, prefix: str) -> None:
    app = carboy.Carboy(__name__)
    cache = Cache(app, config={"CACHE_REDIS_URL": MACHINE_URL, "CACHE_KEY_PREFIX": prefix})
    backend = t.cast(RedisCache, app.extensions["cache"][cache])
    full = prefix + "k"
    machine.set(full, b"!fresh", px=10_000)
    assert backend.lock("k", "t1", 5, 0) == (False, b"!fresh")  # filled: no lock taken
    assert backend.lock("k", "t1", 5, 10) == (True, None)  # within the stale window: taken
    assert machine.get(lock_key(full)) == b"t1" and 4000 < machine.pttl(lock_key(full)) <= 5000
    assert backend.lock("k", "t2", 5, 10) == (False, None)  # held by t1
    machine.persist(full)
    assert backend.lock("k", "t3", 5, 10) == (False, b"!fresh")  # no expiry: always fresh
    machine.delete(full, lock_key(full))
    assert backend.lock("k", "t4", 5, 0) == (True, None)  # missing: taken


def test_a_caller_that_missed_does_not_recompute_a_just_filled_entry() -> None:
    # A read the miss, B filled and released, then A takes the lock: A must use B's value.
    backend = SimpleCache()
    assert backend.lock("k", "b", 5, 0) == (True, None)
    backend.fill("k", dumps("b's value"), 60, "b")
    assert backend.lock("k", "a", 5, 0) == (False, dumps("b's value"))


def test_lua_cache_extend_renews_only_its_own_lock(machine: redis.Redis, prefix: str) -> None:
    app = carboy.Carboy(__name__)
    cache = Cache(app, config={"CACHE_REDIS_URL": MACHINE_URL, "CACHE_KEY_PREFIX": prefix})
    backend = t.cast(RedisCache, app.extensions["cache"][cache])
    lk = lock_key(prefix + "k")
    assert backend.lock("k", "holder", 1, 0) == (True, None)
    backend.extend("k", "someone-else", 30)
    assert machine.pttl(lk) <= 1000
    backend.extend("k", "holder", 30)
    assert 29_000 < machine.pttl(lk) <= 30_000
    backend.unlock("k", "holder")
    backend.extend("k", "holder", 30)  # released: not brought back
    assert machine.exists(lk) == 0


@pytest.mark.parametrize(
    "key", ["plain", "view//a/b", "has{tag}inside", "open{only", "{}x", "a}b", "{x}}", "}{a}"]
)
def test_lock_key_shares_the_entry_hash_slot(key: str) -> None:
    same = key_slot(lock_key(key).encode()) == key_slot(key.encode())
    assert same == lock_shares_slot(key)
    assert same or key in ("{}x", "a}b")  # only keys with "}" and no tag cannot share
    assert lock_key(key) != key


# -- cached views ----------------------------------------------------------------------------


def make_counted_app(app: carboy.Carboy, config: dict[str, t.Any]) -> tuple[Cache, dict[str, int]]:
    cache = Cache(app, config=config)
    calls: dict[str, int] = {}

    def tick(name: str) -> int:
        calls[name] = calls.get(name, 0) + 1
        return calls[name]

    @app.get("/report")
    @cache.cached()
    def report() -> str:
        return f"report {tick('report')}"

    @app.get("/async")
    @cache.cached()
    async def report_async() -> str:
        await asyncio.sleep(0)
        return f"async {tick('async')}"

    @app.get("/search")
    @cache.cached(query_string=True)
    def search() -> dict[str, t.Any]:
        return {"q": request.args.get("q"), "run": tick("search")}

    @app.get("/unless")
    @cache.cached(unless=lambda: request.args.get("fresh") == "1")
    def unless_view() -> str:
        return f"unless {tick('unless')}"

    @app.get("/forced")
    @cache.cached(forced_update=lambda: request.args.get("force") == "1")
    def forced() -> str:
        return f"forced {tick('forced')}"

    @app.get("/filtered")
    @cache.cached(response_filter=lambda rv: "keep" in str(rv))
    def filtered() -> str:
        n = tick("filtered")
        return "keep" if n >= 3 else f"drop {n}"

    @app.get("/missing")
    @cache.cached()
    def missing() -> str:
        tick("missing")
        carboy.abort(404)

    @app.get("/custom")
    @cache.cached(key_prefix=lambda: "custom-key", response_hit_indication=True)
    def custom() -> str:
        return f"custom {tick('custom')}"

    @app.post("/post-only")
    @cache.cached()
    def post_only() -> str:
        return f"post {tick('post')}"

    return cache, calls


def test_cached_views(app: carboy.Carboy, backend_config: dict[str, t.Any]) -> None:
    cache, calls = make_counted_app(app, backend_config)
    client = app.test_client()
    assert client.get("/report").text == client.get("/report").text == "report 1"
    with app.app_context():
        assert cache.get("view//report") == "report 1"  # Flask-Caching's key, the view's value
        assert cache.delete("view//report")
    assert client.get("/report").text == "report 2"

    assert client.get("/async").text == client.get("/async").text == "async 1"

    assert client.get("/search?q=a&p=1").json == {"q": "a", "run": 1}
    assert client.get("/search?p=1&q=a").json == {"q": "a", "run": 1}
    assert client.get("/search?q=b").json == {"q": "b", "run": 2}

    assert client.get("/unless").text == client.get("/unless").text == "unless 1"
    assert client.get("/unless?fresh=1").text == "unless 2"
    assert client.get("/unless").text == "unless 1"

    assert client.get("/forced").text == "forced 1"
    assert client.get("/forced?force=1").text == "forced 2"
    assert client.get("/forced").text == "forced 2"

    assert [client.get("/filtered").text for _ in range(4)] == ["drop 1", "drop 2", "keep", "keep"]

    assert client.get("/missing").status_code == client.get("/missing").status_code == 404
    assert calls["missing"] == 1  # the HTTPException is cached and raised again

    miss, hit = client.get("/custom"), client.get("/custom")
    assert miss.text == hit.text == "custom 1"
    assert "hit_cache" not in miss.headers and hit.headers["hit_cache"] == "True"
    with app.app_context():
        assert cache.get("custom-key") == "custom 1"

    assert client.post("/post-only").text == "post 1"


def test_etag_and_304_from_the_entry(app: carboy.Carboy, backend_config: dict[str, t.Any]) -> None:
    make_counted_app(app, backend_config)
    client = app.test_client()
    first = client.get("/report")
    etag = first.headers["ETag"]
    second = client.get("/report")
    assert second.headers["ETag"] == etag and second.text == first.text
    not_modified = client.get("/report", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.data == b""
    assert not_modified.headers["ETag"] == etag
    assert client.get("/report", headers={"If-None-Match": '"other"'}).status_code == 200
    assert (
        client.get(
            "/async", headers={"If-None-Match": client.get("/async").headers["ETag"]}
        ).status_code
        == 304
    )


def test_cached_function_outside_views_keeps_its_value(app: carboy.Carboy) -> None:
    cache = Cache(app, config={"CACHE_TYPE": "simple"})
    runs = []

    @cache.cached(key_prefix="numbers")
    def numbers() -> list[int]:
        runs.append(1)
        return [1, 2, 3]

    @app.get("/numbers")
    def view() -> dict[str, t.Any]:
        return {"n": numbers()}

    client = app.test_client()
    assert client.get("/numbers").json == client.get("/numbers").json == {"n": [1, 2, 3]}
    assert len(runs) == 1 and "ETag" not in client.get("/numbers").headers


# -- memoize and the template tag --------------------------------------------------------------


def test_memoize(backend_config: dict[str, t.Any]) -> None:
    app = carboy.Carboy(__name__)
    cache = Cache(app, config=backend_config)
    calls: list[tuple[t.Any, ...]] = []

    @cache.memoize()
    def add(a: int, b: int = 1) -> int:
        calls.append((a, b))
        return a + b

    class Adder:
        def __init__(self, base: int) -> None:
            self.base = base

        def __repr__(self) -> str:
            return f"Adder({self.base})"

        @cache.memoize()
        def plus(self, n: int) -> int:
            calls.append(("plus", self.base, n))
            return self.base + n

    with app.app_context():
        assert add(1, 2) == add(1, b=2) == add(a=1, b=2) == 3
        assert add(5) == add(5, 1) == 6
        assert len(calls) == 2
        cache.delete_memoized(add, 1, 2)
        assert add(1, 2) == 3 and add(5) == 6 and len(calls) == 3
        cache.delete_memoized(add)
        assert add(5) == 6 and len(calls) == 4

        one, two = Adder(1), Adder(2)
        assert one.plus(1) == one.plus(1) == 2 and two.plus(1) == 3 and len(calls) == 6
        cache.delete_memoized(one.plus)
        assert one.plus(1) == 2 and two.plus(1) == 3 and len(calls) == 7
        cache.delete_memoized_verhash(add)
        assert add(5) == 6 and len(calls) == 8


def test_template_fragment_tag(app: carboy.Carboy, backend_config: dict[str, t.Any]) -> None:
    cache = Cache(app, config=backend_config)
    counter = {"n": 0}

    def bump() -> int:
        counter["n"] += 1
        return counter["n"]

    @app.get("/t")
    def page() -> str:
        source = '{% cache 60, "frag", "v1" %}<b>{{ bump() }}</b>{% endcache %}|{{ bump() }}'
        return render_template_string(source, bump=bump)

    @app.get("/del")
    def delete() -> str:
        return render_template_string('{% cache "del", "frag", "v1" %}x{% endcache %}')

    client = app.test_client()
    assert client.get("/t").text == "<b>1</b>|2"
    assert client.get("/t").text == "<b>1</b>|3"
    assert make_template_fragment_key("frag", ["v1"]) == "_template_fragment_cache_frag_v1"
    with app.app_context():
        assert cache.get(make_template_fragment_key("frag", ["v1"])) == "<b>1</b>"
    client.get("/del")
    assert client.get("/t").text == "<b>4</b>|5"


# -- single flight, stale-while-revalidate, outage, in process ------------------------------------


def flight_app(config: dict[str, t.Any], **options: t.Any) -> tuple[carboy.Carboy, list[int]]:
    app = carboy.Carboy(__name__)
    cache = Cache(app, config=config)
    runs: list[int] = []

    @app.get("/slow")
    @cache.cached(timeout=60, **options)
    def slow() -> str:
        runs.append(1)
        time.sleep(0.3)
        return f"slow {len(runs)}"

    return app, runs


def hammer(apps: list[carboy.Carboy], path: str, count: int) -> list[str]:
    def one(i: int) -> str:
        response = apps[i % len(apps)].test_client().get(path)
        assert response.status_code == 200
        return response.text

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def test_single_flight_across_app_instances(backend_config: dict[str, t.Any]) -> None:
    if backend_config["CACHE_TYPE"] == "SimpleCache":
        app, runs = flight_app(backend_config)
        apps = [app]
    else:  # two apps on one Redis stand for two processes
        (one, runs), (two, runs_two) = flight_app(backend_config), flight_app(backend_config)
        apps = [one, two]
    bodies = hammer(apps, "/slow", 40)
    total = len(runs) + (len(runs_two) if len(apps) == 2 else 0)
    assert total == 1 and set(bodies) == {"slow 1"}


def test_without_lock_every_caller_computes() -> None:
    app, runs = flight_app({"CACHE_TYPE": "simple"}, lock=False)
    hammer([app], "/slow", 10)
    assert len(runs) == 10  # what the lock prevents


def test_dead_lock_holder_is_taken_over(machine: redis.Redis, prefix: str) -> None:
    config = {"CACHE_REDIS_URL": MACHINE_URL, "CACHE_KEY_PREFIX": prefix}
    app, runs = flight_app(config, lock_timeout=1)
    # A holder that died: its lock is there, with its TTL, and nobody will fill the entry.
    machine.set(lock_key(prefix + "view//slow"), "dead-worker", px=500)
    started = time.monotonic()
    assert hammer([app], "/slow", 10) == ["slow 1"] * 10
    assert len(runs) == 1 and time.monotonic() - started >= 0.5


def test_a_computing_holder_renews_its_lock(backend_config: dict[str, t.Any]) -> None:
    # The computation (1 s) outlives the lock's TTL (0.3 s): the holder keeps the lock alive,
    # so nobody else takes over while it still computes.
    app = carboy.Carboy(__name__)
    cache = Cache(app, config=backend_config)
    runs: list[int] = []

    @app.get("/long")
    @cache.cached(lock_timeout=0.3)
    def long() -> str:
        runs.append(1)
        time.sleep(1.0)
        return "long"

    @app.get("/long-async")
    @cache.cached(lock_timeout=0.3)
    async def long_async() -> str:
        runs.append(2)
        await asyncio.sleep(1.0)
        return "long async"

    assert hammer([app], "/long", 10) == ["long"] * 10
    assert hammer([app], "/long-async", 10) == ["long async"] * 10
    assert runs == [1, 2]


def test_waiting_is_bounded(machine: redis.Redis, prefix: str) -> None:
    config = {"CACHE_REDIS_URL": MACHINE_URL, "CACHE_KEY_PREFIX": prefix, "CACHE_LOCK_WAIT": 0.3}
    app, runs = flight_app(config)
    machine.set(lock_key(prefix + "view//slow"), "stuck-worker", px=60_000)
    assert app.test_client().get("/slow").status_code == 200  # computed, not hung
    assert len(runs) == 1


def test_a_failing_computation_releases_the_lock(backend_config: dict[str, t.Any]) -> None:
    app = carboy.Carboy(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    cache = Cache(app, config=backend_config)
    attempts: list[int] = []

    @app.get("/flaky")
    @cache.cached()
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        return "ok"

    client = app.test_client()
    assert client.get("/flaky").status_code == 500
    started = time.monotonic()
    assert client.get("/flaky").text == "ok"
    assert time.monotonic() - started < 1  # the lock was released, no wait for its TTL


def test_stale_while_revalidate_recomputes_once(backend_config: dict[str, t.Any]) -> None:
    app, runs = flight_app(backend_config)
    cache = next(iter(app.extensions["cache"]))

    @app.get("/swr")
    @cache.cached(timeout=1, stale_ttl=30)
    def swr() -> str:
        runs.append(2)
        time.sleep(0.3)
        return f"swr {len(runs)}"

    assert app.test_client().get("/swr").text == "swr 1"
    time.sleep(1.1)  # now stale
    bodies = hammer([app], "/swr", 30)
    assert runs.count(2) == 2  # the cold fill and one refresh
    assert "swr 1" in bodies  # the others were served the stale value meanwhile
    assert app.test_client().get("/swr").text == "swr 2"


def test_async_view_uses_the_asyncio_client(prefix: str, machine: redis.Redis) -> None:
    app = carboy.Carboy(__name__)
    app.config.update(REDIS_URL=MACHINE_URL, CACHE_KEY_PREFIX=prefix)
    cache = Cache(app)
    runs: list[int] = []

    @app.get("/a")
    @cache.cached()
    async def view() -> str:
        runs.append(1)
        await asyncio.sleep(0.2)
        return "a"

    layer = app.extensions["carboy.redis"]

    class NoSync:
        def __getattr__(self, name: str) -> t.Any:
            raise AssertionError(f"an async view used the sync client ({name})")

    layer._sync, layer._pid = NoSync(), os.getpid()  # this process's sync client: forbidden
    try:

        async def main() -> list[t.Any]:
            async def one() -> t.Any:
                scope = {
                    "type": "http",
                    "method": "GET",
                    "path": "/a",
                    "query_string": b"",
                    "headers": [],
                    "http_version": "1.1",
                    "scheme": "http",
                    "server": ("127.0.0.1", 80),
                    "root_path": "",
                }
                sent: list[t.Any] = []

                async def receive() -> dict[str, t.Any]:
                    return {"type": "http.request", "body": b"", "more_body": False}

                async def send(message: dict[str, t.Any]) -> None:
                    sent.append(message)

                await app(scope, receive, send)
                return sent

            return await asyncio.gather(*(one() for _ in range(20)))

        results = asyncio.run(main())
    finally:
        layer._sync = None
    assert all(r[0]["status"] == 200 and r[1]["body"] == b"a" for r in results)
    assert len(runs) == 1


def test_outage_fails_open_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer() as server:
        app = carboy.Carboy(__name__)
        app.config.update(REDIS_URL=server.url)
        cache = Cache(app)
        runs: list[int] = []

        @app.get("/v")
        @cache.cached()
        def view() -> str:
            runs.append(1)
            return f"v{len(runs)}"

        client = app.test_client()
        assert client.get("/v").text == client.get("/v").text == "v1"
        server.stop()
        caplog.set_level(logging.WARNING, "carboy.scale.caching")
        bodies = [client.get("/v") for _ in range(5)]
        assert [b.status_code for b in bodies] == [200] * 5  # computed: never a 500
        with app.app_context():
            assert cache.get("x") is None and cache.set("x", 1) is False
        assert sum("unavailable" in r.message for r in caplog.records) == 1  # logged once
        server.start()
        back = time.monotonic()
        while client.get("/v").text != client.get("/v").text:  # cached again
            assert time.monotonic() - back < 1.0
            time.sleep(0.05)


# -- proof: real servers with several workers ------------------------------------------------------

APP = "scale_cache_app:app"


def gunicorn_cmd(port: int, workers: int = 4) -> list[str]:
    return [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "30"),
        *("--worker-class", "gthread", "--threads", "50", "--graceful-timeout", "2"),
        APP,
    ]


def served(
    tmp_path: Path, cmd: t.Callable[[int], list[str]], redis_url: str, prefix: str, **env: str
) -> Server:
    port = free_port()
    extra = {"SCALE_CACHE_REDIS_URL": redis_url, "SCALE_CACHE_PREFIX": prefix}
    extra.update({f"SCALE_CACHE_{k.upper()}": v for k, v in env.items()})
    server = Server(cmd(port), port, tmp_path / f"server-{port}.log", env=extra).start()
    server.wait_until_up("/fast")
    return server


def load(
    base_url: str, path: str, total: int, concurrency: int, deadline: float = 30.0
) -> list[httpx.Response | Exception]:
    """*total* GETs of *path*, *concurrency* at once through one pooled client, bounded in
    time (a request after *deadline* seconds is not sent)."""
    stop_at = time.monotonic() + deadline
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=base_url, timeout=20.0, limits=limits) as client:

        def one(_: int) -> httpx.Response | Exception:
            if time.monotonic() > stop_at:
                return TimeoutError("load deadline passed")
            try:
                # PERF of the test: a new connection per request is slower but never meets a
                # keep-alive connection the server is closing (a transport error, not ours).
                return client.get(path, headers={"Connection": "close"})
            except httpx.HTTPError as e:
                return e

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(one, range(total)))


@pytest.fixture(scope="module")
def gunicorn_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    machine_redis_or_skip()
    prefix = f"carboy-cache-proof-{uuid.uuid4().hex[:12]}:"
    server = served(
        tmp_path_factory.mktemp("gunicorn"),
        gunicorn_cmd,
        MACHINE_URL,
        prefix,
        sleep="1.0",
        lock_timeout="2",
        lock_wait="10",
    )
    with server:
        yield server, prefix
    client = redis.Redis.from_url(MACHINE_URL)
    keys = list(client.scan_iter(match=f"{prefix}*")) + list(client.scan_iter(match=f"{{{prefix}*"))
    if keys:
        client.delete(*keys)


def statuses(results: list[httpx.Response | Exception]) -> list[int | str]:
    return [r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for r in results]


def test_proof_cold_stampede_computes_once(
    gunicorn_app: tuple[Server, str], machine: redis.Redis
) -> None:
    server, prefix = gunicorn_app
    results = load(server.base_url, "/cold/stampede", 1000, 200)
    assert statuses(results) == [200] * 1000
    runs = int(machine.get(f"{prefix}count:stampede") or 0)
    assert runs == 1, (machine.lrange(f"{prefix}starts:stampede", 0, -1), server.output()[-3000:])
    assert len({r.text for r in results if isinstance(r, httpx.Response)}) == 1
    workers = {r.headers["X-Worker"] for r in results if isinstance(r, httpx.Response)}
    assert len(workers) >= 2  # answered by several processes


def test_proof_killed_computing_worker_is_taken_over(
    gunicorn_app: tuple[Server, str], machine: redis.Redis
) -> None:
    server, prefix = gunicorn_app
    name = "killed"
    killed: list[int] = []

    def kill_first_computer() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = machine.get(f"{prefix}pid:{name}")
            if pid is not None:
                os.kill(int(pid), signal.SIGKILL)  # mid-computation: it sleeps 1 s
                killed.append(int(pid))
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_first_computer)
    killer.start()
    results = load(server.base_url, f"/cold/{name}", 1000, 200)
    killer.join()
    assert killed
    assert int(machine.get(f"{prefix}count:{name}") or 0) == 2
    answered = [r for r in results if isinstance(r, httpx.Response)]
    # Connections the killed worker had accepted are cut (a transport error, not an answer);
    # every answer is a 200 with the one value, computed by the worker that took over.
    assert all(isinstance(r, httpx.TransportError) for r in results if r not in answered)
    assert {r.status_code for r in answered} == {200} and len(answered) >= 500
    assert len({r.text for r in answered}) == 1 and str(killed[0]) not in answered[0].text


def test_proof_stale_key_under_load_recomputes_once_per_expiry(
    gunicorn_app: tuple[Server, str], machine: redis.Redis
) -> None:
    server, prefix = gunicorn_app
    name = "swr"
    started = time.monotonic()
    results: list[httpx.Response | Exception] = []
    while time.monotonic() - started < 3.5:  # 1 s entries: about three expiries
        results += load(server.base_url, f"/stale/{name}", 200, 50)
    assert set(statuses(results)) == {200}
    starts = sorted(float(x) for x in machine.lrange(f"{prefix}starts:{name}", 0, -1))
    assert len(starts) >= 3
    # Each recompute starts when the previous value (computed in 0.2 s) has been fresh 1 s.
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(starts)), starts
    elapsed = time.monotonic() - started
    assert len(starts) <= 1 + elapsed / 1.2 + 1


def test_proof_304_with_identical_etags_across_workers(
    gunicorn_app: tuple[Server, str], machine: redis.Redis
) -> None:
    server, prefix = gunicorn_app
    first = load(server.base_url, "/page/etag", 200, 40)
    etags = {r.headers["ETag"] for r in first if isinstance(r, httpx.Response)}
    assert statuses(first) == [200] * 200 and len(etags) == 1
    etag = etags.pop()
    stop_at = time.monotonic() + 20
    seen: dict[str, set[str]] = {}
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        # New connections, eight at a time, so that each worker gets to answer (one after
        # another, the worker that wins every accept could answer them all).
        headers = {"If-None-Match": etag, "Connection": "close"}
        while len(seen) < 3 and time.monotonic() < stop_at:
            with ThreadPoolExecutor(8) as pool:
                answers = list(
                    pool.map(lambda _: client.get("/page/etag", headers=headers), range(8))
                )
            for r in answers:
                assert r.status_code == 304 and r.content == b""
                seen.setdefault(r.headers["X-Worker"], set()).add(r.headers["ETag"])
        assert client.get("/page/etag", headers={"If-None-Match": '"nope"'}).status_code == 200
    assert len(seen) >= 3 and all(tags == {etag} for tags in seen.values())
    assert int(machine.get(f"{prefix}count:etag") or 0) == 1


def test_proof_async_view_leaves_the_loop_free(
    tmp_path: Path, machine: redis.Redis, prefix: str
) -> None:
    def uvicorn_cmd(port: int) -> list[str]:
        return [*tool("uvicorn"), "--host", "127.0.0.1", "--port", str(port), APP]

    server = served(tmp_path, uvicorn_cmd, MACHINE_URL, prefix)
    limits = httpx.Limits(max_connections=30)
    with (
        server,
        httpx.Client(base_url=server.base_url, timeout=20, limits=limits) as client,
        ThreadPoolExecutor(max_workers=20) as pool,
    ):
        slow = [pool.submit(client.get, "/slow-async/a") for _ in range(20)]
        wait_for(lambda: machine.get(f"{prefix}pid:a") is not None, "the computation")
        # One request computes for 2 s while the others wait on its lock, on the one worker.
        fast = client.get("/fast", timeout=1.0)
        assert fast.text == "fast"
        done = [f.exception() or f.result().text for f in slow if f.done()]
        assert not done, done  # still computing
        answers = [f.result() for f in slow]
    assert {(r.status_code, r.text) for r in answers} == {(200, "slow a")}
    assert int(machine.get(f"{prefix}count:a") or 0) == 1


def test_proof_redis_stopped_mid_run(tmp_path: Path) -> None:
    with RedisServer() as redis_server:
        server = served(tmp_path, lambda p: gunicorn_cmd(p, 2), redis_server.url, "outage:")
        with server, httpx.Client(base_url=server.base_url, timeout=10) as client:
            assert client.get("/outage/x").text == client.get("/outage/x").text  # cached
            results = load(server.base_url, "/outage/x", 100, 20)
            redis_server.stop()
            results += load(server.base_url, "/outage/x", 200, 20)
            bodies = [r.text for r in results[-200:] if isinstance(r, httpx.Response)]
            assert len(set(bodies)) > 1  # computed while Redis was down
            assert statuses(results) == [200] * 300  # never a 500
            redis_server.start()
            back = time.monotonic()
            while True:
                a, b = client.get("/outage/y"), client.get("/outage/y")
                assert a.status_code == b.status_code == 200
                if a.text == b.text:  # stored in and answered from Redis again
                    break
                assert time.monotonic() - back < 1.0
                time.sleep(0.02)
            # Both workers use the cache again (each has its own connections).
            assert set(statuses(load(server.base_url, "/outage/y", 40, 10))) == {200}
            assert len({r.text for r in load(server.base_url, "/outage/y", 40, 10)}) == 1
