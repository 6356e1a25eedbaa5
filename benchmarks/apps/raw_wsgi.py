"""The ceiling for WSGI: an app that does nothing but answer ``Hello, World!``.

It reads neither path nor method, so it serves only the hello scenario.
"""

from __future__ import annotations

import typing as t

from .common import HELLO

SCENARIOS = ("hello",)

_BODY = HELLO.encode()
_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(_BODY)))]


def wsgi(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
    start_response("200 OK", _HEADERS)
    return [_BODY]
