"""carboy.scale.sessions: Redis sessions that lose no concurrent update (issue 19, part 2).

The concurrency proofs run against gunicorn with 4 workers (8 threads each) serving
``served_apps/scale_sessions_app.py``, driven by a bounded pool of httpx clients that share one
session cookie; the rest run in process through the ``app`` fixture (WSGI short path, WSGI
method chain, ASGI). Tests that count commands or stop Redis use a ``RedisServer`` of their own.
"""

from __future__ import annotations

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
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis

import carboy
from carboy import session
from carboy.scale.sessions import (
    CREATED_FIELD,
    RedisSession,
    RedisSessionInterface,
    Session,
    _script,
    arevoke_user_sessions,
    revoke_user_sessions,
    session_lock,
)
from redis_servers import MACHINE_URL, RedisServer, machine_redis_or_skip
from servers import Server, free_port, tool

APP = "scale_sessions_app:app"
POOL = 32  # concurrent clients driving a served app


# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def machine() -> Iterator[tuple[redis.Redis, str]]:
    """The machine's Redis and a key prefix of this test's own; its keys are deleted after."""
    client = machine_redis_or_skip()
    prefix = f"test-sessions-{uuid.uuid4().hex[:10]}:"
    yield client, prefix
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def served(url: str, prefix: str, log: Path) -> Server:
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "4",
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--timeout",
        "30",
        APP,
    ]
    env = {"SCALE_SESSIONS_REDIS_URL": url, "SCALE_SESSIONS_PREFIX": prefix}
    server = Server(cmd, port, log, env).start()
    server.wait_until_up("/ping")
    return server


def http(base: str) -> httpx.Client:
    """One client for every thread of a test (a client is thread-safe; making one per thread
    costs about 0.2 s each here, for its TLS context)."""
    limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
    return httpx.Client(base_url=base, timeout=30, limits=limits)


def new_session(client: httpx.Client) -> str:
    """Start a session on the served app; return its ``Cookie`` header."""
    r = client.post("/start")
    assert r.status_code == 200, r.text
    return f"session={r.cookies['session']}"


def drive(client: httpx.Client, cookie: str, calls: list[tuple[str, str]]) -> list[httpx.Response]:
    """Send *calls* (method, path) with *cookie* from :data:`POOL` threads at once; return the
    responses in order."""

    def send(call: tuple[str, str]) -> httpx.Response:
        # The cookie goes as a header so that no jar is shared or updated between threads.
        return client.request(call[0], call[1], headers={"Cookie": cookie})

    with ThreadPoolExecutor(POOL) as pool:
        return list(pool.map(send, calls))


def make_app(url: str, prefix: str, **config: t.Any) -> carboy.Carboy:
    app = carboy.Carboy(__name__)
    app.config.update(
        SECRET_KEY="k", SESSION_TYPE="redis", REDIS_URL=url, SESSION_KEY_PREFIX=prefix, **config
    )
    Session(app)
    return app


def redis_app(app: carboy.Carboy, prefix: str, **config: t.Any) -> carboy.Carboy:
    """The conftest ``app`` with Redis sessions and the routes the in-process tests use."""
    app.config.update(
        SESSION_TYPE="redis", REDIS_URL=MACHINE_URL, SESSION_KEY_PREFIX=prefix, **config
    )
    Session(app)

    @app.get("/free")
    def free() -> str:
        return "free"

    @app.post("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "set"

    @app.get("/all")
    def everything() -> dict[str, t.Any]:
        return dict(session)

    @app.get("/async/all")
    async def async_everything() -> dict[str, t.Any]:
        return dict(session)

    @app.post("/async/set/<key>/<value>")
    async def async_set(key: str, value: str) -> str:
        session[key] = value
        return "set"

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session.regenerate()
        session.bind_user(user)
        return "in"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("_user_id"))

    @app.post("/cart/<item>")
    def cart(item: str) -> str:
        session.setdefault("cart", []).append(item)
        return "ok"

    @app.post("/cart-in-place/<item>")
    def cart_in_place(item: str) -> str:
        session["cart"].append(item)  # nested mutation, no top-level set
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        return "out"

    @app.post("/incr")
    def incr() -> str:
        return str(session.increment("n"))

    @app.post("/append/<item>")
    def append(item: str) -> str:
        return ",".join(session.append_to("items", item))

    @app.post("/locked")
    @session_lock
    def locked() -> str:
        session["m"] = session.get("m", 0) + 1
        return str(session["m"])

    @app.post("/async/locked")
    @session_lock
    async def async_locked() -> str:
        session["m"] = session.get("m", 0) + 1
        return str(session["m"])

    return app


