"""The ceiling for ASGI: an app that does nothing but answer ``Hello, World!``.

It reads neither path nor method, so it serves only the hello scenario. It does answer the
lifespan protocol, so servers start it without complaint.
"""

from __future__ import annotations

import typing as t

from .common import HELLO

SCENARIOS = ("hello",)

_BODY = HELLO.encode()
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_BODY)).encode()),
    ],
}
_RESPONSE_BODY = {"type": "http.response.body", "body": _BODY}


async def asgi(
    scope: dict[str, t.Any],
    receive: t.Callable[[], t.Awaitable[dict[str, t.Any]]],
    send: t.Callable[[dict[str, t.Any]], t.Awaitable[None]],
) -> None:
    if scope["type"] == "http":
        await send(_START)
        await send(_RESPONSE_BODY)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
