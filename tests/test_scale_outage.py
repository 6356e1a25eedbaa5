"""Issue 19's proof "Redis stopped mid-run", for every shared-state module at once.

``served_apps/scale_outage_app.py`` puts Redis sessions, the Redis cache and the limiter on one
``REDIS_URL``: a Redis this test starts itself. It is served by gunicorn (4 sync workers, sync
views) and by uvicorn (2 workers, ``async def`` views for the session writes, the cached view
and the limited view). Eight threads send a bounded stream of mixed requests; the Redis is
stopped in the middle of it and started again while it runs. Each answer is judged by when it
was sent: with Redis up, down, or in between (in between, only the set of answers is checked).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import typing as t
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx
import pytest
import redis

from redis_servers import RedisServer
from servers import Server, free_port, tool, wait_for

APP = "scale_outage_app:app"
KINDS = ("free", "read", "write", "fresh", "cached", "limited")
THREADS = 8  # clients sending at once
PER_THREAD = 400  # the most calls each sends in the stream
UNREACHABLE = "session store (Redis) is unreachable"
LIMIT = 5  # /limited allows 5 a minute per X-Client


@dataclass
class Call:
    kind: str
    key: str  # the X-Client of a /limited call
    sent: float
    done: float
    response: httpx.Response


class Load:
    """Sends requests of each kind through one client (its cookie jar takes nothing, so a
    request carries only the cookie it is given) and keeps every answer."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.cookie = ""
        self.calls: list[Call] = []
        self.errors: list[BaseException] = []
        self.limited_key = "stream"
        self.finished = threading.Event()

    def send(self, kind: str, key: str = "") -> Call:
        get, post, sent = self.client.get, self.client.post, time.monotonic()
        old = {"Cookie": self.cookie}
        if kind == "free":
            r = get("/free")
        elif kind == "read":
            r = get("/read", headers=old)
        elif kind == "write":
            r = post("/write", headers=old)
        elif kind == "fresh":
            r = post("/write")  # no cookie: a new session
        elif kind == "cached":
            r = get("/cached")
        else:
            r = get("/limited", headers={"X-Client": key})
        call = Call(kind, key if kind == "limited" else "", sent, time.monotonic(), r)
        self.calls.append(call)
        return call

    def batch(self, kinds: list[str], key: str) -> list[Call]:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(lambda kind: self.send(kind, key), kinds))

    def stream(self) -> None:
        """:data:`THREADS` threads cycling through :data:`KINDS` until :attr:`finished`."""

        def run(offset: int) -> None:
            stop_at = time.monotonic() + 30
            for i in range(PER_THREAD):
                if self.finished.is_set() or time.monotonic() > stop_at:
                    return
                try:
                    self.send(KINDS[(offset + i) % len(KINDS)], self.limited_key)
                except httpx.HTTPError as e:
                    self.errors.append(e)

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(run, range(THREADS)))


def gunicorn(port: int) -> list[str]:
    return [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "4", "--timeout", "30"),
        *("--graceful-timeout", "2", APP),
    ]


