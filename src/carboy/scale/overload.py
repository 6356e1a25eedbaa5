"""A per-worker concurrency limit: past it, a request gets 503 with ``Retry-After`` at once.

Flask has no such limit and neither has carboy by default: a worker takes what its server
gives it, and what it cannot start yet waits in a queue (the server's, or under ASGI carboy's
thread pool) with no bound but the client's patience. With a limit, the excess is refused in
microseconds instead, so a load balancer or client can retry elsewhere while the worker stays
responsive for the requests it admitted::

    from carboy.scale.overload import Overload

    app.config["MAX_CONCURRENT_REQUESTS"] = 8
    Overload(app)

A request counts from when the worker receives it until its response starts (its status and
headers are sent): the view, its hooks and the session. A streamed body (SSE, a long
download) stops counting once its headers are out, so long-lived streams do not hold places.
WebSockets are not counted (a connection lives long; limit them where they are accepted).
The health URLs (``HEALTH_LIVE_PATH``, ``HEALTH_READY_PATH``, ``HEALTH_DRAIN_PATH``) are
never refused: a load balancer that saw 503 from ``/readyz`` in a burst would take a busy but
healthy host out and push its load onto the others.

It is WSGI and ASGI middleware, installed the way Flask documents middleware
(``app.wsgi_app`` wrapped) and its ASGI twin (``app.asgi_app`` wrapped). When the process
turns out to be served over ASGI, the WSGI wrapper steps aside on the first ASGI call, so
``async def`` views keep running on the event loop. The wrapped ``asgi_app`` means ASGI
requests no longer take carboy's bare path (about 1 µs each).

Config keys: ``MAX_CONCURRENT_REQUESTS`` (``None``: off) and ``OVERLOAD_RETRY_AFTER``
(seconds, ``1``).

.. versionadded:: 0.1
"""

from __future__ import annotations

import threading
import typing as t

from ..asgi import scope_path

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..app import Carboy
    from ..asgi import Message, Receive, Scope, Send

__all__ = ["EXTENSION_KEY", "Overload"]

#: The key of the app's limit in ``app.extensions``.
EXTENSION_KEY = "carboy.overload"
_BODY = b"Service Unavailable: this worker is at its limit of concurrent requests; retry.\n"


class Overload:
    """Refuse requests past a per-worker concurrency limit with 503 and ``Retry-After``.

    :param app: the app to register with now, or ``None`` to call :meth:`init_app` later.
    :param limit: requests in progress allowed per worker process (``int >= 1``); ``None``
        reads ``MAX_CONCURRENT_REQUESTS`` (``None`` there: no limit, nothing installed).
    :param retry_after: the ``Retry-After`` value, seconds; ``None`` reads
        ``OVERLOAD_RETRY_AFTER`` (default 1).
    :param exempt: more paths (below the script root) that are never refused.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Carboy | None = None,
        *,
        limit: int | None = None,
        retry_after: int | None = None,
        exempt: t.Iterable[str] = (),
    ) -> None:
        self._limit = limit
        self._retry_after = retry_after
        self._exempt = frozenset(exempt)
        #: The requests in progress in this process (those counted).
        self.in_flight = 0
        #: The requests refused in this process.
        self.refused = 0
        #: The limit in force, or ``None`` when off.
        self.limit: int | None = None
        self._lock = threading.Lock()
        self._headers: list[tuple[str, str]] = []
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self.exempt: frozenset[str] = frozenset()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Carboy) -> None:
        """Read the config and, when a limit is set, wrap ``app.wsgi_app`` and
        ``app.asgi_app``.

        :raises ValueError: a limit that is not a positive integer, or a negative
            ``Retry-After``.
        """
        config = app.config
        config.setdefault("MAX_CONCURRENT_REQUESTS", None)
        config.setdefault("OVERLOAD_RETRY_AFTER", 1)
        limit = self._limit if self._limit is not None else config["MAX_CONCURRENT_REQUESTS"]
        if limit is None:
            return
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"MAX_CONCURRENT_REQUESTS must be a positive integer, not {limit!r}.")
        retry = (
            self._retry_after if self._retry_after is not None else config["OVERLOAD_RETRY_AFTER"]
        )
        if int(retry) < 0:
            raise ValueError("OVERLOAD_RETRY_AFTER must be >= 0.")
        self.limit = limit
        health = (
            config.get("HEALTH_LIVE_PATH", "/livez"),
            config.get("HEALTH_READY_PATH", "/readyz"),
            config.get("HEALTH_DRAIN_PATH", "/drainz"),
        )
        self.exempt = self._exempt | {p for p in health if p}
        self._headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(_BODY))),
            ("Retry-After", str(int(retry))),
        ]
        self._raw_headers = [(k.lower().encode(), v.encode()) for k, v in self._headers]
        app.extensions[EXTENSION_KEY] = self
        wsgi = _WSGIGate(self, app.wsgi_app)
        app.wsgi_app = wsgi  # type: ignore[method-assign]
        app.asgi_app = _ASGIGate(self, app.asgi_app, app, wsgi)  # type: ignore[method-assign]

    def _enter(self) -> bool:
        with self._lock:
            if self.in_flight >= t.cast(int, self.limit):
                self.refused += 1
                return False
            self.in_flight += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _WSGIGate:
    """``app.wsgi_app`` behind the limit."""

    def __init__(self, gate: Overload, inner: WSGIApplication) -> None:
        self.gate = gate
        self.inner = inner

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> t.Iterable[bytes]:
        gate = self.gate
        if "asgi.scope" in environ or environ.get("PATH_INFO") in gate.exempt:
            return self.inner(environ, start_response)  # counted by the ASGI gate, or exempt
        if not gate._enter():
            start_response("503 Service Unavailable", list(gate._headers))
            return [_BODY]
        try:
            return self.inner(environ, start_response)
        finally:
            gate._leave()


class _ASGIGate:
    """``app.asgi_app`` behind the limit."""

    def __init__(
        self,
        gate: Overload,
        inner: t.Callable[[Scope, Receive, Send], t.Awaitable[None]],
        app: Carboy,
        wsgi: _WSGIGate,
    ) -> None:
        self.gate = gate
        self.inner = inner
        self._app: Carboy | None = app
        self._wsgi = wsgi

    def _step_aside(self, app: Carboy) -> None:
        """Served over ASGI: take the WSGI gate out of ``app.wsgi_app`` if it is still the
        outermost wrapper, so requests go on taking the native ASGI path."""
        self._app = None
        if app.__dict__.get("wsgi_app") is not self._wsgi:
            return
        inner = self._wsgi.inner
        if getattr(inner, "__self__", None) is app and getattr(inner, "__func__", None) is getattr(
            type(app), "wsgi_app", None
        ):
            del app.__dict__["wsgi_app"]
        else:
            app.wsgi_app = inner  # type: ignore[method-assign]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is not None:
            self._step_aside(self._app)
        gate = self.gate
        if scope["type"] != "http" or scope_path(scope) in gate.exempt:
            await self.inner(scope, receive, send)
            return
        if not gate._enter():
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": list(gate._raw_headers),
                }
            )
            await send({"type": "http.response.body", "body": _BODY})
            return
        counted = True

        async def started(message: Message) -> None:
            nonlocal counted
            if counted and message["type"] == "http.response.start":
                counted = False
                gate._leave()
            await send(message)

        try:
            await self.inner(scope, receive, started)
        finally:
            if counted:
                gate._leave()
