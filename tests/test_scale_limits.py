"""Rate limits (carboy.scale.limiter): Flask-Limiter's API, exact across workers on Redis's
clock, one round trip per request, a designed storage-outage policy, and an async path."""

from __future__ import annotations

import inspect
import random
import shutil
import socket
import subprocess
import time
import typing as t
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import STRATEGIES, MovingWindowRateLimiter

import carboy
from carboy import Blueprint, request
from carboy.scale.connection import RedisConnection, get_redis
from carboy.scale.limit_storage import LimitScript, ServerClockRedisStorage, lua_source
from carboy.scale.limiter import (
    ExemptionScope,
    Limiter,
    RateLimitExceeded,
    get_remote_address,
)
from carboy.testing import ASGIClient
from redis_servers import MACHINE_URL, RedisServer, machine_redis_or_skip
from servers import Server, free_port, tool

STRATEGY_NAMES = ["fixed-window", "moving-window", "sliding-window-counter"]


@pytest.fixture
def machine() -> Iterator[tuple[redis.Redis, str]]:
    """The machine's Redis and a key prefix of this test's own, cleaned up afterwards."""
    client = machine_redis_or_skip()
    prefix = f"carboy-limits-{uuid.uuid4().hex}"
    yield client, prefix
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def statuses(client: t.Any, path: str, n: int) -> list[int]:
    return [client.get(path).status_code for _ in range(n)]


# -- the API, in one process (memory://) ------------------------------------------------------


def test_default_and_route_limits_with_headers(app: carboy.Carboy, client: t.Any) -> None:
    app.config["RATELIMIT_HEADERS_ENABLED"] = True
    limiter = Limiter(get_remote_address, app=app, default_limits=["3/minute"])

    @app.route("/")
    def index() -> str:
        return "ok"

    @app.route("/login")
    @limiter.limit("2/minute", error_message="slow down")
    def login() -> str:
        return "in"

    @app.route("/free")
    @limiter.exempt
    def free() -> str:
        return "free"

    first = client.get("/")
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert statuses(client, "/", 3) == [200, 200, 429]
    limited = client.get("/")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "3 per 1 minute" in limited.get_data(as_text=True)
    # The route's own limit replaces the default one.
    assert statuses(client, "/login", 3) == [200, 200, 429]
    assert "slow down" in client.get("/login").get_data(as_text=True)
    assert statuses(client, "/free", 5) == [200] * 5
    assert "X-RateLimit-Limit" not in client.get("/free").headers


def test_retry_after_on_429_even_without_headers(app: carboy.Carboy, client: t.Any) -> None:
    Limiter(get_remote_address, app=app, default_limits=["1/hour"])
    app.add_url_rule("/", "index", lambda: "ok")
    assert client.get("/").status_code == 200
    limited = client.get("/")
    assert limited.status_code == 429
    assert 3500 <= int(limited.headers["Retry-After"]) <= 3600
    assert "X-RateLimit-Limit" not in limited.headers


def test_error_handler_receives_rate_limit_exceeded(app: carboy.Carboy, client: t.Any) -> None:
    limiter = Limiter(get_remote_address, app=app)

    @app.errorhandler(429)
    def too_many(e: RateLimitExceeded) -> tuple[str, int]:
        assert isinstance(e, RateLimitExceeded)
        return f"custom {e.limit.limit.amount} {e.description}", 429

    @app.route("/")
    @limiter.limit("1/minute")
    def index() -> str:
        return "ok"

    assert client.get("/").status_code == 200
    assert client.get("/").get_data(as_text=True) == "custom 1 1 per 1 minute"


