"""Baselines with teeth for rate limits: Flask-Limiter against carboy.scale.limiter.

Run: ``python benchmarks/baseline_limits.py`` (needs ``redis-server`` and gunicorn; about
half a minute). Each scenario serves an app on 4 gunicorn sync workers and sends it requests
from 8 threads sharing one httpx client, then prints a Markdown table (docs/scale/limits.md
records one run):

1. ``memory://`` storage, a limit of 10/minute, 200 requests: how many got through.
2. Redis storage (a ``redis-server`` of the script's own), 10/minute, 200 requests.
3. Redis stopped mid-run, a limit of 1000/minute: 40 requests before the stop and 40 during
   it, counted by status.

4. Two hosts whose clocks are 2 minutes apart share a 5/minute moving window, 5 hits each:
   limits' Redis storage (Flask-Limiter's) against carboy's server-clock storage.

The servers and Redis are the test suite's helpers (tests/servers.py, tests/redis_servers.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from redis_servers import RedisServer  # noqa: E402
from servers import Server, free_port, tool  # noqa: E402

WORKERS = 4
APPS = {"Flask-Limiter": "flask_limiter_app:app", "carboy": "carboy_limiter_app:app"}


def blast(url: str, n: int, concurrency: int = 8) -> Counter[int]:
    with httpx.Client(timeout=20) as http, ThreadPoolExecutor(concurrency) as pool:
        return Counter(r.status_code for r in pool.map(lambda _: http.get(url), range(n)))


def serve(target: str, env: dict[str, str], log: Path) -> Server:
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--timeout", "30"),
        target,
    ]
    path = os.pathsep.join(filter(None, [str(HERE / "limits_apps"), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "LIMITS_PREFIX": uuid.uuid4().hex, **env}
    server = Server(cmd, port, log, env).start()
    server.wait_until_up("/health")
    return server


def show(counts: Counter[int]) -> str:
    return ", ".join(f"{n} x {code}" for code, n in sorted(counts.items()))


def clock_skew(url: str) -> list[tuple[str, str, str]]:
    """Scenario 4, in this process: host B's ``time.time()`` runs 120 s ahead of host A's."""
    from limits import parse
    from limits.storage import RedisStorage
    from limits.strategies import MovingWindowRateLimiter

    from carboy.scale.connection import RedisConnection
    from carboy.scale.limit_storage import ServerClockRedisStorage

    connection = RedisConnection(url=url)
    connection._options = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
    item = parse("5/minute")
    real = time.time
    rows = []
    storages = {
        "Flask-Limiter": lambda: RedisStorage(url),
        "carboy": lambda: ServerClockRedisStorage(connection),
    }
    for name, make in storages.items():
        allowed = 0
        key = uuid.uuid4().hex
        for skew in (0, 120):
            time.time = lambda skew=skew: real() + skew  # type: ignore[misc]
            try:
                strategy = MovingWindowRateLimiter(make())
                allowed += sum(strategy.hit(item, key) for _ in range(5))
            finally:
                time.time = real  # type: ignore[misc]
        label = "moving window 5/minute, two hosts 120 s apart, 5 hits each"
        rows.append((name, label, f"{allowed} let through"))
    return rows


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="carboy-limits-"))
    rows: list[tuple[str, str, str]] = []
    with RedisServer() as redis_server:
        for name, target in APPS.items():
            env = {"LIMITS_STORAGE": "memory://", "LIMITS_LIMIT": "10/minute"}
            with serve(target, env, tmp / f"{name}-memory.log") as server:
                rows.append(
                    (
                        name,
                        "memory://, 10/minute, 200 requests",
                        show(blast(server.base_url + "/limited", 200)),
                    )
                )
            env = {"LIMITS_STORAGE": redis_server.url, "LIMITS_LIMIT": "10/minute"}
            with serve(target, env, tmp / f"{name}-redis.log") as server:
                rows.append(
                    (
                        name,
                        "Redis, 10/minute, 200 requests",
                        show(blast(server.base_url + "/limited", 200)),
                    )
                )
            policies = ["(default)"] if name == "Flask-Limiter" else ["local", "open", "closed"]
            for policy in policies:
                env = {"LIMITS_STORAGE": redis_server.url, "LIMITS_LIMIT": "1000/minute"}
                if name == "carboy":
                    env["LIMITS_OUTAGE"] = policy
                with serve(target, env, tmp / f"{name}-outage-{policy}.log") as server:
                    url = server.base_url + "/limited"
                    before = blast(url, 40)
                    redis_server.stop()
                    started = time.monotonic()
                    during = blast(url, 40)
                    took = time.monotonic() - started
                    redis_server.start()
                    label = f"Redis stopped mid-run, outage policy {policy}"
                    rows.append(
                        (
                            name,
                            label,
                            f"before: {show(before)}; during: {show(during)} ({took:.2f} s)",
                        )
                    )
        rows.extend(clock_skew(redis_server.url))
    print("| library | scenario | answers |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
