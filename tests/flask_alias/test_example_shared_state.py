"""The example notes app's shared state (issue 19, item 6): sessions, the cached ``/api/stats``
page and the login rate limit.

On the embedded defaults (no ``REDIS_URL``) in process through the test client, and without
redis-py or ``limits`` importable at all (README's first command). With Redis (the machine's,
database 15, a key prefix per test, removed afterwards) served by gunicorn with 3 workers: a
login on one worker holds on the others, the login limit is exact across workers, and the cached
page is computed once for all of them and forgotten on a write.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import typing as t
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from carboy import Carboy

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.notes import create_app, shared  # noqa: E402
from notes_client import with_csrf_client  # noqa: E402

from notes_http import csrf, sign_in  # noqa: E402
from redis_servers import MACHINE_URL, machine_redis_or_skip  # noqa: E402
from servers import Server, free_port, tool  # noqa: E402

WORKERS = 3


def make_app(tmp_path: Path, **config: object) -> Carboy:
    return with_csrf_client(
        create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "shared-state-secret",
                "INSTANCE_PATH": str(tmp_path / "instance"),
                "DATABASE": str(tmp_path / "notes.sqlite"),
                **config,
            }
        )
    )


def signed_up(client: t.Any, username: str = "ada", password: str = "lovelace1") -> None:
    res = client.post("/register", data={"username": username, "password": password})
    assert res.status_code == 302
    res = client.post("/login", data={"username": username, "password": password})
    assert res.status_code == 302


def add_note_behind_the_apps_back(database: Path, owner_id: int = 1) -> None:
    """A write the app does not see (so nothing forgets the cached totals)."""
    with sqlite3.connect(database) as conn:
        conn.execute(
            "INSERT INTO note (owner_id, title) VALUES (?, ?)", (owner_id, "written directly")
        )


# -- embedded defaults, in process -------------------------------------------------------------


def test_embedded_defaults_use_cookie_sessions_in_process_cache_and_memory_limits(
    tmp_path: Path,
) -> None:
    from carboy.scale.caching_backends import SimpleCache
    from carboy.sessions import SecureCookieSessionInterface

    app = make_app(tmp_path)
    assert isinstance(app.session_interface, SecureCookieSessionInterface)
    assert isinstance(app.extensions["cache"][shared.cache], SimpleCache)
    limiter = app.extensions[shared.LIMITER_KEY]
    assert type(limiter.storage).__name__ == "MemoryStorage"
    client = app.test_client()
    signed_up(client)
    assert client.get("/").status_code == 200  # logged in, on the cookie session


def test_login_rate_limit_gives_a_friendly_429_with_retry_after(tmp_path: Path) -> None:
    app = make_app(tmp_path, LOGIN_RATE_LIMIT="3/minute")
    client = app.test_client()
    assert (
        client.post("/register", data={"username": "ada", "password": "lovelace1"}).status_code
        == 302
    )
    for _ in range(3):
        res = client.post("/login", data={"username": "ada", "password": "wrong"})
        assert res.status_code == 200
        assert "Unknown username or wrong password." in res.get_data(as_text=True)
    # The limit is reached: the right password is refused too, with a page, not a stack trace.
    res = client.post("/login", data={"username": "ada", "password": "lovelace1"})
    assert res.status_code == 429
    assert res.mimetype == "text/html"
    retry_after = int(res.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    text = res.get_data(as_text=True)
    assert "Too many login attempts from your address." in text
    assert f"Please wait {retry_after} second" in text
    assert "<title>Too many attempts · Notes</title>" in text
    assert client.get("/notes/new").status_code == 302  # not logged in
    assert client.get("/login").status_code == 200  # only POST is limited


def test_a_429_under_api_is_json_with_retry_after(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    limiter = app.extensions[shared.LIMITER_KEY]
    app.add_url_rule("/api/probe", "probe", limiter.limit("1/minute")(lambda: {"ok": True}))
    client = app.test_client()
    assert client.get("/api/probe").status_code == 200
    res = client.get("/api/probe")
    assert res.status_code == 429
    assert res.is_json
    assert res.get_json()["error"]["status"] == 429
    assert int(res.headers["Retry-After"]) >= 1


def test_stats_are_public_cached_and_forgotten_on_writes(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    ada = app.test_client()
    signed_up(ada)
    anonymous = app.test_client()
    first = anonymous.get("/api/stats")
    assert first.status_code == 200
    body = first.get_json()
    assert (body["accounts"], body["notes"]) == (1, 0)
    # Cached: a write the app does not see is not reflected, the same entry is served to a
    # signed-in user (nothing in it is per user), and its ETag answers a revalidation.
    add_note_behind_the_apps_back(tmp_path / "notes.sqlite")
    again = ada.get("/api/stats")
    assert again.get_json() == body
    assert again.headers["ETag"] == first.headers["ETag"]
    res = anonymous.get("/api/stats", headers={"If-None-Match": first.headers["ETag"]})
    assert res.status_code == 304
    # A note written through the app forgets the totals.
    assert ada.post("/api/notes", json={"title": "through the app"}).status_code == 201
    fresh = anonymous.get("/api/stats").get_json()
    assert (fresh["accounts"], fresh["notes"]) == (1, 2)
    assert fresh["as_of"] > body["as_of"]
    # So does a deletion, and a new account.
    note_id = ada.get("/api/notes").get_json()["notes"][0]["id"]
    assert ada.delete(f"/api/notes/{note_id}").status_code == 204
    assert anonymous.get("/api/stats").get_json()["notes"] == 1
    assert (
        anonymous.post("/register", data={"username": "bob", "password": "builder"}).status_code
        == 302
    )
    assert anonymous.get("/api/stats").get_json()["accounts"] == 2


def test_readme_first_command_needs_no_redis(tmp_path: Path) -> None:
    """With redis-py unimportable (README's first command installs only carboy), the app builds
    and serves on the embedded defaults, its login limit counted in memory; with redis-py
    installed but no REDIS_URL, building and using the app imports no redis-py."""
    script = textwrap.dedent(
        f"""
        import sys
        if sys.argv[1] == "blocked":
            sys.modules["redis"] = None
        sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]
        from examples.notes import create_app
        from notes_client import with_csrf_client
        app = with_csrf_client(create_app({{"TESTING": True, "LOGIN_RATE_LIMIT": "2/minute",
                                            "INSTANCE_PATH": {str(tmp_path / "inst")!r}}}))
        c = app.test_client()
        assert c.post("/register", data={{"username": "a", "password": "pass1"}}).status_code == 302
        assert c.post("/login", data={{"username": "a", "password": "pass1"}}).status_code == 302
        assert c.get("/").status_code == 200
        assert c.get("/api/stats").get_json()["accounts"] == 1
        print([c.post("/login", data={{"username": "a", "password": "x"}}).status_code
               for _ in range(2)])
        print("redis imported" if sys.modules.get("redis") else "no redis")
        """
    )
    for mode in ("blocked", "installed"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[:2] == ["[200, 429]", "no redis"]


# -- Redis, in process -------------------------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key holding it is deleted afterwards."""
    client = machine_redis_or_skip()
    tag = f"notes-test-{uuid.uuid4().hex[:12]}"
    try:
        yield tag
    finally:
        keys = list(client.scan_iter(match=f"*{tag}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def redis_config(tag: str) -> dict[str, object]:
    return {
        "REDIS_URL": MACHINE_URL,
        "SESSION_KEY_PREFIX": f"{tag}:session:",
        "CACHE_KEY_PREFIX": f"{tag}:cache:",
        "RATELIMIT_KEY_PREFIX": tag,
    }


def test_with_redis_a_login_regenerates_the_server_side_session(
    tmp_path: Path, prefix: str
) -> None:
    from carboy.scale.caching_backends import RedisCache
    from carboy.scale.sessions import RedisSessionInterface

    app = make_app(tmp_path, **redis_config(prefix))
    assert isinstance(app.session_interface, RedisSessionInterface)
    assert isinstance(app.extensions["cache"][shared.cache], RedisCache)
    redis = machine_redis_or_skip()
    client = app.test_client()
    # Registering flashes a message, so the session has an id (and a key) before the login.
    assert (
        client.post("/register", data={"username": "ada", "password": "lovelace1"}).status_code
        == 302
    )
    planted = client.get_cookie("session").value
    session_keys = lambda: set(redis.scan_iter(match=f"{prefix}:session:*"))  # noqa: E731
    assert len(session_keys()) == 1
    assert (
        client.post("/login", data={"username": "ada", "password": "lovelace1"}).status_code == 302
    )
    assert client.get_cookie("session").value != planted
    assert client.get("/").status_code == 200
    assert len(session_keys()) == 1  # the old id's key is gone, the new one holds the login
    intruder = app.test_client()
    intruder.set_cookie("session", planted)
    assert intruder.get("/notes/new").status_code == 302  # the planted id never authenticates


def test_with_redis_unreachable_pages_and_api_answer_503_not_500(tmp_path: Path) -> None:
    """Nothing listens on the port: session routes get the session module's 503 (JSON under
    /api, with its Retry-After), session-free answers stay 200."""
    app = make_app(tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    assert client.get("/api/stats").status_code == 200  # no cookie: no session load
    client.set_cookie("session", "an-id-from-before-the-outage")
    res = client.get("/api/notes")
    assert res.status_code == 503
    assert res.is_json
    assert "session store" in res.get_json()["error"]["message"]
    assert res.headers["Retry-After"] == "1"
    res = client.get("/")
    assert res.status_code == 503
    assert res.headers["Retry-After"] == "1"


# -- Redis, gunicorn with several workers ------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, prefix: str) -> Iterator[tuple[Server, Path]]:
    database = tmp_path / "notes.sqlite"
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(WORKERS),
        "--timeout", "30",
        "scale_example_app:app",
    ]  # fmt: skip
    env = {
        "CARBOY_DATABASE": str(database),
        "CARBOY_SECRET_KEY": "served-shared-state",
        "CARBOY_REDIS_URL": MACHINE_URL,
        "CARBOY_SESSION_KEY_PREFIX": f"{prefix}:session:",
        "CARBOY_CACHE_KEY_PREFIX": f"{prefix}:cache:",
        "CARBOY_RATELIMIT_KEY_PREFIX": prefix,
        "CARBOY_LOGIN_RATE_LIMIT": "6/minute",
    }
    with Server(cmd, port, tmp_path / "server.log", env) as server:
        # Not a page: each anonymous page view with a form starts a session (its CSRF token).
        server.wait_until_up("/api/stats")
        yield server, database


def across_workers(
    http: httpx.Client, method: str, path: str, count: int = 24, **kwargs: t.Any
) -> list[httpx.Response]:
    """*count* requests, six at a time, each on a new connection (gunicorn's sync workers close
    each one): a sync worker answers one at a time, so the others take the rest; at least two
    workers must have answered. (Sent one after another, they could all land on the worker that
    wins every accept: CI saw 24 of 24 on one.)"""
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: http.request(method, path, **kwargs), range(count)))
    assert len({r.headers["X-Worker-Pid"] for r in answers}) >= 2
    return answers