def test_shared_methods_per_method_cost_and_exempt_when(app: carboy.Carboy, client: t.Any) -> None:
    limiter = Limiter(get_remote_address, app=app)
    shared = limiter.shared_limit("3/minute", scope="both")

    @app.route("/a")
    @shared
    def a() -> str:
        return "a"

    @app.route("/b")
    @shared
    def b() -> str:
        return "b"

    @app.route("/m", methods=["GET", "POST"])
    @limiter.limit("1/minute", per_method=True)
    def m() -> str:
        return "m"

    @app.route("/post-only", methods=["GET", "POST"])
    @limiter.limit("1/minute", methods=["POST"])
    def post_only() -> str:
        return "p"

    @app.route("/costly")
    @limiter.limit("5/minute", cost=lambda: int(request.args.get("cost", 1)))
    def costly() -> str:
        return "c"

    @app.route("/vip")
    @limiter.limit("1/minute", exempt_when=lambda: request.args.get("vip") == "1")
    def vip() -> str:
        return "v"

    assert [client.get(p).status_code for p in ("/a", "/b", "/a", "/b")] == [200, 200, 200, 429]
    assert client.get("/m").status_code == 200
    assert client.post("/m").status_code == 200
    assert client.get("/m").status_code == 429
    assert statuses(client, "/post-only", 3) == [200, 200, 200]
    assert [client.post("/post-only").status_code for _ in range(2)] == [200, 429]
    assert client.get("/costly?cost=4").status_code == 200
    assert client.get("/costly?cost=1").status_code == 200
    assert client.get("/costly?cost=1").status_code == 429
    assert statuses(client, "/vip?vip=1", 3) == [200, 200, 200]
    assert statuses(client, "/vip", 2) == [200, 429]


def test_deduct_when_counts_only_chosen_responses(app: carboy.Carboy, client: t.Any) -> None:
    limiter = Limiter(get_remote_address, app=app)

    @app.route("/login")
    @limiter.limit("2/minute", deduct_when=lambda r: r.status_code == 401)
    def login() -> tuple[str, int]:
        return ("ok", 200) if request.args.get("ok") else ("no", 401)

    assert statuses(client, "/login?ok=1", 4) == [200] * 4
    assert statuses(client, "/login", 3) == [401, 401, 429]


def test_blueprints_limits_exemptions_and_filters(app: carboy.Carboy, client: t.Any) -> None:
    limiter = Limiter(get_remote_address, app=app, default_limits=["1/minute"])
    api = Blueprint("api", __name__)
    open_bp = Blueprint("open", __name__)
    limiter.limit("2/minute")(api)
    limiter.exempt(open_bp)

    @api.route("/x")
    def x() -> str:
        return "x"

    @open_bp.route("/y")
    def y() -> str:
        return "y"

    @app.route("/z")
    def z() -> str:
        return "z"

    @limiter.request_filter
    def trusted() -> bool:
        return request.headers.get("X-Trusted") == "1"

    app.register_blueprint(api, url_prefix="/api")
    app.register_blueprint(open_bp, url_prefix="/open")
    assert statuses(client, "/api/x", 3) == [200, 200, 429]
    assert statuses(client, "/open/y", 3) == [200] * 3
    assert statuses(client, "/z", 2) == [200, 429]
    assert client.get("/z", headers={"X-Trusted": "1"}).status_code == 200


def test_config_keys(app: carboy.Carboy, client: t.Any) -> None:
    app.config.update(
        RATELIMIT_DEFAULT="2/minute",
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_HEADER_LIMIT="X-Quota",
        RATELIMIT_APPLICATION="3/minute",
    )
    limiter = Limiter(get_remote_address, app=app)
    app.add_url_rule("/a", "a", lambda: "a")
    app.add_url_rule("/b", "b", lambda: "b")

    @app.route("/c")
    def c() -> str:
        shown = limiter.current_limit
        assert shown is not None and not shown.breached and shown.limit.amount == 2
        return ",".join(f"{x.limit.amount}:{x.remaining}" for x in limiter.current_limits)

    assert client.get("/c").get_data(as_text=True) == "3:2,2:1"
    assert client.get("/a").headers["X-Quota"] == "2"
    # The application limit's bucket is shared by every route.
    assert [client.get(p).status_code for p in ("/a", "/b")] == [200, 429]