def keys_of(client: redis.Redis, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=prefix + "*", count=1000))


# -- the Lua scripts -----------------------------------------------------------------------


def test_lua_load_returns_ttl_and_fields_and_enforces_absolute_lifetime(
    machine: tuple[redis.Redis, str],
) -> None:
    client, prefix = machine
    load = client.register_script(_script("session_load"))
    key = prefix + "{a}"
    assert load(keys=[key], args=[0, CREATED_FIELD]) == []
    client.hset(key, mapping={"x": "1", CREATED_FIELD: str(int(time.time() * 1000) - 5000)})
    client.pexpire(key, 60000)
    reply = load(keys=[key], args=[0, CREATED_FIELD])
    assert 0 < reply[0] <= 60000 and b"x" in reply[1:]
    assert load(keys=[key], args=[60000, CREATED_FIELD])[0] > 0  # 5 s old, 60 s allowed
    assert load(keys=[key], args=[1000, CREATED_FIELD]) == []  # 5 s old, 1 s allowed
    assert not client.exists(key)


def test_lua_save_merges_fields_and_never_resurrects_a_gone_session(
    machine: tuple[redis.Redis, str],
) -> None:
    client, prefix = machine
    save = client.register_script(_script("session_save"))
    key = prefix + "{b}"

    def run(must_exist: str, clear: str, sets: list[str], dels: list[str]) -> int:
        args = [60000, 0, must_exist, clear, CREATED_FIELD, 0, len(sets) // 2, *sets, *dels]
        return int(save(keys=[key], args=args))

    assert run("1", "0", ["a", "1"], []) == -1 and not client.exists(key)
    assert run("0", "0", ["a", "1"], []) == 1
    assert run("1", "0", ["b", "2"], []) == 1
    assert client.hget(key, "a") == b"1" and client.hget(key, "b") == b"2"
    assert 59000 < client.pttl(key) <= 60000
    assert run("1", "0", [], ["a"]) == 1 and client.hkeys(key) == [CREATED_FIELD.encode(), b"b"]
    assert run("1", "1", ["c", "3"], []) == 1
    assert sorted(client.hkeys(key)) == sorted([CREATED_FIELD.encode(), b"c"])
    assert run("1", "0", [], ["c"]) == 0 and not client.exists(key)


def test_lua_update_increments_and_appends_atomically(machine: tuple[redis.Redis, str]) -> None:
    client, prefix = machine
    update = client.register_script(_script("session_update"))
    key = prefix + "{c}"

    def run(op: str, field: str, arg: str, must_exist: str = "0") -> t.Any:
        return update(keys=[key], args=[op, field, arg, 60000, 0, must_exist, CREATED_FIELD])

    assert run("incr", "n", "5") == [1, 5]
    assert run("incr", "n", "-2", "1") == [1, 3]
    assert run("append", "l", '"x"') == [1, b'["x"]']
    assert run("append", "l", "[1,2]") == [1, b'["x",[1,2]]']
    with pytest.raises(redis.ResponseError, match="not an integer"):
        run("incr", "l", "1")
    with pytest.raises(redis.ResponseError, match="not a list"):
        run("append", "n", "1")
    assert client.hexists(key, CREATED_FIELD) and client.pttl(key) > 0
    client.delete(key)
    assert run("incr", "n", "1", must_exist="1") == [-1] and not client.exists(key)


def test_lua_unlock_releases_only_its_own_lock(machine: tuple[redis.Redis, str]) -> None:
    client, prefix = machine
    unlock = client.register_script(_script("session_unlock"))
    key = prefix + "{d}:lock"
    client.set(key, "mine", px=10000)
    assert unlock(keys=[key], args=["theirs"]) == 0 and client.get(key) == b"mine"
    assert unlock(keys=[key], args=["mine"]) == 1 and not client.exists(key)


# -- behaviour, in process ------------------------------------------------------------------


def test_embedded_default_keeps_the_cookie_session() -> None:
    app = carboy.Carboy(__name__)
    before = app.session_interface
    Session(app)
    assert app.session_interface is before
    app.config["SESSION_TYPE"] = "filesystem"
    with pytest.raises(ValueError, match="SESSION_TYPE"):
        Session(app)


def test_writes_merge_per_key_and_nested_mutation_is_saved(
    app: carboy.Carboy, machine: tuple[redis.Redis, str]
) -> None:
    rc, prefix = machine
    redis_app(app, prefix)
    c = app.test_client()
    assert c.post("/set/a/1").status_code == 200
    cookie = c.get_cookie("session")
    assert cookie is not None
    other = app.test_client()
    other.set_cookie("session", cookie.value)
    assert other.post("/set/b/2").status_code == 200
    assert c.post("/set/c/3").status_code == 200
    assert c.get("/all").json == {"a": "1", "b": "2", "c": "3"}
    assert c.post("/cart/x").status_code == 200
    assert c.post("/cart-in-place/y").status_code == 200
    assert c.get("/all").json["cart"] == ["x", "y"]
    assert c.post("/async/set/d/4").status_code == 200
    assert c.get("/async/all").json["d"] == "4"
    assert len(keys_of(rc, prefix)) == 1


def test_a_stale_read_reverts_nothing(machine: tuple[redis.Redis, str]) -> None:
    """A request that loaded the session before another wrote it saves nothing of its own
    (the whole-blob stores write the stale copy back)."""
    rc, prefix = machine
    app = make_app(MACHINE_URL, prefix)
    c = app.test_client()

    @app.post("/w/<v>")
    def write(v: str) -> str:
        session["k"] = v
        return "ok"

    @app.get("/r")
    def read() -> str:
        value = str(session.get("k"))
        c2.post("/w/new")  # a concurrent write between this request's load and save
        return value

    assert c.post("/w/old").status_code == 200
    c2 = app.test_client()
    c2.set_cookie("session", c.get_cookie("session").value)  # type: ignore[union-attr]
    assert c.get("/r").text == "old"
    key = keys_of(rc, prefix)[0]
    assert rc.hget(key, "k") == b'"new"'


def test_reading_never_writes_and_anonymous_requests_create_no_key(
    machine: tuple[redis.Redis, str],
) -> None:
    rc, prefix = machine
    app = make_app(MACHINE_URL, prefix)

    @app.get("/read")
    def read() -> str:
        return str(session.get("user", "anonymous"))

    c = app.test_client()
    for _ in range(10_000):
        r = c.get("/read")
        assert r.status_code == 200 and "Set-Cookie" not in r.headers
        assert r.headers["Vary"] == "Cookie"
    assert keys_of(rc, prefix) == []


def test_unknown_bad_or_forged_cookies_get_a_new_empty_session(
    app: carboy.Carboy, machine: tuple[redis.Redis, str]
) -> None:
    rc, prefix = machine
    redis_app(app, prefix)
    for value in ["x" * 43, "short", "bad!chars" * 5, "é" * 20]:
        c = app.test_client()
        c.set_cookie("session", value)
        assert c.get("/all").json == {}
        assert c.post("/set/a/1").status_code == 200
        new = c.get_cookie("session")
        assert new is not None and new.value != value  # a client-chosen id is never adopted
    assert all(b"xxxx" not in k for k in keys_of(rc, prefix))


def test_signed_ids(machine: tuple[redis.Redis, str]) -> None:
    _, prefix = machine
    app = make_app(MACHINE_URL, prefix, SESSION_USE_SIGNER=True)

    @app.post("/s")
    def s() -> str:
        session["a"] = 1
        return "ok"

    @app.get("/g")
    def g() -> str:
        return str(session.get("a"))

    c = app.test_client()
    c.post("/s")
    signed = c.get_cookie("session").value  # type: ignore[union-attr]
    assert "." in signed and c.get("/g").text == "1"
    c.set_cookie("session", signed.split(".")[0] + ".forged")
    assert c.get("/g").text == "None"


def test_regenerate_retires_the_old_id(
    app: carboy.Carboy, machine: tuple[redis.Redis, str]
) -> None:
    _, prefix = machine
    redis_app(app, prefix)
    c = app.test_client()
    c.post("/set/a/1")
    old = c.get_cookie("session").value  # type: ignore[union-attr]
    assert c.post("/login/alice").status_code == 200
    new = c.get_cookie("session").value  # type: ignore[union-attr]
    assert new != old
    assert c.get("/whoami").text == "alice" and c.get("/all").json["a"] == "1"
    thief = app.test_client()
    thief.set_cookie("session", old)
    assert thief.get("/whoami").text == "None"
    assert thief.post("/set/b/2").status_code == 200  # a new session, not the old one
    assert thief.get_cookie("session").value not in (old, new)  # type: ignore[union-attr]
    assert "b" not in c.get("/all").json


def test_revoking_a_user_logs_out_every_device(
    app: carboy.Carboy, machine: tuple[redis.Redis, str]
) -> None:
    _, prefix = machine
    redis_app(app, prefix)
    devices = [app.test_client() for _ in range(3)]
    for device in devices:
        device.post("/login/bob")
        assert device.get("/whoami").text == "bob"
    carol = app.test_client()
    carol.post("/login/carol")
    with app.app_context():
        assert revoke_user_sessions("bob") == 3
    for device in devices:
        assert device.get("/whoami").text == "None"
        # A write from a revoked device starts a new anonymous session, it does not revive.
        device.post("/set/x/1")
        assert device.get("/whoami").text == "None"
    assert carol.get("/whoami").text == "carol"


def test_clear_deletes_the_key_and_the_cookie(
    app: carboy.Carboy, machine: tuple[redis.Redis, str]
) -> None:
    rc, prefix = machine
    redis_app(app, prefix)
    c = app.test_client()
    c.post("/set/a/1")
    assert len(keys_of(rc, prefix)) == 1
    r = c.post("/logout")
    assert "session=;" in r.headers["Set-Cookie"]
    assert keys_of(rc, prefix) == []


def test_increment_and_append_to(app: carboy.Carboy, machine: tuple[redis.Redis, str]) -> None:
    _, prefix = machine
    redis_app(app, prefix)
    c = app.test_client()
    assert [c.post("/incr").text for _ in range(3)] == ["1", "2", "3"]
    assert c.post("/append/a").text == "a"
    assert c.post("/append/b").text == "a,b"
    assert c.get("/all").json == {"n": 3, "items": ["a", "b"]}
    c.post("/set/n/text")
    with app.test_request_context(headers={"Cookie": f"session={c.get_cookie('session').value}"}):  # type: ignore[union-attr]
        with pytest.raises(TypeError, match="does not hold an int"):
            session.increment("n")
        with pytest.raises(TypeError, match="does not hold a list"):
            session.append_to("n", 1)
        with pytest.raises(TypeError, match="needs an int"):
            session.increment("m", 1.5)  # type: ignore[arg-type]


def test_sliding_and_absolute_expiry(machine: tuple[redis.Redis, str]) -> None:
    rc, prefix = machine
    app = make_app(
        MACHINE_URL,
        prefix,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=60),
        SESSION_REFRESH_INTERVAL=0,
        SESSION_ABSOLUTE_LIFETIME=0.4,
    )

    @app.post("/s")
    def s() -> str:
        session["a"] = 1
        return "ok"

    @app.get("/g")
    def g() -> str:
        return str(session.get("a"))

    c = app.test_client()
    c.post("/s")
    key = keys_of(rc, prefix)[0]
    assert rc.pttl(key) <= 400  # capped by the absolute lifetime
    rc.pexpire(key, 300_000)  # even if the TTL were longer, the creation time rules
    time.sleep(0.45)
    assert c.get("/g").text == "None"
    assert keys_of(rc, prefix) == []
    # Sliding: a read refreshes the TTL once the refresh interval has passed.
    app2 = make_app(
        MACHINE_URL,
        prefix,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=60),
        SESSION_REFRESH_INTERVAL=1,
    )
    app2.view_functions.update(app.view_functions)
    app2.url_map = app.url_map
    c2 = app2.test_client()
    c2.post("/s")
    key = keys_of(rc, prefix)[0]
    rc.pexpire(key, 58_000)  # two seconds went by
    r = c2.get("/g")
    assert r.text == "1" and "Set-Cookie" in r.headers and rc.pttl(key) > 59_000
    rc.pexpire(key, 59_500)  # within the interval: nothing written
    r = c2.get("/g")
    assert "Set-Cookie" not in r.headers and rc.pttl(key) <= 59_500


