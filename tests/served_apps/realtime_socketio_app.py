"""The reference for the realtime fan-out benchmark: python-socketio's own ASGI server with its
Redis manager (``benchmarks/realtime_socketio.py``, ``tests/test_realtime_bench.py``).

Served by uvicorn with several workers, as ``realtime_app.py`` is; no carboy code runs in it.
Each worker's ``AsyncRedisManager`` subscribes to the Redis pub/sub channel ``RT_CHANNEL``
(on ``RT_REDIS_URL``) when its first client connects; the benchmark publishes with an external
``RedisManager(write_only=True)`` on the same channel, python-socketio's way of emitting from
another process.

* ``/socket.io/?EIO=4&transport=websocket&room=<room>``: the client joins ``<room>`` and, once
  in it, receives the event ``hello`` with the worker's pid; then every event emitted to the
  room;
* ``GET /pid``: the worker's pid.
"""

from __future__ import annotations

import os
import typing as t
from urllib.parse import parse_qs

import socketio

manager = socketio.AsyncRedisManager(os.environ["RT_REDIS_URL"], channel=os.environ["RT_CHANNEL"])
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, transports=["websocket"])


@sio.event
async def connect(sid: str, environ: dict[str, t.Any], auth: object = None) -> None:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    await sio.enter_room(sid, query.get("room", ["default"])[0])
    # Straight to this client, not through Redis.
    await sio.emit("hello", os.getpid(), to=sid, ignore_queue=True)


async def pid(scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
    """Every path but /socket.io/ answers the worker's pid."""
    body = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = socketio.ASGIApp(sio, other_asgi_app=pid)