def test_flask_limiters_per_group_config_keys(app: carboy.Carboy, client: t.Any) -> None:
    """RATELIMIT_DEFAULTS_* and RATELIMIT_APPLICATION_* (Flask-Limiter's spellings)."""
    app.config.update(
        RATELIMIT_APPLICATION="4/minute",
        RATELIMIT_APPLICATION_COST=2,
        RATELIMIT_APPLICATION_EXEMPT_WHEN=lambda: request.args.get("skip") == "app",
        RATELIMIT_DEFAULT="1/minute",
        RATELIMIT_DEFAULTS_PER_METHOD=True,
        RATELIMIT_DEFAULTS_EXEMPT_WHEN=lambda: request.args.get("skip") == "default",
    )
    Limiter(get_remote_address, app=app)
    app.add_url_rule("/", "index", lambda: "ok", methods=["GET", "POST"])
    # The application bucket (cost 2 of 4) lets two requests through, the default one per method.
    assert [client.get("/").status_code, client.post("/").status_code] == [200, 200]
    assert client.get("/?skip=default").status_code == 429  # the application limit is spent
    assert client.get("/?skip=app").status_code == 429  # the default GET limit is spent
    assert client.put("/?skip=app").status_code == 405


def test_disabled_and_bad_config(app: carboy.Carboy, client: t.Any) -> None:
    app.config["RATELIMIT_ENABLED"] = False
    Limiter(get_remote_address, app=app, default_limits=["1/minute"])
    app.add_url_rule("/", "index", lambda: "ok")
    assert statuses(client, "/", 3) == [200] * 3
    other = carboy.Carboy(__name__)
    with pytest.raises(ValueError, match="strategy"):
        Limiter(get_remote_address, app=other, strategy="leaky")
    with pytest.raises(ValueError, match="RATELIMIT_STORAGE_OUTAGE"):
        Limiter(get_remote_address, app=other, storage_outage="maybe")
    with pytest.raises(ValueError, match="Bad rate limit"):
        Limiter(get_remote_address, app=other, default_limits=["ten per fortnight"])


def test_flask_limiter_names_import_from_one_line() -> None:
    import flask_limiter
    import flask_limiter.util

    import carboy.scale.limiter as ours

    for name in ("Limiter", "RateLimitExceeded", "ExemptionScope", "RequestLimit", "HeaderNames"):
        assert hasattr(flask_limiter, name) and hasattr(ours, name), name
    assert hasattr(flask_limiter.util, "get_remote_address")
    assert issubclass(RateLimitExceeded, __import__("werkzeug").exceptions.TooManyRequests)
    assert ExemptionScope.DEFAULT in ExemptionScope.APPLICATION | ExemptionScope.DEFAULT


# -- Redis: every strategy, sync and async hooks, exact ---------------------------------------


@pytest.mark.parametrize("hooks", ["sync", "async"])
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_redis_strategies_exact(
    app: carboy.Carboy, client: t.Any, machine: tuple[redis.Redis, str], strategy: str, hooks: str
) -> None:
    _, prefix = machine
    app.config.update(
        REDIS_URL=MACHINE_URL,
        RATELIMIT_STRATEGY=strategy,
        RATELIMIT_KEY_PREFIX=prefix,
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_ASYNC=hooks == "async",
    )
    limiter = Limiter(get_remote_address, app=app, default_limits=["5/minute", "7/hour"])

    @app.route("/s")
    def sync_view() -> str:
        return "s"

    @app.route("/a")
    async def async_view() -> str:
        return "a"

    for path in ("/s", "/a"):
        answers = [client.get(path) for _ in range(7)]
        assert [r.status_code for r in answers] == [200] * 5 + [429] * 2
        assert [r.headers["X-RateLimit-Remaining"] for r in answers[:5]] == [
            "4",
            "3",
            "2",
            "1",
            "0",
        ]
        assert all(int(r.headers["Retry-After"]) >= 1 for r in answers[5:])
    # limits' own strategy reads what the script wrote, on the same keys.
    stats = limiter.limiter.get_window_stats(parse("5/minute"), prefix, "127.0.0.1", "sync_view")
    assert stats.remaining == 0


