"""Issue 19's "few round trips": a request that loads its session, checks a rate limit and hits
the cache makes 2 round trips to Redis with carboy's scale modules, because the limiter sends
the session's load in its own round trip (``LimitScript.check(prefetch=...)``, and
``LimitScript.acheck`` on the asyncio client with ``RATELIMIT_ASYNC``).

Round trips are counted on the client (``benchmarks.shared_state.RoundTrips``: one
``send_packed_command`` is one trip), against a Redis each test starts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import carboy
from carboy import session
from carboy.scale.caching import Cache
from carboy.scale.limiter import Limiter, get_remote_address
from carboy.scale.sessions import Session, session_lock
from carboy.testing import ASGIClient
from redis_servers import RedisServer
from test_scale_sessions import cluster  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.shared_state import RoundTrips  # noqa: E402

BOTH = "EVALSHA check_limits+EVALSHA session_load"


def shared_app(app: carboy.Carboy, url: str, **config: t.Any) -> Limiter:
    app.config.update(SECRET_KEY="k", REDIS_URL=url, SESSION_TYPE="redis", **config)
    Session(app)
    cache = Cache(app)
    limiter = Limiter(get_remote_address, app=app)

    @cache.cached(timeout=300, key_prefix="fragment")
    def fragment() -> str:
        return "<p>fragment</p>"

    @app.post("/login")
    def login() -> str:
        session["user"] = "ada"
        return "ok"

    @app.get("/shared")
    @limiter.limit("1000/minute")
    def shared() -> str:
        return f"{session['user']} {fragment()}"

    @app.post("/write")
    @limiter.limit("1000/minute")
    def write() -> str:
        session["other"] = session["user"] + "!"
        return "ok"

    @app.get("/no-session")
    @limiter.limit("2/minute")
    def no_session() -> str:
        return "none"

    @app.post("/locked")
    @limiter.limit("1000/minute")
    @session_lock
    def locked() -> str:
        session["n"] = session.get("n", 0) + 1
        return "ok"

    return limiter


def cookie(client: t.Any) -> dict[str, str]:
    answer = client.post("/login")
    assert answer.status_code == 200
    value = answer.headers["Set-Cookie"].split(";", 1)[0]
    return {"Cookie": value}


def test_session_limit_and_cached_fragment_in_two_round_trips(
    app: carboy.Carboy, client: t.Any
) -> None:
    with RedisServer() as server:
        shared_app(app, server.url)
        headers = cookie(client)
        assert client.get("/shared", headers=headers).get_data(as_text=True) == (
            "ada <p>fragment</p>"
        )  # fragment computed, scripts loaded
        with RoundTrips() as counter:
            answer = client.get("/shared", headers=headers)
        assert answer.status_code == 200
        assert answer.get_data(as_text=True) == "ada <p>fragment</p>"
        assert answer.headers["Vary"] == "Cookie"
        assert counter.trips == [BOTH, "GET"]


def test_a_prefetched_session_behaves_as_a_lazily_loaded_one(
    app: carboy.Carboy, client: t.Any
) -> None:
    with RedisServer() as server:
        shared_app(app, server.url)
        headers = cookie(client)
        # Writes merge per key after a prefetched load.
        assert client.post("/write", headers=headers).status_code == 200
        admin = server.client()
        sid_key = next(k for k in admin.keys("session:*") if b":lock" not in k)
        assert admin.hgetall(sid_key).keys() >= {b"user", b"other"}
        # A limited route that never uses its session: loaded in the limits' trip, but not
        # accessed: no Vary, no write, and its limit still answers 429.
        admin.config_resetstat()
        with RoundTrips() as counter:
            answers = [client.get("/no-session", headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert all("Vary" not in a.headers for a in answers[:2])
        assert counter.trips == [BOTH] * 3
        session_writes = {f"cmdstat_{c}" for c in ("hset", "hdel", "pexpire", "del", "set")}
        written = session_writes & set(admin.info("commandstats"))
        assert not written, written
        # A locked view takes its lock before it loads: no prefetch, exact counts.
        for _ in range(3):
            assert client.post("/locked", headers=headers).status_code == 200
        with RoundTrips() as counter:
            assert client.post("/locked", headers=headers).status_code == 200
        assert counter.trips[0] == "EVALSHA check_limits"
        assert "EVALSHA session_load" in counter.trips
        assert admin.hget(sid_key, "n") == b"4"


def test_scripts_flushed_from_redis_are_loaded_again(app: carboy.Carboy, client: t.Any) -> None:
    with RedisServer() as server:
        shared_app(app, server.url)
        headers = cookie(client)
        assert client.get("/shared", headers=headers).status_code == 200
        server.client().script_flush()
        for _ in range(2):  # NOSCRIPT for both: the limiter reloads, the session loads itself
            answer = client.get("/shared", headers=headers)
            assert answer.status_code == 200
            assert answer.get_data(as_text=True) == "ada <p>fragment</p>"
        with RoundTrips() as counter:
            assert client.get("/shared", headers=headers).status_code == 200
        assert counter.trips == [BOTH, "GET"]


def test_a_session_on_another_client_is_not_prefetched(app: carboy.Carboy, client: t.Any) -> None:
    with RedisServer() as server:
        other = redis.Redis.from_url(server.url)
        shared_app(app, server.url, SESSION_REDIS=other)
        headers = cookie(client)
        assert client.get("/shared", headers=headers).status_code == 200
        with RoundTrips() as counter:
            answer = client.get("/shared", headers=headers)
        assert answer.get_data(as_text=True) == "ada <p>fragment</p>"
        assert sorted(counter.trips) == sorted(
            ["EVALSHA check_limits", "EVALSHA session_load", "GET"]
        )
        other.close()


def test_redis_down_session_answers_503_never_500(app: carboy.Carboy, client: t.Any) -> None:
    with RedisServer() as server:
        shared_app(app, server.url)
        headers = cookie(client)
        assert client.get("/shared", headers=headers).status_code == 200
        server.stop()
        answer = client.get("/shared", headers=headers)
        assert answer.status_code == 503
        assert "session store" in answer.get_data(as_text=True)
        server.start()
        # The data was not persisted (no persistence): a fresh login works again at once.
        headers = cookie(client)
        assert client.get("/shared", headers=headers).status_code == 200


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_every_strategy_prefetches(strategy: str) -> None:
    app = carboy.Carboy(__name__)
    with RedisServer() as server:
        shared_app(app, server.url, RATELIMIT_STRATEGY=strategy)
        client = app.test_client()
        headers = cookie(client)
        client.get("/shared", headers=headers)
        with RoundTrips() as counter:
            answer = client.get("/shared", headers=headers)
        assert answer.get_data(as_text=True) == "ada <p>fragment</p>"
        assert counter.trips == [BOTH, "GET"]


# -- async views under ASGI, RATELIMIT_ASYNC: the limiter's coroutine hook loads the session ----


def async_app(url: str, *, hook_first: t.Any = None, **config: t.Any) -> carboy.Carboy:
    """An ASGI app whose views are ``async def`` (and one ``def``), its limits checked by the
    limiter's coroutine hook; *hook_first*, if given, is registered before the limiter."""
    app = carboy.Carboy(__name__)
    app.test_client_class = ASGIClient
    app.config.update(
        SECRET_KEY="k",
        REDIS_URL=url,
        SESSION_TYPE="redis",
        RATELIMIT_ASYNC=True,
        RATELIMIT_HEADERS_ENABLED=True,
        **config,
    )
    Session(app)
    cache = Cache(app)
    if hook_first is not None:
        app.before_request(hook_first)
    limiter = Limiter(get_remote_address, app=app)

    @cache.cached(timeout=300, key_prefix="afragment")
    async def afragment() -> str:
        return "<p>fragment</p>"

    @cache.cached(timeout=300, key_prefix="fragment")
    def fragment() -> str:
        return "<p>fragment</p>"

    @app.post("/login")
    async def login() -> str:
        session["user"] = "ada"
        return "ok"

    @app.get("/shared")
    @limiter.limit("1000/minute")
    async def shared() -> str:
        return f"{session['user']} {await afragment()}"

    @app.get("/sync-shared")
    @limiter.limit("1000/minute")
    def sync_shared() -> str:
        return f"{session['user']} {fragment()}"

    @app.post("/write")
    @limiter.limit("1000/minute")
    async def write() -> str:
        session["other"] = session["user"] + "!"
        return "ok"

    @app.get("/three")
    @limiter.limit("3/minute")
    async def three() -> str:
        return str(session["user"])

    @app.get("/unlimited")
    async def unlimited() -> str:
        return str(session["user"])

    @app.get("/no-session")
    @limiter.limit("1000/minute")
    async def no_session() -> str:
        return "none"

    @app.post("/locked")
    @limiter.limit("1000/minute")
    @session_lock
    async def locked() -> str:
        session["n"] = session.get("n", 0) + 1
        return "ok"

    return app


