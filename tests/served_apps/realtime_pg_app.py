"""A broadcast on the postgres backend served by several workers, for
tests/test_scale_broadcast_postgres.py.

Environment: ``RT_PG_URL`` (``BROADCAST_POSTGRES_URL``), ``RT_TABLE`` (the table of sequence
numbers of this run) and ``RT_PREFIX`` (the channel prefix of this run).

* ``POST /publish/<channel>`` (sync view) and ``POST /apublish/<channel>`` (``async def``)
  publish the request body and answer the message id;
* ``GET /sse/<channel>``: the SSE helper, with ``X-Worker: <pid>``;
* ``WS /ws/<channel>``: the WebSocket helper; its first frame is ``hello <pid>`` (sent once
  subscribed), then each message as ``<id> <data>``;
* ``GET /pid``: the worker's pid.
"""

from __future__ import annotations

import os
import typing as t

import carboy
from carboy import request, websocket
from carboy.scale.broadcast import Broadcast, Message, Subscription

app = carboy.Carboy(__name__)
app.config.update(
    BROADCAST_BACKEND="postgres",
    BROADCAST_POSTGRES_URL=os.environ["RT_PG_URL"],
    BROADCAST_POSTGRES_TABLE=os.environ["RT_TABLE"],
    BROADCAST_KEY_PREFIX=os.environ["RT_PREFIX"],
    BROADCAST_SSE_HEARTBEAT=1.0,
)
broadcast = Broadcast(app)


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


@app.post("/publish/<channel>")
def publish(channel: str) -> str:
    return broadcast.publish(channel, request.get_data(as_text=True))


@app.post("/apublish/<channel>")
async def apublish(channel: str) -> str:
    return await broadcast.apublish(channel, request.get_data(as_text=True))


@app.get("/sse/<channel>")
def sse(channel: str) -> t.Any:
    response = broadcast.sse(channel)
    response.headers["X-Worker"] = str(os.getpid())
    return response


def with_id(message: Message) -> str:
    return f"{message.id} {message.data!s}"


@app.websocket("/ws/<channel>")
async def ws(channel: str) -> None:
    async def on_open(sub: Subscription) -> None:
        await websocket.send(f"hello {os.getpid()}")

    await broadcast.serve_websocket(channel, encode=with_id, on_open=on_open)