def test_async_hooks_never_use_the_sync_client(machine: tuple[redis.Redis, str]) -> None:
    """With RATELIMIT_ASYNC under ASGI, limits are checked by a coroutine hook on the asyncio
    client of the server's loop: the sync client (which would block the loop) never opens a
    connection."""
    _, prefix = machine
    app = carboy.Carboy(__name__)
    app.config.update(REDIS_URL=MACHINE_URL, RATELIMIT_ASYNC=True, RATELIMIT_KEY_PREFIX=prefix)
    app.test_client_class = ASGIClient
    limiter = Limiter(get_remote_address, app=app, default_limits=["2/minute"])

    @app.route("/")
    async def index() -> str:
        return "ok"

    assert inspect.iscoroutinefunction(limiter._acheck_request)
    assert app.before_request_funcs[None] == [limiter._acheck_request]
    assert statuses(app.test_client(), "/", 3) == [200, 200, 429]
    connection = get_redis(app)
    assert connection.sync.connection_pool._created_connections == 0  # type: ignore[attr-defined]


def test_one_round_trip_for_all_limits_of_a_request(app: carboy.Carboy, client: t.Any) -> None:
    with RedisServer() as server:
        app.config.update(REDIS_URL=server.url, RATELIMIT_HEADERS_ENABLED=True)
        limiter = Limiter(
            get_remote_address, app=app, default_limits=["5/minute"], application_limits=["50/hour"]
        )

        @app.route("/")
        @limiter.limit("3/second;9/minute", override_defaults=False)
        def index() -> str:
            return "ok"

        assert client.get("/").status_code == 200  # loads the script once
        admin = server.client()
        admin.config_resetstat()
        answer = client.get("/")
        stats = admin.info("commandstats")
        assert answer.status_code == 200
        assert answer.headers["X-RateLimit-Limit"] == "3"
        calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
        calls.pop("info", None)
        calls.pop("config|resetstat", None)
        # One command from the app; the rest ran inside it, on the server (4 limits: 4 INCRBY).
        assert calls.pop("evalsha") == 1
        assert calls == {"time": 1, "incrby": 4, "pttl": 4}, calls


def _cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too and below 65536."""
    while True:
        port = random.randrange(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisServer]]:
    """A Redis Cluster of 3 primaries on loopback ports, made with the machine's
    ``redis-server`` and ``redis-cli --cluster create``."""
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (Debian package redis-tools)")
    nodes: list[RedisServer] = []
    try:
        for _ in range(3):
            node = RedisServer(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            node.port = _cluster_port()
            node.start()
            nodes.append(node)
        create = ["redis-cli", "--cluster", "create", "--cluster-replicas", "0", "--cluster-yes"]
        create += [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while any(n.client().cluster("info")["cluster_state"] != "ok" for n in nodes):
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.__exit__(None, None, None)


@pytest.mark.parametrize("hooks", ["sync", "async"])
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_redis_cluster(cluster: list[RedisServer], strategy: str, hooks: str) -> None:
    app = carboy.Carboy(__name__)
    app.config.update(
        REDIS_URL=f"redis+cluster://127.0.0.1:{cluster[0].port}",
        RATELIMIT_STRATEGY=strategy,
        RATELIMIT_ASYNC=hooks == "async",
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_KEY_PREFIX=uuid.uuid4().hex,
    )
    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=["5/minute", "7/hour"],
        application_limits=["6/minute"],
    )
    app.add_url_rule("/", "index", lambda: "ok")
    if hooks == "async":
        app.test_client_class = ASGIClient
    answers = [app.test_client().get("/") for _ in range(7)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 2
    assert [r.headers["X-RateLimit-Remaining"] for r in answers[:5]] == ["4", "3", "2", "1", "0"]
    # The three limits' keys are spread over the nodes; limits' API reads them.
    args = (app.config["RATELIMIT_KEY_PREFIX"], "127.0.0.1", "index")
    assert limiter.limiter.get_window_stats(parse("7/hour"), *args).remaining == 2


# -- the Lua scripts ------------------------------------------------------------------------


def _skewed(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def test_moving_window_scripts_use_the_servers_clock(
    machine: tuple[redis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts whose clocks are 2 minutes apart share a 5/minute moving window. limits'
    stock storage takes each host's clock, so host B sees host A's entries as expired and lets
    5 more through; the server-clock scripts let exactly 5 through."""
    _, prefix = machine
    item = parse("5/minute")
    connection = RedisConnection(url=MACHINE_URL)
    connection._options = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}

    def through(make: t.Callable[[], t.Any]) -> int:
        allowed = 0
        for host in (0, 1):
            if host:
                _skewed(monkeypatch, 120)
            strategy = MovingWindowRateLimiter(make())
            allowed += sum(strategy.hit(item, prefix, make.__name__) for _ in range(5))
        monkeypatch.undo()
        return allowed

    def stock() -> RedisStorage:
        return RedisStorage(MACHINE_URL)

    def server_clock() -> ServerClockRedisStorage:
        return ServerClockRedisStorage(connection)

    assert through(stock) == 10
    assert through(server_clock) == 5
    storage = ServerClockRedisStorage(connection)
    start, count = storage.get_moving_window(item.key_for(prefix, "server_clock"), 5, 60)
    assert count == 5
    assert abs(start - time.time()) < 5