def test_lock_wait_is_bounded_with_a_clear_503_and_a_dead_holder_expires(
    app: carboy.Carboy, machine: tuple[redis.Redis, str]
) -> None:
    rc, prefix = machine
    redis_app(app, prefix, SESSION_LOCK_WAIT=0.2, SESSION_LOCK_TIMEOUT=5)
    c = app.test_client()
    assert c.post("/locked").text == "1"
    sid = c.get_cookie("session").value  # type: ignore[union-attr]
    lock = f"{prefix}{{{sid}}}:lock"
    assert not rc.exists(lock)  # released after the save
    rc.set(lock, "a dead worker's token", px=600)
    r = c.post("/locked")
    assert r.status_code == 503 and b"busy" in r.data
    assert r.headers.getlist("Retry-After") == ["1"]  # one header, not "1, 1"
    assert c.post("/async/locked").status_code == 503
    time.sleep(0.65)  # the dead holder's lock expires
    assert c.post("/locked").text == "2"
    assert c.post("/async/locked").text == "3"
    assert not rc.exists(lock)


def test_redis_outage_in_process(app: carboy.Carboy) -> None:
    with RedisServer() as server:
        prefix = "outage:"
        redis_app(app, prefix)
        app.config["REDIS_URL"] = server.url
        app.extensions.pop("carboy.redis", None)
        Session(app)
        c = app.test_client()
        assert c.post("/set/a/1").status_code == 200
        server.stop()
        assert c.get("/free").status_code == 200
        for call in (c.get("/all"), c.post("/set/b/2"), c.get("/async/all")):
            assert call.status_code == 503
            assert b"session store" in call.data
            assert call.headers.getlist("Retry-After") == ["1"]
        server.start()
        assert c.get("/all").json == {}  # a fresh server: the session is gone, no error
        assert c.post("/set/b/2").status_code == 200