@contextlib.contextmanager
def sync_redis_on_the_loop() -> Iterator[list[str]]:
    """Records each command the sync Redis client sends from a thread running an event loop:
    each would block the loop until Redis answers."""
    cls = redis.connection.AbstractConnection
    real = cls.send_packed_command
    seen: list[str] = []

    def send(conn: t.Any, command: t.Any, check_health: bool = True) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            seen.append(repr(command)[:80])
        real(conn, command, check_health)

    cls.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        cls.send_packed_command = real  # type: ignore[method-assign]


def test_async_view_session_limit_and_cached_fragment_in_two_round_trips() -> None:
    """Before the limiter's coroutine hook loaded the session, an async view's session was
    loaded ahead in the thread pool: 3 round trips."""
    with RedisServer() as server:
        app = async_app(server.url)
        client = app.test_client()
        headers = cookie(client)
        with sync_redis_on_the_loop() as on_loop:
            first = client.get("/shared", headers=headers)  # fragment computed, scripts loaded
            assert first.get_data(as_text=True) == "ada <p>fragment</p>"
            with RoundTrips() as counter:
                answers = [client.get("/shared", headers=headers) for _ in range(3)]
        assert on_loop == []
        assert counter.trips == [BOTH, "GET"] * 3
        assert [a.get_data(as_text=True) for a in answers] == ["ada <p>fragment</p>"] * 3
        assert all(a.headers["Vary"] == "Cookie" for a in answers)
        remaining = [first.headers["X-RateLimit-Remaining"]]
        remaining += [a.headers["X-RateLimit-Remaining"] for a in answers]
        assert remaining == ["999", "998", "997", "996"]
        # A def view with the coroutine hook: the same trip, the session used in the pool.
        assert client.get("/sync-shared", headers=headers).status_code == 200  # computed
        with RoundTrips() as counter:
            answer = client.get("/sync-shared", headers=headers)
        assert answer.get_data(as_text=True) == "ada <p>fragment</p>"
        assert counter.trips == [BOTH, "GET"]


