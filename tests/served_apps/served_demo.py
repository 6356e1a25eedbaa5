"""The app tests/test_servers.py serves, unchanged, under WSGI and ASGI servers.

``DEMO_EVENTS`` names a file that teardown functions and closing generators append lines to,
so a test can see what happened inside the server after a client went away.
"""

from __future__ import annotations

import asyncio
import os
import time
import typing as t

from carboy import (
    Carboy,
    abort,
    request,
    session,
    stream_with_context,
    websocket,
)

app = Carboy(__name__)
app.config["SECRET_KEY"] = "served-demo-secret"


def record(line: str) -> None:
    path = os.environ.get("DEMO_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


# -- plain HTTP ---------------------------------------------------------------------------------


@app.route("/protocol")
def protocol() -> str:
    return "asgi" if "asgi.scope" in request.environ else "wsgi"


@app.route("/sync")
def sync_view() -> str:
    return f"sync ok {request.args.get('name', '')}"


@app.route("/async")
async def async_view() -> str:
    await asyncio.sleep(0)
    return f"async ok {request.args.get('name', '')}"


@app.post("/echo")
async def echo_json() -> dict[str, t.Any]:
    return {"got": request.get_json(), "method": request.method}


@app.post("/session")
def session_set() -> str:
    session["value"] = request.form["value"]
    return "stored"


@app.get("/session")
async def session_get() -> dict[str, t.Any]:
    return {"value": session.get("value")}


@app.route("/stream/sync")
def stream_sync() -> t.Any:
    count = request.args.get("n", 3, type=int)

    def generate() -> t.Iterator[str]:
        for i in range(count):
            yield f"sync-{i}\n"

    return generate(), {"content-type": "text/plain"}


@app.route("/stream/async")
async def stream_async() -> t.Any:
    count = request.args.get("n", 3, type=int)

    async def generate() -> t.AsyncIterator[str]:
        for i in range(count):
            await asyncio.sleep(0)
            yield f"async-{i}\n"

    return generate(), {"content-type": "text/plain"}


@app.route("/sleepy")
async def sleepy() -> dict[str, t.Any]:
    """For gevent: awaits, then reads the request, which must still be this request's."""
    await asyncio.sleep(float(request.args.get("delay", "0.2")))
    return {"value": request.args["value"], "pid": os.getpid()}


# -- concurrency: many requests parked on one event --------------------------------------------

#: One gate per test run: requests park on the event after counting themselves as started.
_gates: dict[str, tuple[asyncio.Event, list[int]]] = {}


def _gate(key: str) -> tuple[asyncio.Event, list[int]]:
    gate = _gates.get(key)
    if gate is None:
        gate = _gates[key] = (asyncio.Event(), [0])
    return gate


@app.route("/gate/<key>/wait")
async def gate_wait(key: str) -> dict[str, t.Any]:
    event, started = _gate(key)
    started[0] += 1
    await event.wait()
    return {"released": request.args["i"]}


@app.route("/gate/<key>/started")
async def gate_started(key: str) -> dict[str, int]:
    return {"started": _gate(key)[1][0]}


@app.post("/gate/<key>/open")
async def gate_open(key: str) -> str:
    _gate(key)[0].set()
    return "opened"


# -- client disconnects ---------------------------------------------------------------------


@app.teardown_request
def note_teardown(exc: BaseException | None) -> None:
    tag = request.args.get("tag")
    if tag:
        record(f"teardown {tag}")


@app.route("/forever/sync")
def forever_sync() -> t.Any:
    tag = request.args["tag"]

    def generate() -> t.Iterator[str]:
        while True:
            yield f"tick {tag}\n"
            time.sleep(0.05)

    return stream_with_context(generate()), {"content-type": "text/plain"}


@app.route("/forever/async")
async def forever_async() -> t.Any:
    tag = request.args["tag"]

    async def generate() -> t.AsyncIterator[str]:
        try:
            while True:
                yield f"tick {tag}\n"
                await asyncio.sleep(0.05)
        finally:
            record(f"async-closed {tag}")

    return generate(), {"content-type": "text/plain"}


# -- WebSockets -----------------------------------------------------------------------------


@app.before_websocket
def guard() -> t.Any:
    if request.endpoint == "ws_guarded" and request.args.get("token") != "letmein":
        abort(403)
    return None


@app.websocket("/ws/echo")
async def ws_echo() -> None:
    while True:
        message = await websocket.receive()
        if isinstance(message, bytes):
            await websocket.send(b"echo:" + message)
        else:
            await websocket.send("echo:" + message)


@app.websocket("/ws/json")
async def ws_json() -> None:
    data = await websocket.receive_json()
    await websocket.send_json({"got": data, "who": request.args.get("who")})


@app.websocket("/ws/guarded")
async def ws_guarded() -> None:
    await websocket.send("welcome")


@app.websocket("/ws/boom")
async def ws_boom() -> None:
    await websocket.receive()
    raise RuntimeError("the handler failed on purpose")