def test_served_by_gunicorn_the_workers_share_sessions_limits_and_the_cache(
    served: tuple[Server, Path], prefix: str
) -> None:
    server, database = served
    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        res = sign_in(http, "linus", "penguin!")
        login_worker = res.headers["X-Worker-Pid"]
        redis = machine_redis_or_skip()
        (key,) = redis.scan_iter(match=f"{prefix}:session:*")
        assert http.cookies["session"] in key.decode()  # the cookie holds only the id

        # The session lives in Redis: every worker knows the user.
        pages = across_workers(http, "GET", "/")
        assert all(r.status_code == 200 and ">linus<" in r.text for r in pages)
        assert {r.headers["X-Worker-Pid"] for r in pages} - {login_worker}

        # The cached totals: computed once, the same entry (and ETag) from every worker, even
        # after a write the app does not see...
        stats = across_workers(http, "GET", "/api/stats")
        assert len({r.text for r in stats}) == 1
        assert len({r.headers["ETag"] for r in stats}) == 1
        assert stats[0].json()["notes"] == 0
        add_note_behind_the_apps_back(database)
        later = across_workers(
            http, "GET", "/api/stats", headers={"If-None-Match": stats[0].headers["ETag"]}
        )
        assert {r.status_code for r in later} == {304}
        # ...and forgotten by all of them when a worker writes a note.
        token = csrf(http)
        res = http.post("/api/notes", json={"title": "over the wire"}, headers=token)
        assert res.status_code == 201
        fresh = across_workers(http, "GET", "/api/stats")
        assert len({r.text for r in fresh}) == 1
        assert fresh[0].json()["notes"] == 2

        # The login limit (6/minute per address) counts on Redis: the login above was one, so
        # exactly 5 of 12 more attempts get through, whichever workers answer.
        attempts = across_workers(
            http,
            "POST",
            "/login",
            count=12,
            data={"username": "linus", "password": "wrong"},
            headers=token,
        )
        codes = [r.status_code for r in attempts]
        assert codes.count(200) == 5, codes
        assert codes.count(429) == 7, codes
        refused = next(r for r in attempts if r.status_code == 429)  # sent six at a time
        assert int(refused.headers["Retry-After"]) >= 1
        assert "Too many login attempts from your address." in refused.text
    assert " 500 " not in server.output()
