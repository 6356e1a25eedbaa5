"""Baseline with teeth for issue 19's sessions: the concurrency scenarios of
``tests/test_scale_sessions.py`` run against Flask 3.1 + Flask-Session 0.8 and against carboy's
``carboy.scale.sessions``, both on gunicorn (4 workers x 8 threads) and the same Redis.

Run: ``PYTHONPATH=src python -m benchmarks.baseline_sessions [--redis URL] [--runs N]``.
It prints, per stack and scenario, how many writes survived. Nothing here fails: the report
records what each scenario catches (docs/scale/sessions.md).

Scenarios, each on one fresh session shared by 32 concurrent clients:

* ``distinct``: 400 requests, each setting its own key; keys that survive (400 expected).
* ``plus``: 1000 requests doing ``session["n"] = session.get("n", 0) + 1``; final n.
* ``increment``: carboy only: 1000 ``session.increment("n")``; final n.
* ``plus_locked``: carboy only: the ``plus`` view under ``@session_lock``; final n.
* ``read_revert``: 150 writes of distinct keys interleaved with 300 read-only requests;
  keys that survive (150 expected).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
POOL = 32
TARGETS = {
    "Flask 3.1 + Flask-Session 0.8": "benchmarks.baseline_sessions:make_flask_app()",
    "carboy.scale.sessions": "benchmarks.baseline_sessions:make_carboy_app()",
}


def _config() -> dict[str, Any]:
    return {
        "SECRET_KEY": "baseline",
        "SESSION_TYPE": "redis",
        "SESSION_KEY_PREFIX": os.environ["BASELINE_PREFIX"],
        "SESSION_LOCK_WAIT": 30.0,
    }


def _routes(app: Any, session: Any, locked: Callable[[Any], Any] | None) -> None:
    @app.post("/start")
    def start() -> str:
        session["started"] = 1
        return "ok"

    @app.post("/set/<key>")
    def set_key(key: str) -> str:
        session[key] = 1
        return "ok"

    @app.get("/keys")
    def keys() -> dict[str, Any]:
        return {"keys": sorted(k for k in session if not k.startswith("_"))}

    @app.get("/n")
    def n() -> dict[str, Any]:
        return {"n": session.get("n", 0)}

    @app.post("/plus")
    def plus() -> str:
        session["n"] = session.get("n", 0) + 1
        return "ok"

    if locked is not None:

        @app.post("/plus-locked")
        @locked
        def plus_locked() -> str:
            session["n"] = session.get("n", 0) + 1
            return "ok"

        @app.post("/increment")
        def increment() -> str:
            return str(session.increment("n"))


def make_flask_app() -> Any:
    """Flask + Flask-Session 0.8 on Redis (the real Flask, not the carboy alias)."""
    from flask import Flask, session
    from flask_session import Session

    app = Flask(__name__)
    app.config.update(_config(), SESSION_REDIS=redis.Redis.from_url(os.environ["BASELINE_REDIS"]))
    Session(app)
    _routes(app, session, None)
    return app


def make_carboy_app() -> Any:
    import carboy
    from carboy.scale.sessions import Session, session_lock

    app = carboy.Carboy(__name__)
    app.config.update(_config(), REDIS_URL=os.environ["BASELINE_REDIS"])
    Session(app)
    _routes(app, carboy.session, session_lock)
    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Served:
    """gunicorn serving *target* with 4 workers x 8 threads on a free loopback port."""

    def __init__(self, target: str, redis_url: str, prefix: str) -> None:
        self.port = _free_port()
        env = dict(os.environ, BASELINE_REDIS=redis_url, BASELINE_PREFIX=prefix)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        gunicorn = Path(sys.executable).with_name("gunicorn")
        cmd = [str(gunicorn), "--bind", f"127.0.0.1:{self.port}", "--workers", "4"]
        cmd += ["--worker-class", "gthread", "--threads", "8", "--timeout", "60", target]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=60,
            limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.post("/start")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError(f"{target} did not start") from None
                time.sleep(0.1)

    def close(self) -> None:
        self.client.close()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _drive(client: httpx.Client, calls: list[tuple[str, str]]) -> tuple[str, list[int]]:
    client.cookies.clear()
    r = client.post("/start")
    if r.status_code != 200 or "session" not in r.cookies:
        raise RuntimeError(f"/start answered {r.status_code}: {r.text[:300]}")
    cookie = f"session={r.cookies['session']}"
    client.cookies.clear()

    def send(call: tuple[str, str]) -> int:
        return client.request(call[0], call[1], headers={"Cookie": cookie}).status_code

    with ThreadPoolExecutor(POOL) as pool:
        statuses = list(pool.map(send, calls))
    return cookie, statuses


def scenarios(client: httpx.Client, carboy_only: bool) -> dict[str, str]:
    """Run every scenario once against the served app behind *client*; return the results."""
    out: dict[str, str] = {}

    def keys(cookie: str) -> int:
        got = client.get("/keys", headers={"Cookie": cookie}).json()["keys"]
        return len([k for k in got if k != "started"])

    def n(cookie: str) -> int:
        return int(client.get("/n", headers={"Cookie": cookie}).json()["n"])

    cookie, s = _drive(client, [("POST", f"/set/k{i}") for i in range(400)])
    out["distinct (400)"] = f"{keys(cookie)}" + _errors(s)
    cookie, s = _drive(client, [("POST", "/plus")] * 1000)
    out["n += 1 (1000)"] = f"{n(cookie)}" + _errors(s)
    if carboy_only:
        cookie, s = _drive(client, [("POST", "/increment")] * 1000)
        out["increment (1000)"] = f"{n(cookie)}" + _errors(s)
        cookie, s = _drive(client, [("POST", "/plus-locked")] * 1000)
        out["n += 1 locked (1000)"] = f"{n(cookie)}" + _errors(s)
    calls: list[tuple[str, str]] = []
    for i in range(150):
        calls += [("POST", f"/set/w{i}"), ("GET", "/keys"), ("GET", "/n")]
    cookie, s = _drive(client, calls)
    out["writes among reads (150)"] = f"{keys(cookie)}" + _errors(s)
    return out


def _errors(statuses: list[int]) -> str:
    bad = len([s for s in statuses if s != 200])
    return f" ({bad} non-200)" if bad else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args(argv)
    store = redis.Redis.from_url(options.redis)
    for name, target in TARGETS.items():
        prefix = f"baseline-{uuid.uuid4().hex[:8]}:"
        served = _Served(target, options.redis, prefix)
        try:
            runs = [scenarios(served.client, "carboy" in name) for _ in range(options.runs)]
        finally:
            served.close()
            stale = list(store.scan_iter(match=prefix + "*", count=1000))
            if stale:
                store.delete(*stale)
        print(name)
        for scenario in runs[0]:
            print(f"  {scenario:28} " + " | ".join(run[scenario] for run in runs))


if __name__ == "__main__":
    main()
