"""The app tests/test_scale_health_*.py serve: health endpoints, drain and the overload limit.

Environment (all optional):

* ``HEALTH_APP_DRAIN_SECONDS`` (``2``), ``HEALTH_APP_STOP_SECONDS`` (``5``): the drain and
  stop periods;
* ``HEALTH_APP_MARKER``: the drain marker file (tests give each server its own);
* ``HEALTH_APP_REDIS_URL``: Redis for the built-in check;
* ``HEALTH_APP_LIMIT``: ``MAX_CONCURRENT_REQUESTS`` (the overload limit);
* ``HEALTH_APP_TTL``: ``HEALTH_CHECK_TTL``;
* ``HEALTH_APP_EVENTS``: a file that gets a line when a slow request starts;
* ``HEALTH_APP_NO_CHAIN=1``: ``HEALTH_DRAIN_ON_SIGTERM = False`` (the drain-endpoint recipe).

Routes:

* ``/hello``; ``/pid`` (this worker's process id);
* ``/slow?s=2&tag=x`` (sync) and ``/aslow?s=2`` (``async def``): answer after *s* seconds
  (``/slow`` records ``slow-start <tag>`` first);
* ``/sse`` (a sync generator) and ``/asse`` (an async one): a tick every 0.1 s until the
  drain period ends, wrapped by ``Health.stream``; the last chunk is never ``end``, the
  stream ends when its response completes;
* ``/ws/hold`` (WebSocket): says ``hello <pid>``, then echoes until closed.
"""

from __future__ import annotations

import asyncio
import os
import time
import typing as t

import carboy
from carboy import request
from carboy.scale.health import Health
from carboy.scale.overload import Overload
from carboy.websocket import WebSocketDisconnect, websocket

app = carboy.Carboy(__name__)
app.config.update(
    HEALTH_DRAIN_SECONDS=float(os.environ.get("HEALTH_APP_DRAIN_SECONDS", "2")),
    HEALTH_STOP_SECONDS=float(os.environ.get("HEALTH_APP_STOP_SECONDS", "5")),
    HEALTH_DRAIN_FILE=os.environ.get("HEALTH_APP_MARKER"),
    HEALTH_CHECK_TTL=float(os.environ.get("HEALTH_APP_TTL", "1")),
    MAX_SYNC_THREADS=64,
    HEALTH_DRAIN_ON_SIGTERM=os.environ.get("HEALTH_APP_NO_CHAIN") != "1",
)
EVENTS = os.environ.get("HEALTH_APP_EVENTS")
if os.environ.get("HEALTH_APP_REDIS_URL"):
    app.config["REDIS_URL"] = os.environ["HEALTH_APP_REDIS_URL"]
if os.environ.get("HEALTH_APP_LIMIT"):
    app.config["MAX_CONCURRENT_REQUESTS"] = int(os.environ["HEALTH_APP_LIMIT"])

health = Health(app)
Overload(app)


@app.get("/hello")
def hello() -> str:
    return "hello"


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


@app.get("/slow")
def slow() -> str:
    if EVENTS and "tag" in request.args:
        with open(EVENTS, "a") as f:
            f.write(f"slow-start {request.args['tag']}\n")
    time.sleep(float(request.args.get("s", "2")))
    return "slow done"


@app.get("/aslow")
async def aslow() -> str:
    await asyncio.sleep(float(request.args.get("s", "2")))
    return "aslow done"


@app.get("/sse")
def sse() -> t.Any:
    def ticks() -> t.Iterator[str]:
        n = 0
        while True:
            yield f"data: {n}\n\n"
            n += 1
            if health.wait_closing(0.1):
                return

    return health.stream(ticks()), {"Content-Type": "text/event-stream"}


@app.get("/asse")
async def asse() -> t.Any:
    async def ticks() -> t.AsyncIterator[str]:
        n = 0
        while True:
            yield f"data: {n}\n\n"
            n += 1
            await asyncio.sleep(0.1)

    return health.stream(ticks()), {"Content-Type": "text/event-stream"}


@app.websocket("/ws/hold")
async def hold() -> None:
    await websocket.send(f"hello {os.getpid()}")
    try:
        while True:
            await websocket.send(await websocket.receive())
    except WebSocketDisconnect:
        pass
