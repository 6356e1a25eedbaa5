"""A broadcast served by several workers, for tests/test_scale_realtime.py.

Environment: ``RT_PREFIX`` (the key prefix of this run), ``RT_BACKEND`` (``streams``,
``pubsub`` or ``postgres``), ``RT_REDIS_URL`` (the ``REDIS_URL``; without it nothing is
recorded in Redis), for ``postgres`` ``RT_PG_URL`` and ``RT_TABLE``
(``BROADCAST_POSTGRES_URL`` and ``_TABLE``, for tests/test_scale_broadcast_postgres.py), and
optionally ``RT_MAXLEN``, ``RT_BLOCK``.

* ``POST /publish/<channel>`` (sync view) and ``POST /apublish/<channel>`` (``async def``)
  publish the request body; they answer the message id;
* ``GET /sse/<channel>``: the SSE helper (``Last-Event-ID`` honoured), with ``X-Worker: <pid>``;
* ``WS /ws/<channel>``: the WebSocket helper; its first frame is ``hello <pid>`` (sent once
  subscribed); ``?queue=N&policy=close|drop_oldest`` set the slow-consumer bound and policy,
  ``?ids=1`` sends each message as ``<id> <data>``, ``?last_id=`` resumes. When the helper
  returns, a JSON record of the connection (pid, why it ended, its counters) is pushed to the
  Redis list ``<prefix>closed`` (with ``RT_REDIS_URL``);
* every gap a reader reports is pushed, with the time, to ``<prefix>gaps`` (likewise);
* ``POST /drain?pid=<pid>``: ``close_all(1012)`` in that worker (409 from the others);
* ``GET /pid``: the worker's pid;
* ``GET /page/<channel>``: an HTML page for a browser (tests/test_example_browser.py): it opens
  ``/ws/<channel>``, shows the pid of the ``hello`` frame in ``#worker``, appends every later
  frame to ``#messages`` (as text), and its form posts a message to ``/publish/<channel>``.
"""

from __future__ import annotations

import json
import os
import time
import typing as t
from html import escape

import carboy
from carboy import request, websocket
from carboy.scale.broadcast import Broadcast, Gap, Message, Subscription
from carboy.scale.connection import get_redis

PREFIX = os.environ["RT_PREFIX"]
REDIS_URL = os.environ.get("RT_REDIS_URL")

app = carboy.Carboy(__name__)
if REDIS_URL:
    app.config["REDIS_URL"] = REDIS_URL
if "RT_PG_URL" in os.environ:
    app.config["BROADCAST_POSTGRES_URL"] = os.environ["RT_PG_URL"]
    app.config["BROADCAST_POSTGRES_TABLE"] = os.environ["RT_TABLE"]
app.config.update(
    BROADCAST_BACKEND=os.environ.get("RT_BACKEND", "streams"),
    BROADCAST_KEY_PREFIX=PREFIX,
    BROADCAST_MAXLEN=int(os.environ.get("RT_MAXLEN", "10000")),
    BROADCAST_BLOCK=float(os.environ.get("RT_BLOCK", "1.0")),
    BROADCAST_KEY_TTL=600,
    BROADCAST_SSE_HEARTBEAT=1.0,
    BROADCAST_WS_CLOSE_TIMEOUT=30.0,
)


async def record(name: str, entry: dict[str, t.Any]) -> None:
    """Push *entry* to the Redis list ``<prefix><name>`` for the test to read (with Redis)."""
    if REDIS_URL:
        await get_redis(app).aio.rpush(PREFIX + name, json.dumps(entry))


async def record_gap(gap: Gap) -> None:
    await record("gaps", {"time": time.time(), "pid": os.getpid(), **gap.as_dict()})


broadcast = Broadcast(app, on_gap=record_gap)


@app.get("/pid")
def pid() -> str:
    return str(os.getpid())


@app.post("/publish/<channel>")
def publish(channel: str) -> str:
    return broadcast.publish(channel, request.get_data(as_text=True))


@app.post("/apublish/<channel>")
async def apublish(channel: str) -> str:
    return await broadcast.apublish(channel, request.get_data(as_text=True))


@app.post("/drain")
def drain() -> tuple[str, int]:
    wanted = request.args.get("pid")
    if wanted and wanted != str(os.getpid()):
        return "another worker", 409  # the test asks again, on a new connection
    broadcast.close_all(1012)
    return str(os.getpid()), 200


@app.get("/sse/<channel>")
def sse(channel: str) -> t.Any:
    response = broadcast.sse(channel)
    response.headers["X-Worker"] = str(os.getpid())
    return response


def with_id(message: Message) -> str:
    return f"{message.id} {message.data!s}"


@app.websocket("/ws/<channel>")
async def ws(channel: str) -> None:
    args = request.args
    opened: list[Subscription] = []

    async def on_open(sub: Subscription) -> None:
        opened.append(sub)
        await websocket.send(f"hello {os.getpid()}")

    async def on_gap(gap: Gap) -> None:
        await websocket.send("gap " + json.dumps(gap.as_dict()))

    reason = await broadcast.serve_websocket(
        channel,
        args.get("last_id"),
        encode=with_id if args.get("ids") else None,
        queue_size=args.get("queue", type=int),
        overflow=args.get("policy"),
        on_open=on_open,
        on_gap=on_gap,
    )
    sub = opened[0] if opened else None
    closed = {
        "pid": os.getpid(),
        "channel": channel,
        "reason": reason,
        "delivered": sub.delivered if sub else 0,
        "dropped": sub.dropped if sub else 0,
        "peak": sub.peak if sub else 0,
        "queue_size": sub.queue_size if sub else 0,
    }
    await record("closed", closed)


PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Channel {channel}</title></head>
<body>
  <p>Worker: <span id="worker">connecting</span></p>
  <form id="send"><input id="text" name="text" required> <button type="submit">Send</button></form>
  <ul id="messages"></ul>
  <script>
    const channel = {channel_js};
    const worker = document.getElementById("worker");
    const list = document.getElementById("messages");
    const input = document.getElementById("text");
    const socket = new WebSocket(`ws://${{location.host}}/ws/${{channel}}`);
    socket.onmessage = (event) => {{
      if (event.data.startsWith("hello ")) {{ worker.textContent = event.data.slice(6); return; }}
      const item = document.createElement("li");
      item.textContent = event.data;
      list.append(item);
    }};
    socket.onclose = () => {{ worker.textContent = "closed"; }};
    document.getElementById("send").addEventListener("submit", async (event) => {{
      event.preventDefault();
      await fetch(`/publish/${{channel}}`, {{method: "POST", body: input.value}});
      input.value = "";
    }});
  </script>
</body>
</html>
"""


@app.get("/page/<channel>")
def page(channel: str) -> str:
    """The browser page of *channel*; the channel is HTML-escaped and quoted as JSON for JS."""
    channel_js = json.dumps(channel).replace("<", "\\u003c")
    return PAGE.format(channel=escape(channel), channel_js=channel_js)