def test_moving_window_lua_files(machine: tuple[redis.Redis, str]) -> None:
    client, prefix = machine
    acquire = client.register_script(lua_source("moving_window_acquire"))
    read = client.register_script(lua_source("moving_window_read"))
    key = f"{prefix}:mw"
    assert read([key], [60, 3])[1] == 0
    assert [acquire([key], [3, 60, 1]) for _ in range(4)] == [1, 1, 1, None]
    assert acquire([key], [3, 60, 4]) is None  # more than the limit at once
    oldest, count, now = read([key], [60, 3])
    assert count == 3
    assert float(now) - 5 < float(oldest) <= float(now)
    assert 0 < client.ttl(key) <= 60


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_check_limits_lua_matches_limits_strategies(
    machine: tuple[redis.Redis, str], strategy: str
) -> None:
    """check_limits.lua makes the decisions of limits' own strategy, on the same keys: hits
    alternate between the script and limits' strategy over ServerClockRedisStorage."""
    _, prefix = machine
    connection = RedisConnection(url=MACHINE_URL)
    connection._options = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
    storage = ServerClockRedisStorage(connection)
    script = LimitScript(connection, strategy, storage.key_prefix)
    ours = STRATEGIES[strategy](storage)
    item = parse("6/minute")
    key = item.key_for(prefix, "who")
    got = []
    for i in range(10):
        if i % 2:
            got.append(ours.hit(item, prefix, "who"))
        else:
            status, remaining, reset = script.check([(item, key, 1, True)], True)[0]
            got.append(status == 1)
            assert remaining == ours.get_window_stats(item, prefix, "who").remaining
            assert 0 <= reset <= 120
    assert got == [True] * 6 + [False] * 4
    # test mode takes nothing; stop_on_breach skips what follows a breach
    wide = parse("100/hour")
    results = script.check(
        [(item, key, 1, False), (item, key, 1, True), (wide, wide.key_for(prefix, "w"), 1, True)],
        True,
    )
    assert [r[0] for r in results] == [0, -1, -1]
    assert ours.get_window_stats(wide, prefix, "w").remaining == 100


# -- storage outage, in process -------------------------------------------------------------


