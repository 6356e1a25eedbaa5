"""Flask-Caching with its Redis backend: cached views are answered from Redis."""

from __future__ import annotations

import pickle

import pytest
import redis
from flask import Flask, Response, jsonify, request
from flask_caching import Cache

REDIS_URL = "redis://127.0.0.1:6379"


class Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def tick(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]


def create_app(prefix: str, counter: Counter) -> Flask:
    app = Flask(__name__)
    app.config.update(
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_URL=REDIS_URL,
        CACHE_KEY_PREFIX=f"{prefix}:",
        CACHE_DEFAULT_TIMEOUT=300,
    )
    cache = Cache(app)

    @app.get("/report")
    @cache.cached()
    def report() -> str:
        return f"report built {counter.tick('report')} time(s)"

    @app.get("/report/async")
    @cache.cached()
    async def report_async() -> str:
        return f"async report built {counter.tick('report_async')} time(s)"

    @app.get("/stats")
    @cache.cached(key_prefix="stats-json")
    def stats() -> object:
        # A Response object is what gets pickled into Redis here.
        return jsonify(builds=counter.tick("stats"), unit="widgets")

    @app.get("/search")
    @cache.cached(query_string=True)
    def search() -> dict[str, object]:
        return {"q": request.args.get("q"), "run": counter.tick("search")}

    @app.get("/flagged")
    @cache.cached(response_hit_indication=True)
    def flagged() -> str:
        return f"flagged {counter.tick('flagged')}"

    @cache.memoize()
    def square(n: int) -> int:
        counter.tick("square")
        return n * n

    @app.get("/square/<int:n>")
    def square_view(n: int) -> dict[str, int]:
        return {"n": n, "square": square(n)}

    @app.post("/report/refresh")
    def refresh() -> tuple[str, int]:
        cache.delete("view//report")
        return "", 204

    return app


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def app(redis_prefix: str, counter: Counter, client_class: type) -> Flask:
    app = create_app(redis_prefix, counter)
    app.test_client_class = client_class
    return app


def test_cached_view_runs_once_and_lives_in_redis(
    app: Flask, counter: Counter, redis_client: redis.Redis, redis_prefix: str
) -> None:
    client = app.test_client()
    key = f"{redis_prefix}:view//report"
    assert not redis_client.exists(key)

    first = client.get("/report")
    assert first.status_code == 200
    assert first.text == "report built 1 time(s)"
    assert redis_client.exists(key)
    assert 0 < redis_client.ttl(key) <= 300

    second = client.get("/report")
    assert second.text == "report built 1 time(s)"
    assert counter.calls["report"] == 1

    # The stored value is what the view returned, so a second process would be served too.
    stored = redis_client.get(key)
    assert stored is not None
    assert stored[:1] == b"!"  # cachelib's marker for a pickled value
    assert pickle.loads(stored[1:]) == "report built 1 time(s)"

    # Another app (another worker, say) sharing the Redis answers from the cache as well.
    other_counter = Counter()
    other = create_app(redis_prefix, other_counter).test_client()
    assert other.get("/report").text == "report built 1 time(s)"
    assert other_counter.calls == {}

    assert client.post("/report/refresh").status_code == 204
    assert not redis_client.exists(key)
    assert client.get("/report").text == "report built 2 time(s)"


def test_cached_async_view(
    app: Flask, counter: Counter, redis_client: redis.Redis, redis_prefix: str
) -> None:
    client = app.test_client()
    assert client.get("/report/async").text == "async report built 1 time(s)"
    assert client.get("/report/async").text == "async report built 1 time(s)"
    assert counter.calls["report_async"] == 1
    assert redis_client.exists(f"{redis_prefix}:view//report/async")


def test_cached_response_object(
    app: Flask, counter: Counter, redis_client: redis.Redis, redis_prefix: str
) -> None:
    client = app.test_client()
    first = client.get("/stats")
    second = client.get("/stats")
    assert first.json == second.json == {"builds": 1, "unit": "widgets"}
    assert second.mimetype == "application/json"
    assert counter.calls["stats"] == 1
    # The view's Response object went through pickle into Redis and back.
    stored = redis_client.get(f"{redis_prefix}:stats-json")
    assert stored is not None
    response = pickle.loads(stored[1:])
    assert isinstance(response, Response)
    assert response.get_json() == {"builds": 1, "unit": "widgets"}


def test_query_string_keys(app: Flask, counter: Counter) -> None:
    client = app.test_client()
    assert client.get("/search?q=a&page=1").json == {"q": "a", "run": 1}
    # Same parameters in another order: the same cache entry.
    assert client.get("/search?page=1&q=a").json == {"q": "a", "run": 1}
    assert client.get("/search?q=b").json == {"q": "b", "run": 2}
    assert counter.calls["search"] == 2


def test_hit_indication_header(app: Flask, counter: Counter) -> None:
    client = app.test_client()
    miss = client.get("/flagged")
    hit = client.get("/flagged")
    assert miss.text == hit.text == "flagged 1"
    assert "hit_cache" not in miss.headers
    assert hit.headers["hit_cache"] == "True"


def test_memoized_function(
    app: Flask, counter: Counter, redis_client: redis.Redis, redis_prefix: str
) -> None:
    client = app.test_client()
    assert client.get("/square/7").json == {"n": 7, "square": 49}
    assert client.get("/square/7").json == {"n": 7, "square": 49}
    assert client.get("/square/8").json == {"n": 8, "square": 64}
    assert counter.calls["square"] == 2
    # memoize keys carry the function's qualified name.
    assert any(b"square" in key for key in redis_client.scan_iter(match=f"{redis_prefix}:*"))
