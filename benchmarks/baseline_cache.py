"""Baseline with teeth: a cold-key stampede on Flask + Flask-Caching 2.5 and on carboy's cache.

One cached view (it computes for ``--compute`` seconds and counts each computation with a Redis
``INCR``) is served by gunicorn, 4 workers with 50 threads each, and hit with N requests at
concurrency C on a key nobody cached yet. The table shows how many times the view ran: Flask-
Caching has no stampede protection, so every request that misses before the first one stores
computes again; carboy's single-flight lock computes once.

Run from the repository root with the machine's Redis at 127.0.0.1:6379 (database 15 is used,
with a per-run key prefix that is deleted afterwards)::

    PYTHONPATH=src .venv/bin/python -m benchmarks.baseline_cache

The served app is :func:`make_app` of this module (``BASELINE_CACHE_TARGET`` = ``flask`` or
``carboy``), so both targets run the same view code.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import typing as t
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/15"
#: (requests, concurrency): the issue's measurement, and the proof test's.
SCENARIOS = [(200, 50), (1000, 200)]


def make_app() -> t.Any:
    """The served app: the same cached view on Flask + Flask-Caching or on carboy."""
    target = os.environ["BASELINE_CACHE_TARGET"]
    prefix = os.environ["BASELINE_CACHE_PREFIX"]
    compute = float(os.environ.get("BASELINE_CACHE_COMPUTE", "0.5"))
    counter = redis.Redis.from_url(REDIS_URL)
    config = {
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": REDIS_URL,
        "CACHE_KEY_PREFIX": prefix,
        "CACHE_DEFAULT_TIMEOUT": 300,
    }
    if target == "flask":
        from flask import Flask
        from flask_caching import Cache

        app: t.Any = Flask(__name__)
    else:
        import carboy
        from carboy.scale.caching import Cache  # type: ignore[assignment]

        app = carboy.Carboy(__name__)
    app.config.update(config)
    cache = Cache(app)

    @app.get("/report/<name>")
    @cache.cached()
    def report(name: str) -> str:
        counter.incr(f"{prefix}runs:{name}")
        time.sleep(compute)
        return f"report {name}"

    @app.get("/up")
    def up() -> str:
        return "up"

    return app


def stampede(base_url: str, path: str, total: int, concurrency: int) -> list[int | str]:
    limits = httpx.Limits(max_connections=concurrency)
    with (
        httpx.Client(base_url=base_url, timeout=30.0, limits=limits) as client,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):

        def one(_: int) -> int | str:
            try:
                return client.get(path, headers={"Connection": "close"}).status_code
            except httpx.HTTPError as e:
                return type(e).__name__

        return list(pool.map(one, range(total)))


def measure(target: str, compute: float) -> list[dict[str, t.Any]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import Server, free_port, tool

    prefix = f"baseline-cache-{uuid.uuid4().hex[:10]}:"
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "4", "--worker-class", "gthread"),
        *("--threads", "50", "--timeout", "60", "benchmarks.baseline_cache:make_app()"),
    ]
    env = {
        "BASELINE_CACHE_TARGET": target,
        "BASELINE_CACHE_PREFIX": prefix,
        "BASELINE_CACHE_COMPUTE": str(compute),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    log = Path(tempfile.mkdtemp(prefix="baseline-cache-")) / f"{target}.log"
    client = redis.Redis.from_url(REDIS_URL)
    rows = []
    try:
        with Server(cmd, port, log, env=env) as server:
            server.wait_until_up("/up")
            for total, concurrency in SCENARIOS:
                name = f"n{total}c{concurrency}"
                started = time.monotonic()
                codes = stampede(server.base_url, f"/report/{name}", total, concurrency)
                rows.append(
                    {
                        "target": target,
                        "requests": total,
                        "concurrency": concurrency,
                        "runs": int(client.get(f"{prefix}runs:{name}") or 0),
                        "ok": codes.count(200),
                        "seconds": round(time.monotonic() - started, 2),
                    }
                )
    finally:
        keys = list(client.scan_iter(match=f"*{prefix}*"))
        if keys:
            client.delete(*keys)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compute", type=float, default=0.5, help="seconds the view computes")
    parser.add_argument("--targets", default="flask,carboy")
    args = parser.parse_args()
    print(f"gunicorn 4 workers x 50 threads, cold key, view computes {args.compute} s\n")
    print("| stack | requests | concurrency | view ran | 200s | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for target in args.targets.split(","):
        label = "Flask 3.1 + Flask-Caching 2.5" if target == "flask" else "carboy.scale.caching"
        for row in measure(target, args.compute):
            print(
                f"| {label} | {row['requests']} | {row['concurrency']} | {row['runs']} |"
                f" {row['ok']} | {row['seconds']} |"
            )


if __name__ == "__main__":
    main()