def test_outage_policies_and_recovery() -> None:
    """Redis stops mid-run: each policy, with sync hooks (WSGI) and async hooks (ASGI)."""
    with RedisServer() as server:
        clients = {}
        for policy in ("open", "closed", "local"):
            for hooks in ("sync", "async"):
                app = carboy.Carboy(__name__)
                app.config.update(
                    REDIS_URL=server.url,
                    RATELIMIT_STORAGE_OUTAGE=policy,
                    RATELIMIT_ASYNC=hooks == "async",
                    RATELIMIT_KEY_PREFIX=f"{policy}-{hooks}",
                )
                limiter = Limiter(get_remote_address, app=app)

                @app.route("/")
                @limiter.limit("3/minute")
                def index() -> str:
                    return "ok"

                @app.route("/free")
                def free() -> str:
                    return "free"

                if hooks == "async":
                    app.test_client_class = ASGIClient
                clients[policy, hooks] = app.test_client()
                assert clients[policy, hooks].get("/").status_code == 200
        server.stop()
        for (policy, hooks), client in clients.items():
            started = time.monotonic()
            during = statuses(client, "/", 6)
            assert time.monotonic() - started < 5  # no hang
            assert client.get("/free").status_code == 200
            if policy == "open":
                assert during == [200] * 6
            elif policy == "closed":
                assert during == [503] * 6
                answer = client.get("/")
                assert answer.headers["Retry-After"] == "1"
                assert "storage is unavailable" in answer.get_data(as_text=True)
            else:  # the same limit, in this process's memory
                assert during == [200] * 3 + [429] * 3, hooks
        server.start()
        time.sleep(1.0)  # back within a second
        for client in clients.values():
            assert statuses(client, "/", 4) == [200, 200, 200, 429]  # a fresh Redis counts again
        assert len(server.client().keys("LIMITS:*")) == 6


def test_one_request_per_interval_waits_on_a_silent_redis() -> None:
    """A Redis that accepts connections and never answers costs a request the reply timeout.
    During an outage one request per RETRY_INTERVAL tries it again; the others that arrive
    meanwhile keep to the policy at once instead of all waiting on it too."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        app = carboy.Carboy(__name__)
        app.config.update(
            REDIS_URL=f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
            REDIS_SOCKET_TIMEOUT=0.3,
            RATELIMIT_STORAGE_OUTAGE="open",
        )
        limiter = Limiter(get_remote_address, app=app)
        app.add_url_rule("/", "index", limiter.limit("3/minute")(lambda: "ok"))
        assert app.test_client().get("/").status_code == 200  # waits, then marks the outage
        time.sleep(0.6)  # the next attempt is due

        def timed(_: int) -> float:
            started = time.monotonic()
            assert app.test_client().get("/").status_code == 200
            return time.monotonic() - started

        with ThreadPoolExecutor(8) as pool:
            took = list(pool.map(timed, range(8)))
    assert sum(1 for s in took if s > 0.25) == 1, took


def test_flask_limiter_outage_keys_map_to_policies() -> None:
    def policy(**config: t.Any) -> str:
        app = carboy.Carboy(__name__)
        app.config.update(config)
        return t.cast(str, Limiter(get_remote_address, app=app)._outage)

    assert policy() == "local"
    assert policy(RATELIMIT_SWALLOW_ERRORS=True) == "open"
    assert policy(RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True) == "local"
    assert policy(RATELIMIT_SWALLOW_ERRORS=True, RATELIMIT_STORAGE_OUTAGE="closed") == "closed"


# -- real servers ---------------------------------------------------------------------------


def blast(url: str, n: int, concurrency: int = 16) -> list[httpx.Response]:
    """*n* GETs of *url* from a bounded pool of threads sharing one httpx client."""
    with httpx.Client(timeout=20) as http, ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: http.get(url), range(n)))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, RedisServer, str]]:
    """tests/served_apps/scale_limits_app.py on 4 gunicorn workers, with a Redis of its own
    (for the outage) and the machine's; the machine's keys are deleted afterwards."""
    client = machine_redis_or_skip()
    prefix = f"carboy-limits-{uuid.uuid4().hex}"
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--timeout", "30"),
        "scale_limits_app:app",
    ]
    try:
        with RedisServer() as own:
            env = {
                "LIMITS_REDIS_URL": own.url,
                "LIMITS_MACHINE_URL": MACHINE_URL,
                "LIMITS_PREFIX": prefix,
            }
            log = tmp_path_factory.mktemp("limits") / "gunicorn.log"
            with Server(cmd, port, log, env) as server:
                server.wait_until_up("/sync")
                yield server, own, prefix
    finally:
        keys = list(client.scan_iter(match=f"*{prefix}*"))
        if keys:
            client.delete(*keys)


WORKERS = 4


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_exactly_100_per_minute_across_4_gunicorn_workers(
    served: tuple[Server, RedisServer, str], strategy: str
) -> None:
    server, _, _ = served
    answers = blast(f"{server.base_url}/strategy/{strategy}", 160)
    codes = Counter(r.status_code for r in answers)
    assert codes == {200: 100, 429: 60}, server.output()
    assert all(int(r.headers["Retry-After"]) >= 1 for r in answers if r.status_code == 429)
    assert len({r.text for r in answers if r.status_code == 200}) >= 2  # several workers served


def test_redis_stopped_mid_run_under_gunicorn(served: tuple[Server, RedisServer, str]) -> None:
    """Each outage policy (a limiter of its own per route) on 4 gunicorn workers, while the
    app's Redis is stopped and started again."""
    server, own, _ = served
    policies = ("open", "closed", "local")
    url = server.base_url + "/outage/"
    before = {p: Counter(r.status_code for r in blast(url + p, 8, 4)) for p in policies}
    own.stop()
    during = {p: Counter(r.status_code for r in blast(url + p, 60, 8)) for p in policies}
    free = blast(server.base_url + "/sync", 8, 4)
    own.start()
    time.sleep(1.0)  # every worker is back on Redis within a second
    after = {p: Counter(r.status_code for r in blast(url + p, 8, 4)) for p in policies}
    output = server.output()
    assert all(r.status_code == 200 for r in free)
    assert before == {p: {200: 5, 429: 3} for p in policies}, output
    assert during["open"] == {200: 60}, output
    assert during["closed"] == {503: 60}, output
    # Each worker enforces the limit in its own memory: at most 5 per worker get through.
    local = during["local"]
    assert set(local) == {200, 429} and local[200] <= 5 * WORKERS, output
    assert after == {p: {200: 5, 429: 3} for p in policies}, output