def test_session_object_is_a_redis_session(
    app: carboy.Carboy, machine: tuple[redis.Redis, str]
) -> None:
    _, prefix = machine
    redis_app(app, prefix)
    with app.test_request_context():
        assert isinstance(session._get_current_object(), RedisSession)  # type: ignore[attr-defined]
        assert session.new and session.sid is None


# -- the proofs on gunicorn with 4 workers ---------------------------------------------------


@pytest.fixture
def gunicorn_machine(
    machine: tuple[redis.Redis, str], tmp_path: Path
) -> Iterator[tuple[str, redis.Redis, str]]:
    rc, prefix = machine
    with served(MACHINE_URL, prefix, tmp_path / "gunicorn.log") as server:
        yield server.base_url, rc, prefix


def test_concurrent_distinct_keys_increments_and_locked_rmw_are_exact(
    gunicorn_machine: tuple[str, redis.Redis, str],
) -> None:
    base, _, _ = gunicorn_machine
    with http(base) as client:
        _distinct_increments_locked(client)


def _distinct_increments_locked(client: httpx.Client, locked: int = 500) -> None:
    base = client
    cookie = new_session(base)
    responses = drive(base, cookie, [("POST", f"/set/k{i}") for i in range(400)])
    assert Counter(r.status_code for r in responses) == {200: 400}
    got = base.get("/keys", headers={"Cookie": cookie}).json()["keys"]
    assert len(set(got) - {"started"}) == 400  # 0 lost

    responses = drive(base, cookie, [("POST", "/incr")] * 1000)
    assert Counter(r.status_code for r in responses) == {200: 1000}
    assert sorted(int(r.text) for r in responses) == list(range(1, 1001))
    assert base.get("/get/n", headers={"Cookie": cookie}).json() == {"n": 1000}

    responses = drive(base, cookie, [("POST", "/rmw")] * locked)
    assert Counter(r.status_code for r in responses) == {200: locked}
    assert sorted(int(r.text) for r in responses) == list(range(1, locked + 1))
    assert base.get("/get/m", headers={"Cookie": cookie}).json() == {"m": locked}