def uvicorn(port: int) -> list[str]:
    return [*tool("uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2", APP]


SERVERS: dict[str, tuple[t.Callable[[int], list[str]], int, str]] = {
    "gunicorn": (gunicorn, 4, "0"),
    "uvicorn": (uvicorn, 2, "1"),
}


def cookie_of(response: httpx.Response) -> str:
    return response.headers["Set-Cookie"].partition(";")[0]


def described(call: Call) -> str:
    r = call.response
    return f"{call}: {r.headers.multi_items()} {r.text!r}"


def unreachable(call: Call) -> bool:
    """A 503 that says the session store is unreachable and sets no cookie."""
    r = call.response
    return (
        r.status_code == 503
        and UNREACHABLE in r.text
        and r.headers.get("Retry-After") == "1"
        and "Set-Cookie" not in r.headers
    )


@pytest.mark.parametrize("name", list(SERVERS))
def test_redis_stopped_mid_run_for_sessions_cache_and_limits(name: str, tmp_path: Path) -> None:
    command, workers, is_async = SERVERS[name]
    prefix = f"outage-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    with RedisServer() as rs:
        env = {"OUTAGE_REDIS_URL": rs.url, "OUTAGE_PREFIX": prefix, "OUTAGE_ASYNC": is_async}
        server = Server(command(port), port, tmp_path / f"{name}.log", env).start()
        # A new connection per request, so that every worker accepts some (kept alive, the
        # connections could all stay with the worker that accepted them first).
        close = {"Connection": "close"}
        with (
            server,
            httpx.Client(base_url=server.base_url, timeout=10, headers=close, cookies=jar) as http,
        ):
            server.wait_until_up("/free")
            load = Load(http)
            load.cookie = cookie_of(load.send("fresh").response)

            # Redis up: everything answers, the limit is exact across workers.
            up = load.batch([*KINDS[:-1] * 4, *["limited"] * 8], key="before")
            by_kind = Counter((c.kind, c.response.status_code) for c in up)
            assert by_kind == {**{(k, 200): 4 for k in KINDS[:-1]}, ("limited", 200): LIMIT,
                               ("limited", 429): 8 - LIMIT}, server.output()  # fmt: skip
            assert all("Set-Cookie" in c.response.headers for c in up if c.kind == "fresh")
            assert len({c.response.text for c in up if c.kind == "cached"}) == 1
            entries = [k for k in rs.client().scan_iter(f"{prefix}cache:*") if b":lock" not in k]
            assert len(entries) == 1
            entry = entries[0]

            # The stream runs; Redis stops under it, and starts again.
            streaming = threading.Thread(target=load.stream)
            streaming.start()
            try:
                start = len(load.calls)
                wait_for(lambda: len(load.calls) >= start + 60, "calls before the outage")
                rs.stop()
                stopped = time.monotonic()
                load.limited_key = "down"
                # Enough answers for the local limits to show (each worker lets 5 through).
                enough = 2 * LIMIT * workers + 2
                wait_for(lambda: sum(c.key == "down" for c in load.calls) >= enough, "calls")
                load.limited_key = "stream"
                starting = time.monotonic()
                rs.start()
                back = time.monotonic()  # Redis answers PING: the recovery clock starts
                client = rs.client()
                # Until a session write answers 200, the cached view's entry is stored again
                # and a limit is counted on Redis again: seconds after Redis answered.
                wrote = stored = counted = 0.0
                while not (wrote and stored and counted):  # bounded by the assertion
                    assert time.monotonic() - back < 5, "no recovery within 5 s"
                    if not wrote and load.send("write").response.status_code == 200:
                        wrote = time.monotonic() - back
                    if not stored:
                        load.send("cached")
                        stored = time.monotonic() - back if client.exists(entry) else 0.0
                    if not counted:
                        load.send("limited", "stream")
                        found = any(client.scan_iter(f"*{prefix}limits*"))
                        counted = time.monotonic() - back if found else 0.0
                recovered = max(wrote, stored, counted)
            finally:
                load.finished.set()
                streaming.join()

            # A second after Redis returned, every worker uses it again once it has had a
            # limited request: a worker learns that Redis is back at its next limit check, and
            # the requests it takes while that first check is in flight keep to the outage
            # policy (by design: they must not all wait on a Redis that may still be down).
            # So until every worker has logged its return, send limited requests on a key of
            # their own; the batch after them is then counted on Redis alone.
            time.sleep(max(0.0, back + 1.0 - time.monotonic()))
            deadline = time.monotonic() + 10
            while (log := server.output()).count("Rate-limit storage reachable again") < log.count(
                "Rate-limit storage unreachable"
            ):
                assert time.monotonic() < deadline, "a worker never used Redis again for limits"
                load.batch(["limited"] * THREADS, key="warm")
            after = load.batch(["cached"] * 16 + ["limited"] * 8, key="after")
            new = load.send("fresh").response
            again = http.get("/read", headers={"Cookie": cookie_of(new)})
            output = server.output()

    calls, errors = load.calls, load.errors
    statuses = Counter(c.response.status_code for c in calls)
    assert not errors and set(statuses) <= {200, 429, 503}, (statuses, errors, output)
    assert statuses[200] and statuses[503] and statuses[429]
    busy = sum(back < c.sent < back + recovered for c in calls)  # sent while it recovered
    print(f"\n{name}: {len(calls)} calls {dict(statuses)}; Redis took {back - starting:.3f} s")
    print(f"  to start, then sessions were back in {wrote:.3f} s, the cache in {stored:.3f} s,")
    print(f"  limits in {counted:.3f} s ({busy} calls sent meanwhile)")

    down = [c for c in calls if c.sent > stopped and c.done < starting]
    kinds = Counter((c.kind, c.response.status_code) for c in down)
    assert all(sum(n for (k, _), n in kinds.items() if k == kind) >= 8 for kind in KINDS)
    print(f"  during the outage: {dict(sorted(kinds.items()))}")
    for call in down:
        if call.kind in ("free", "cached"):
            assert call.response.status_code == 200, (described(call), output)
        elif call.kind in ("read", "write", "fresh"):
            assert unreachable(call), described(call)
    # Every cached answer during the outage was computed for it, by several workers.
    bodies = [c.response.text for c in down if c.kind == "cached"]
    assert len(set(bodies)) == len(bodies) >= 8
    pids = {b.partition(":")[0] for b in bodies}
    print(f"  computed during the outage by {len(pids)} workers")
    assert len(pids) >= 2
    # The default policy ("local"): each worker limits in its own memory; nobody is let
    # through unlimited and nobody is locked out.
    local = Counter(c.response.status_code for c in down if c.key == "down")
    assert set(local) <= {200, 429} and sum(local.values()) > LIMIT * workers, local
    assert LIMIT <= local[200] <= LIMIT * workers, local

    # In between (Redis stopping or starting), only the outage's answers, and never a 500.
    allowed = {"free": {200}, "cached": {200}, "limited": {200, 429}}
    for call in calls:
        status = call.response.status_code
        assert status in allowed.get(call.kind, {200, 503}), (described(call), output)
        assert status != 503 or unreachable(call), described(call)

    assert recovered < 1.0, f"service came back {recovered:.3f} s after Redis did"
    assert {c.response.status_code for c in after} == {200, 429}
    assert len({c.response.text for c in after if c.kind == "cached"}) == 1  # from Redis
    assert Counter(c.response.status_code for c in after if c.kind == "limited") == {
        200: LIMIT,
        429: 8 - LIMIT,
    }
    assert new.status_code == again.status_code == 200 and again.json() == {"writes": 1}


def test_the_recovery_clock_starts_when_redis_answers() -> None:
    """:meth:`RedisServer.start` polls with :meth:`RedisServer.client`, which retries a failed
    command once, at once. With redis-py's default (three retries, with up to seconds of
    backoff), a PING refused while Redis started made :meth:`start` return seconds after Redis
    accepted, and recovery bounds timed from its return started their clock late."""
    server = RedisServer()  # never started: its port is this listener's, which hangs up
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server.port = listener.getsockname()[1]
        listener.settimeout(0.1)

        def hang_up() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return  # the listener is closed
                accepted.append(conn)
                conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        try:
            with server.client() as client, pytest.raises(redis.ConnectionError):
                client.ping()
        finally:
            listener.close()
            thread.join()
            shutil.rmtree(server.dir, ignore_errors=True)
    assert len(accepted) == 2  # the PING and its one retry (the default made four)