def test_an_async_prefetched_session_behaves_as_a_lazily_loaded_one() -> None:
    with RedisServer() as server:
        app = async_app(server.url)
        client = app.test_client()
        headers = cookie(client)
        admin = server.client()
        with sync_redis_on_the_loop() as on_loop:
            # Writes merge per key after a load in the limits' trip.
            assert client.post("/write", headers=headers).status_code == 200
            # Exact counts, and the 429 too comes with the session loaded in the same trip.
            with RoundTrips() as counter:
                answers = [client.get("/three", headers=headers) for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]
            assert [a.get_data(as_text=True) for a in answers[:3]] == ["ada"] * 3
            assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
            assert counter.trips == [BOTH] * 4
            # No limit on the route: the hook loads the session alone, on the asyncio client.
            with RoundTrips() as counter:
                answer = client.get("/unlimited", headers=headers)
            assert answer.get_data(as_text=True) == "ada"
            assert counter.trips == ["EVALSHA session_load"]
            # Loaded in the limits' trip but never used: no Vary, no write.
            admin.config_resetstat()
            answer = client.get("/no-session", headers=headers)
            assert answer.status_code == 200 and "Vary" not in answer.headers
            session_writes = {f"cmdstat_{c}" for c in ("hset", "hdel", "pexpire", "del", "set")}
            assert not session_writes & set(admin.info("commandstats"))
            # A locked view takes its lock, then loads, in the pool: no prefetch, exact counts.
            for _ in range(3):
                assert client.post("/locked", headers=headers).status_code == 200
            with RoundTrips() as counter:
                assert client.post("/locked", headers=headers).status_code == 200
        assert on_loop == []
        assert counter.trips.count("EVALSHA check_limits") == 1
        assert counter.trips.count("EVALSHA session_load") == 1
        sid_key = next(k for k in admin.keys("session:*") if b":lock" not in k)
        assert admin.hget(sid_key, "n") == b"4"
        assert admin.hgetall(sid_key).keys() >= {b"user", b"other"}