def _stats(client: redis.Redis) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in client.info("commandstats").items()
    }


def test_reads_between_writes_revert_nothing_and_write_nothing_then_redis_stops(
    tmp_path: Path,
) -> None:
    with RedisServer() as rs:
        rc = rs.client()
        with served(rs.url, "s:", tmp_path / "gunicorn.log") as server:
            base = http(server.base_url)
            cookie = new_session(base)
            rc.config_resetstat()
            calls = []
            for i in range(150):
                calls += [("POST", f"/set/w{i}"), ("GET", "/keys"), ("GET", "/async/keys")]
            responses = drive(base, cookie, calls)
            assert Counter(r.status_code for r in responses) == {200: 450}
            stats = _stats(rc)
            got = base.get("/keys", headers={"Cookie": cookie}).json()["keys"]
            assert len(set(got) - {"started"}) == 150  # no read reverted a write
            # Each write request: one HSET and one PEXPIRE; the 300 reads: none of anything.
            writes = {k: v for k, v in stats.items() if k in WRITE_COMMANDS}
            assert writes == {"hset": 150, "pexpire": 150}, stats

            # Redis stops mid-run.
            stop_at = 60
            outcome: list[tuple[str, int, bytes]] = []
            calls = [("GET", "/ping"), ("POST", "/set/x"), ("GET", "/keys")] * 40

            def run_and_stop() -> None:
                for i, (method, path) in enumerate(calls):
                    if i == stop_at:
                        rs.stop()
                    r = base.request(method, path, headers={"Cookie": cookie})
                    outcome.append((path, r.status_code, r.content))

            run_and_stop()
            after = outcome[stop_at:]
            assert {s for p, s, _ in after if p == "/ping"} == {200}
            assert {s for p, s, _ in after if p != "/ping"} == {503}
            assert all(
                b"session store (Redis) is unreachable" in b for p, _, b in after if p != "/ping"
            )
            assert all(s != 500 for _, s, _ in outcome)
            rs.start()
            back = time.monotonic()
            r = base.post("/set/y")  # the first request after it returns
            assert r.status_code == 200 and time.monotonic() - back < 1.0
            statuses = Counter(base.post("/start").status_code for _ in range(20))
            assert statuses == {200: 20}  # every worker is back
            base.close()