def test_async_view_under_uvicorn_exact(tmp_path: Path, machine: tuple[redis.Redis, str]) -> None:
    _, prefix = machine
    port = free_port()
    cmd = [
        *tool("uvicorn"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
        "scale_limits_app:app",
    ]
    env = {
        "LIMITS_REDIS_URL": MACHINE_URL,
        "LIMITS_MACHINE_URL": MACHINE_URL,
        "LIMITS_PREFIX": prefix,
    }
    with Server(cmd, port, tmp_path / "uvicorn.log", env) as server:
        server.wait_until_up("/sync")
        answers = blast(server.base_url + "/async", 130)
    assert Counter(r.status_code for r in answers) == {200: 100, 429: 30}, server.output()


def test_storage_options_from_the_argument_and_the_config() -> None:
    """``RATELIMIT_STORAGE_OPTIONS`` updates ``storage_options`` (Flask-Limiter's order) and
    reaches limits' storage, or the redis-py client of the limiter's own Redis URL."""
    app = carboy.Carboy(__name__)
    app.config["RATELIMIT_STORAGE_URI"] = "memory://"
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"wrap_exceptions": True}
    limiter = Limiter(get_remote_address, app=app, storage_options={"wrap_exceptions": False})
    assert limiter._storage.wrap_exceptions is True  # type: ignore[attr-defined]

    app = carboy.Carboy(__name__)
    app.config["RATELIMIT_STORAGE_URI"] = "redis://127.0.0.1:6379/15"
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_timeout": 2.5}
    limiter = Limiter(get_remote_address, app=app)
    client = limiter._script.connection.sync  # type: ignore[union-attr]
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 2.5

    app = carboy.Carboy(__name__)
    app.config["RATELIMIT_STORAGE_URI"] = "redis://127.0.0.1:6379/15"
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_timeuot": 2.5}  # misspelt
    with pytest.raises(TypeError, match="socket_timeuot"):
        Limiter(get_remote_address, app=app)
