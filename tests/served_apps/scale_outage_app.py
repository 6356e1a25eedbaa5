"""Every shared-state module on one Redis, served by tests/test_scale_outage.py while that
Redis is stopped and started again.

Environment: ``OUTAGE_REDIS_URL`` (the one ``REDIS_URL`` of the sessions, the cache and the
limiter), ``OUTAGE_PREFIX`` (the key prefix of this run) and ``OUTAGE_ASYNC`` (``"1"``: the
session-writing, cached and rate-limited views are ``async def``, and the limiter checks on
the asyncio client, for an ASGI server).

* ``/free``: no session, no cache, no limit;
* ``/read`` (GET): reads the session; limited to 1000/minute, so the limiter loads the session
  ahead in its own round trip;
* ``/write`` (POST): writes the session;
* ``/cached``: a cached view that answers ``<pid>:<n>``, *n* counting its computations in
  this process, so every fresh computation answers a new body;
* ``/limited``: 5/minute per ``X-Client`` header, the limiter's default outage policy.
"""

from __future__ import annotations

import itertools
import os

import carboy
from carboy import request, session
from carboy.scale.caching import Cache
from carboy.scale.limiter import Limiter
from carboy.scale.sessions import Session

PREFIX = os.environ["OUTAGE_PREFIX"]
ASYNC = os.environ.get("OUTAGE_ASYNC") == "1"

app = carboy.Carboy(__name__)
app.config.update(
    SECRET_KEY="scale-outage-test",
    REDIS_URL=os.environ["OUTAGE_REDIS_URL"],
    SESSION_TYPE="redis",
    SESSION_KEY_PREFIX=PREFIX + "session:",
    CACHE_TYPE="RedisCache",
    CACHE_KEY_PREFIX=PREFIX + "cache:",
    RATELIMIT_KEY_PREFIX=PREFIX + "limits",
    RATELIMIT_ASYNC=ASYNC,
)
Session(app)
cache = Cache(app)
limiter = Limiter(lambda: request.headers.get("X-Client", "anyone"), app=app)
computed = itertools.count(1)


@app.get("/free")
def free() -> str:
    return "free"


@app.get("/read")
@limiter.limit("1000/minute")
def read() -> dict[str, object]:
    return {"writes": session.get("writes", 0)}


if ASYNC:

    @app.post("/write")
    async def write() -> str:
        session["writes"] = session.get("writes", 0) + 1
        return "written"

    @app.get("/cached")
    @cache.cached(timeout=60)
    async def cached() -> str:
        return f"{os.getpid()}:{next(computed)}"

    @app.get("/limited")
    @limiter.limit("5/minute")
    async def limited() -> str:
        return "limited"

else:

    @app.post("/write")
    def write() -> str:
        session["writes"] = session.get("writes", 0) + 1
        return "written"

    @app.get("/cached")
    @cache.cached(timeout=60)
    def cached() -> str:
        return f"{os.getpid()}:{next(computed)}"

    @app.get("/limited")
    @limiter.limit("5/minute")
    def limited() -> str:
        return "limited"