WRITE_COMMANDS = {
    "hset",
    "hdel",
    "hsetnx",
    "hincrby",
    "del",
    "unlink",
    "pexpire",
    "expire",
    "set",
    "rename",
    "sadd",
}


def test_session_lock_config_locks_every_session_request(
    machine: tuple[redis.Redis, str],
) -> None:
    rc, prefix = machine
    app = make_app(MACHINE_URL, prefix, SESSION_LOCK=True, SESSION_LOCK_WAIT=0.1)
    seen: list[bool] = []

    @app.post("/plus")
    def plus() -> str:
        session["n"] = session.get("n", 0) + 1
        seen.append(bool(rc.exists(f"{prefix}{{{session.sid}}}:lock")))
        return str(session["n"])

    c = app.test_client()
    assert c.post("/plus").text == "1"  # a new session: nothing to lock yet
    assert c.post("/plus").text == "2"
    assert seen == [False, True]
    sid = c.get_cookie("session").value  # type: ignore[union-attr]
    assert not rc.exists(f"{prefix}{{{sid}}}:lock")


def test_regenerate_on_login_through_flask_logins_signal(
    machine: tuple[redis.Redis, str],
) -> None:
    signals = pytest.importorskip("flask_login.signals")
    _, prefix = machine
    app = make_app(MACHINE_URL, prefix, SESSION_REGENERATE_ON_LOGIN=True)

    @app.post("/login")
    def login() -> str:
        session["_user_id"] = "dave"  # what flask_login.login_user does, then it signals
        signals.user_logged_in.send(app, user=object())
        return "in"

    @app.post("/s")
    def s() -> str:
        session["a"] = 1
        return "ok"

    c = app.test_client()
    c.post("/s")
    before = c.get_cookie("session").value  # type: ignore[union-attr]
    c.post("/login")
    after = c.get_cookie("session").value  # type: ignore[union-attr]
    assert after != before
    with app.test_request_context(headers={"Cookie": f"session={before}"}):
        assert dict(session) == {}
    with app.test_request_context(headers={"Cookie": f"session={after}"}):
        assert dict(session) == {"a": 1, "_user_id": "dave"}


