"""The app tests/test_scale_limits.py serves with several workers (gunicorn, uvicorn).

Configured by the environment: ``LIMITS_REDIS_URL`` (the app's ``REDIS_URL``: a Redis the
test stops and starts), ``LIMITS_MACHINE_URL`` (the machine's Redis) and ``LIMITS_PREFIX``
(``RATELIMIT_KEY_PREFIX``, one per test run). Every client shares one bucket (the key
functions return ``"everyone"``), and each limited view answers with its worker's process id.

* ``/strategy/<name>``: 100/minute with strategy *name*, on the machine's Redis;
* ``/outage/<policy>``: 5/minute on the app's Redis, with storage-outage policy *policy*;
* ``/async``: an ``async def`` view, 100/minute checked by coroutine hooks on the asyncio
  client (``RATELIMIT_ASYNC``), on the machine's Redis.

Each route has a limiter of its own (a limiter limits only the views it decorates).
"""

from __future__ import annotations

import os
import typing as t

from carboy import Carboy
from carboy.scale.limiter import Limiter

app = Carboy(__name__)
app.config.update(
    REDIS_URL=os.environ["LIMITS_REDIS_URL"],
    RATELIMIT_KEY_PREFIX=os.environ["LIMITS_PREFIX"],
    RATELIMIT_HEADERS_ENABLED=True,
)
MACHINE = os.environ["LIMITS_MACHINE_URL"]


def everyone() -> str:
    return "everyone"


@app.route("/sync")
def probe() -> str:
    return "up"


def _limited(path: str, name: str, limit: str, limiter: Limiter) -> None:
    def view() -> str:
        return str(os.getpid())

    view.__name__ = view.__qualname__ = name
    app.add_url_rule(path, name, limiter.limit(limit)(view))


for _strategy in ("fixed-window", "moving-window", "sliding-window-counter"):
    _own = Limiter(everyone, app=app, strategy=_strategy, storage_uri=MACHINE)
    _limited(f"/strategy/{_strategy}", f"strategy_{_strategy}", "100/minute", _own)

for _policy in ("open", "closed", "local"):
    _limited(
        f"/outage/{_policy}",
        f"outage_{_policy}",
        "5/minute",
        Limiter(everyone, app=app, storage_outage=_policy),
    )

_async_limiter = Limiter(everyone, app=app, storage_uri=MACHINE, async_checks=True)


@app.route("/async")
@_async_limiter.limit("100/minute")
async def limited_async() -> t.Any:
    return str(os.getpid())