def test_async_views_reload_scripts_flushed_from_redis() -> None:
    with RedisServer() as server:
        app = async_app(server.url)
        client = app.test_client()
        headers = cookie(client)
        assert client.get("/shared", headers=headers).status_code == 200
        with sync_redis_on_the_loop() as on_loop:
            for path in ("/shared", "/unlimited", "/shared"):
                server.client().script_flush()
                # NOSCRIPT for both: the limiter reloads its script, the hook the session's.
                with RoundTrips() as counter:
                    answer = client.get(path, headers=headers)
                assert answer.status_code == 200
                assert answer.get_data(as_text=True).startswith("ada")
                assert "SCRIPT" in counter.trips and "EVALSHA session_load" in counter.trips
            with RoundTrips() as counter:
                assert client.get("/shared", headers=headers).status_code == 200
        assert on_loop == []
        assert counter.trips == [BOTH, "GET"]


def test_async_views_whose_session_the_hook_cannot_load_are_loaded_in_the_pool() -> None:
    """SESSION_REDIS (a sync client of the app's own), or a coroutine hook of the app's that
    runs before the limiter's (it may use the session on the loop): the thread pool's preload,
    as before, and the event loop still never waits on Redis."""
    seen: list[str] = []

    async def first() -> None:
        if carboy.request.path == "/shared":
            seen.append(session["user"])

    with RedisServer() as server:
        other = redis.Redis.from_url(server.url)
        for app in (
            async_app(server.url, SESSION_REDIS=other),
            async_app(server.url, hook_first=first),
        ):
            client = app.test_client()
            headers = cookie(client)
            assert client.get("/shared", headers=headers).status_code == 200
            with sync_redis_on_the_loop() as on_loop, RoundTrips() as counter:
                answer = client.get("/shared", headers=headers)
            assert answer.get_data(as_text=True) == "ada <p>fragment</p>"
            assert on_loop == []
            assert sorted(counter.trips) == sorted(
                ["EVALSHA check_limits", "EVALSHA session_load", "GET"]
            )
        assert seen == ["ada", "ada"]
        other.close()


def test_async_views_in_a_redis_outage_answer_503_never_500() -> None:
    with RedisServer() as server:
        app = async_app(server.url)
        client = app.test_client()
        headers = cookie(client)
        assert client.get("/shared", headers=headers).status_code == 200
        server.stop()
        with sync_redis_on_the_loop() as on_loop:
            answers = [client.get(path, headers=headers) for path in ("/shared", "/unlimited")]
            # The limiter's policy ("local": in memory) for a route that needs no session.
            free = client.get("/no-session", headers=headers)
        assert on_loop == []
        assert [a.status_code for a in answers] == [503, 503]
        assert all("session store" in a.get_data(as_text=True) for a in answers)
        assert free.status_code == 200 and free.headers["X-RateLimit-Remaining"] == "999"
        server.start()
        headers = cookie(client)
        assert client.get("/shared", headers=headers).status_code == 200


def test_async_views_on_a_redis_cluster(request: pytest.FixtureRequest) -> None:
    """On a cluster the limits' keys and the session's may live on different nodes: no
    pipeline; the hook then loads the session alone, still on the asyncio client."""
    url = request.getfixturevalue("cluster")
    app = async_app(url, SESSION_KEY_PREFIX=f"rt{id(request):x}:")
    client = app.test_client()
    headers = cookie(client)
    with sync_redis_on_the_loop() as on_loop:
        for path in ("/unlimited", "/no-session"):  # the clients made, the scripts loaded
            assert client.get(path, headers=headers).status_code == 200
        with RoundTrips() as counter:
            answers = [client.get("/three", headers=headers) for _ in range(4)]
    assert on_loop == []
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.get_data(as_text=True) for a in answers[:3]] == ["ada"] * 3
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert counter.trips == ["EVALSHA check_limits", "EVALSHA session_load"] * 4