def test_async_helpers_and_async_views_without_session_in_an_outage(app: carboy.Carboy) -> None:
    with RedisServer() as server:
        redis_app(app, "async:")
        app.config["REDIS_URL"] = server.url
        app.extensions.pop("carboy.redis", None)
        Session(app)

        @app.post("/aincr")
        async def aincr() -> str:
            n = await session.aincrement("n", 2)  # type: ignore[attr-defined]
            items = await session.aappend_to("l", n)  # type: ignore[attr-defined]
            return f"{n} {items}"

        @app.get("/afree")
        async def afree() -> str:
            return "free"

        @app.post("/alogin")
        async def alogin() -> str:
            await session.aregenerate()  # type: ignore[attr-defined]
            session.bind_user("eve")  # type: ignore[attr-defined]
            return "in"

        @app.post("/arevoke")
        async def arevoke() -> str:
            return str(await arevoke_user_sessions("eve"))

        c = app.test_client()
        assert c.post("/aincr").text == "2 [2]"
        assert c.post("/aincr").text == "4 [2, 4]"
        before = c.get_cookie("session").value  # type: ignore[union-attr]
        assert c.post("/alogin").text == "in"
        after = c.get_cookie("session").value  # type: ignore[union-attr]
        assert after != before
        old = app.test_client()
        old.set_cookie("session", before)
        assert old.post("/aincr").text == "2 [2]"  # the old id is gone: a new session
        assert c.post("/aincr").text == "6 [2, 4, 6]"  # the data moved to the new id
        assert c.post("/arevoke").text == "1"
        assert c.post("/aincr").text == "2 [2]"  # revoked: a new, empty session
        server.stop()
        assert c.get("/afree").status_code == 200  # its session is never used
        assert c.post("/aincr").status_code == 503
        server.start()


