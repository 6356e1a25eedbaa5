"""Issue 19's "few round trips": a request that loads its session, checks a rate limit and hits
the cache makes 2 round trips to Redis with carboy's scale modules, because the limiter sends
the session's load in its own round trip (``LimitScript.check(prefetch=...)``).

Round trips are counted on the client (``benchmarks.shared_state.RoundTrips``: one
``send_packed_command`` is one trip), against a Redis each test starts itself.
"""

from __future__ import annotations

import sys
import typing as t
from pathlib import Path

import pytest
import redis

import carboy
from carboy import session
from carboy.scale.caching import Cache
from carboy.scale.limiter import Limiter, get_remote_address
from carboy.scale.sessions import Session, session_lock
from redis_servers import RedisServer

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
