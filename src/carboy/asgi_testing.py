"""Driving an app's ASGI side from a WSGI environ: what :class:`carboy.testing.ASGIClient` uses.

:func:`environ_scope` is the inverse of ``carboy.asgi.scope_environ``; :class:`ASGIDriver`
is a WSGI callable that runs ``await app(scope, receive, send)`` on the calling thread's event
loop and hands back what the app sent. Through it, Werkzeug's test client (and every test
written for it) exercises the ASGI request path.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import typing as t

from .concurrency import _thread_loop

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .app import Carboy

#: Environ keys a test client sets that have no place in an ASGI scope; passed through the
#: scope's ``carboy.environ`` extension.
_PASSED_THROUGH = ("werkzeug.debug.preserve_context",)


def environ_scope(environ: WSGIEnvironment, kind: str = "http") -> dict[str, t.Any]:
    """An ASGI *kind* (``"http"`` or ``"websocket"``) scope for a WSGI *environ*."""
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key
        else:
            continue
        headers.append((name.replace("_", "-").lower().encode("latin-1"), value.encode("latin-1")))
    root = environ.get("SCRIPT_NAME", "")
    raw_path = (root + environ.get("PATH_INFO", "")).encode("latin-1")
    scheme = environ.get("wsgi.url_scheme", "http")
    if kind == "websocket":
        scheme = "wss" if scheme == "https" else "ws"
    scope: dict[str, t.Any] = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": environ.get("SERVER_PROTOCOL", "HTTP/1.1").partition("/")[2] or "1.1",
        "method": environ.get("REQUEST_METHOD", "GET"),
        "scheme": scheme,
        "path": raw_path.decode("utf-8", "replace"),
        "raw_path": raw_path,
        "root_path": root.encode("latin-1").decode("utf-8", "replace"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
        "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), int(environ.get("REMOTE_PORT") or 0)),
        "server": (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT") or 80)),
        "extensions": {"carboy.environ": {k: environ[k] for k in _PASSED_THROUGH if k in environ}},
    }
    return scope


def _read_body(environ: WSGIEnvironment) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        return t.cast(bytes, stream.read(int(length)))
    return t.cast(bytes, stream.read())


class ASGIDriver:
    """A WSGI callable that serves each request through *app*'s ASGI interface.

    The body is delivered in one ``http.request`` message; ``http.disconnect`` is delivered
    only once the response is complete. Exceptions the app propagates (as in testing mode)
    are raised to the caller.

    :param app: the application.
    """

    def __init__(self, app: Carboy) -> None:
        self.app = app

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        scope = environ_scope(environ)
        body = _read_body(environ)
        sent: list[t.MutableMapping[str, t.Any]] = []

        async def run() -> None:
            done = asyncio.Event()
            delivered = False

            async def receive() -> dict[str, t.Any]:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await done.wait()
                return {"type": "http.disconnect"}

            async def send(message: t.MutableMapping[str, t.Any]) -> None:
                sent.append(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    done.set()

            try:
                await self.app(scope, receive, send)
            finally:
                done.set()

        _thread_loop().run_until_complete(run())
        start = sent[0] if sent else None
        if start is None or start["type"] != "http.response.start":
            raise RuntimeError(f"The ASGI app sent no response start: {sent!r}")
        status = start["status"]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
        start_response(f"{status} {_reason(status)}", headers)
        return [m.get("body", b"") for m in sent[1:] if m["type"] == "http.response.body"]


def _reason(status: int) -> str:
    # ASGI carries only the code; Werkzeug's phrase is what its WSGI responses would carry.
    from werkzeug.http import HTTP_STATUS_CODES

    return HTTP_STATUS_CODES.get(status, "UNKNOWN")