def _cluster_port() -> int:
    """A free loopback port below 55536 whose cluster-bus port (+10000) is free too."""
    for _ in range(100):
        port = random.randrange(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    pytest.fail("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A 3-node Redis Cluster on loopback ports (no replicas); yields its redis+cluster URL."""
    binary = shutil.which("redis-cli")
    if binary is None:
        pytest.skip("redis-cli is not installed (Debian package redis-tools)")
    nodes = [RedisServer(["--cluster-enabled", "yes"]) for _ in range(3)]
    for node in nodes:
        node.port = _cluster_port()  # its bus listens on port + 10000
    try:
        for node in nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [binary, "--cluster", "create", *addresses, "--cluster-yes", "--cluster-replicas", "0"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while any(n.client().cluster("info")["cluster_state"] != "ok" for n in nodes):
            if time.monotonic() > deadline:
                pytest.fail("the Redis Cluster did not become ready")
            time.sleep(0.1)
        yield "redis+cluster://" + ",".join(addresses)
    finally:
        for node in nodes:
            node.__exit__(None, None, None)


def test_on_a_redis_cluster(cluster: str) -> None:
    """The same behaviour on a 3-node Cluster: per-key merge, nested mutation, increment,
    append, locks, regenerate and revocation (the user's set lives in another slot)."""
    app = make_app(cluster, "c:", SESSION_LOCK_WAIT=5)

    @app.post("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "set"

    @app.get("/all")
    def everything() -> dict[str, t.Any]:
        return dict(session)

    @app.post("/cart/<item>")
    def cart(item: str) -> str:
        session.setdefault("cart", []).append(item)
        return "ok"

    @app.post("/incr")
    def incr() -> str:
        return f"{session.increment('n')} {session.append_to('l', 1)}"

    @app.post("/plus")
    @session_lock
    def plus() -> str:
        session["m"] = session.get("m", 0) + 1
        return "ok"

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session.regenerate()
        session.bind_user(user)
        return "in"

    c = app.test_client()
    c.post("/set/a/1")
    other = app.test_client()
    other.set_cookie("session", c.get_cookie("session").value)  # type: ignore[union-attr]
    other.post("/set/b/2")
    c.post("/cart/x")
    c.post("/cart/y")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: c.post("/incr"), range(50)))
        list(pool.map(lambda _: c.post("/plus"), range(50)))
    got = c.get("/all").json
    assert got["a"] == "1" and got["b"] == "2" and got["cart"] == ["x", "y"]
    assert got["n"] == 50 and got["l"] == [1] * 50 and got["m"] == 50
    old = c.get_cookie("session").value  # type: ignore[union-attr]
    phone = app.test_client()
    for device in (c, phone):
        device.post("/login/erin")
    assert c.get_cookie("session").value != old  # type: ignore[union-attr]
    with app.test_request_context(headers={"Cookie": f"session={old}"}):
        assert dict(session) == {}
    with app.app_context():
        assert revoke_user_sessions("erin") == 2
    assert c.get("/all").json == {} and phone.get("/all").json == {}


def test_concurrency_proofs_on_a_cluster_with_gunicorn(cluster: str, tmp_path: Path) -> None:
    with served(cluster, "cs:", tmp_path / "gunicorn.log") as server, http(server.base_url) as c:
        _distinct_increments_locked(c, locked=200)  # serial by design: fewer, for time


def test_session_redis_client_and_flask_sessions_constructor(
    machine: tuple[redis.Redis, str],
) -> None:
    """``SESSION_REDIS`` is used as given (no connection layer is made), and the interface
    takes Flask-Session 0.8's constructor arguments, app first."""
    rc, prefix = machine
    app = carboy.Carboy(__name__)
    app.config.update(
        SECRET_KEY="k", SESSION_TYPE="redis", SESSION_REDIS=rc, SESSION_KEY_PREFIX=prefix
    )
    Session(app)
    assert "carboy.redis" not in app.extensions
    assert app.session_interface.client is rc  # type: ignore[attr-defined]

    @app.post("/s")
    def s() -> str:
        session["a"] = 1
        return "ok"

    app.test_client().post("/s")
    assert len(keys_of(rc, prefix)) == 1
    interface = RedisSessionInterface(app, rc, prefix, True, False, 24, "msgpack")
    assert (interface.key_prefix, interface.use_signer, interface.permanent) == (
        prefix,
        True,
        False,
    )
    with pytest.raises(ValueError, match="SESSION_ID_LENGTH"):
        RedisSessionInterface(app, rc, sid_length=4)
