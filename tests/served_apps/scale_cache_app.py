"""A carboy app whose cached views the cache proof tests serve with several workers.

Environment: ``SCALE_CACHE_REDIS_URL`` (the Redis of the cache and of the counters),
``SCALE_CACHE_PREFIX`` (a per-test key prefix), ``SCALE_CACHE_SLEEP`` (seconds a cold view
computes), ``SCALE_CACHE_LOCK_TIMEOUT`` and ``SCALE_CACHE_LOCK_WAIT`` (the cache's lock TTL and
wait bound). Each computation adds 1 to ``<prefix>count:<name>`` and pushes its start time to
``<prefix>starts:<name>``, and the computing worker's pid is kept in ``<prefix>pid:<name>``, so a
test can count recomputes across workers and kill the one computing.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis

import carboy
from carboy.scale.caching import Cache
from carboy.scale.connection import get_redis

PREFIX = os.environ.get("SCALE_CACHE_PREFIX", "scale-cache:")
SLEEP = float(os.environ.get("SCALE_CACHE_SLEEP", "0.5"))

app = carboy.Carboy(__name__)
app.config.update(
    REDIS_URL=os.environ["SCALE_CACHE_REDIS_URL"],
    CACHE_TYPE="RedisCache",
    CACHE_KEY_PREFIX=PREFIX,
    CACHE_LOCK_TIMEOUT=float(os.environ.get("SCALE_CACHE_LOCK_TIMEOUT", "10")),
    CACHE_LOCK_WAIT=float(os.environ.get("SCALE_CACHE_LOCK_WAIT", "15")),
)
cache = Cache(app)


def record(name: str) -> None:
    """Count a computation in Redis; a Redis outage must not fail the view."""
    try:
        pipe = get_redis(app).sync.pipeline()
        pipe.incr(f"{PREFIX}count:{name}")
        pipe.rpush(f"{PREFIX}starts:{name}", repr(time.time()))
        pipe.set(f"{PREFIX}pid:{name}", os.getpid())
        pipe.execute()
    except redis.RedisError:
        pass


@app.after_request
def worker_header(response: carboy.Response) -> carboy.Response:
    response.headers["X-Worker"] = str(os.getpid())
    return response


@app.get("/cold/<name>")
@cache.cached(timeout=60)
def cold(name: str) -> str:
    record(name)
    time.sleep(SLEEP)
    return f"computed {name} by {os.getpid()}"


@app.get("/stale/<name>")
@cache.cached(timeout=1, stale_ttl=60)
def stale(name: str) -> str:
    record(name)
    time.sleep(0.2)
    return f"{name} at {time.time()}"


@app.get("/slow-async/<name>")
@cache.cached(timeout=60)
async def slow_async(name: str) -> str:
    r = get_redis(app).aio
    await r.incr(f"{PREFIX}count:{name}")
    await r.set(f"{PREFIX}pid:{name}", os.getpid())
    await asyncio.sleep(2.0)
    return f"slow {name}"


@app.get("/fast")
async def fast() -> str:
    return "fast"


@app.get("/page/<name>")
@cache.cached(timeout=60)
def page(name: str) -> str:
    record(name)
    return f"<p>page {name}</p>" * 20


@app.get("/outage/<name>")
@cache.cached(timeout=60)
def outage(name: str) -> str:
    return f"{name} {time.time()}"
