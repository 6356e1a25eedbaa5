"""Talking to an app's WebSocket routes from a test: what :meth:`CarboyClient.websocket` returns.

A :class:`WebsocketTestSession` plays the server and the client at once: it runs
``await app(scope, receive, send)`` for a ``websocket`` scope on an event loop of its own, in a
background thread, and gives the test a blocking API (:meth:`~WebsocketTestSession.send`,
:meth:`~WebsocketTestSession.receive`, ...) over two thread-safe queues. Every wait is bounded
by a timeout, so an app that never answers fails the test instead of hanging it::

    with client.websocket("/ws/echo") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import queue
import threading
import typing as t
from types import TracebackType

from werkzeug.datastructures import Headers

from .websocket import WebSocketDisconnect

if t.TYPE_CHECKING:
    from .app import Carboy

__all__ = ["WebsocketRejected", "WebsocketTestSession"]

#: Seconds a session waits for the app by default (for a message, or for it to finish).
DEFAULT_TIMEOUT = 10.0


class WebsocketRejected(Exception):
    """The app refused the WebSocket handshake.

    Raised by ``with client.websocket(...)`` when the app answers the handshake with an HTTP
    response (the ASGI ``websocket.http.response`` extension) or closes before accepting.

    :param status_code: the response's status; 403 for a close before accepting, which is
        what servers answer then.
    :param headers: the response's headers (empty for a close).
    :param body: the response's body (empty for a close).

    .. versionadded:: 0.1
    """

    def __init__(self, status_code: int, headers: Headers, body: bytes) -> None:
        super().__init__(f"The WebSocket handshake was rejected with status {status_code}.")
        #: The HTTP status of the rejection.
        self.status_code = status_code
        #: The rejection's headers.
        self.headers = headers
        #: The rejection's body.
        self.body = body


class _AppFinished:
    """Put on the outgoing queue when the app's coroutine has ended."""


_FINISHED = _AppFinished()


def _headers(raw: t.Iterable[tuple[bytes, bytes]] | None) -> Headers:
    return Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw or ()])


class WebsocketTestSession:
    """One WebSocket connection to *app*, driven from a test; use it as a context manager.

    Entering sends ``websocket.connect`` and waits for the app's answer: the session is
    returned once the app accepts, :class:`WebsocketRejected` is raised when it refuses.
    Leaving disconnects (code 1000) if the connection is still open, waits for the app to
    finish and raises the exception the app propagated, if any.

    :param app: the application (any ASGI 3 callable works).
    :param scope: the ASGI ``websocket`` scope of the connection; see
        :func:`carboy.asgi_testing.environ_scope`. It is used as given, apart from the
        extension added by *http_response*.
    :param timeout: seconds (float) to wait for a message from the app, or for it to finish,
        before raising :class:`TimeoutError`.
    :param http_response: advertise the ASGI ``websocket.http.response`` extension, so a
        rejection carries the app's status, headers and body. Without it the app rejects with
        a close, which arrives as a bare 403.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Carboy | t.Callable[..., t.Awaitable[None]],
        scope: dict[str, t.Any],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        http_response: bool = True,
    ) -> None:
        if http_response:
            extensions = scope.setdefault("extensions", {})
            extensions.setdefault("websocket.http.response", {})
        self.app = app
        #: The ASGI scope the app is called with.
        self.scope = scope
        self.timeout = timeout
        #: The subprotocol the app chose when accepting, or ``None``.
        self.accepted_subprotocol: str | None = None
        #: The headers the app added when accepting.
        self.accept_headers = Headers()
        #: Whether the connection is closed (by either side).
        self.closed = False
        self._outbox: queue.Queue[t.Any] = queue.Queue()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[dict[str, t.Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop_done = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._error_raised = False
        self._entered = False

    # -- the app's side, on the session's event loop ---------------------------------------

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # pragma: no cover - asyncio.run itself failing
            self._error = self._error or e
        finally:
            self._ready.set()
            self._outbox.put(_FINISHED)

    async def _main(self) -> None:
        inbox: asyncio.Queue[dict[str, t.Any]] = asyncio.Queue()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._inbox = inbox
            self._task = asyncio.current_task()
        self._ready.set()
        disconnect: dict[str, t.Any] | None = None

        async def receive() -> dict[str, t.Any]:
            nonlocal disconnect
            if disconnect is not None:
                # The client is gone: every later receive sees the disconnect again.
                return disconnect
            message = await inbox.get()
            if message["type"] == "websocket.disconnect":
                disconnect = message
            return message

        async def send(message: t.MutableMapping[str, t.Any]) -> None:
            reason = message.get("reason") or ""
            if message.get("type") == "websocket.close" and len(reason.encode()) > 123:
                # What a server's WebSocket library does with a close frame too long to send.
                raise RuntimeError(
                    f"A WebSocket close reason is at most 123 bytes, not {len(reason.encode())}."
                )
            self._outbox.put(dict(message))
            if message.get("type") == "websocket.close":
                # A client answers a close with its own, and servers then hand the app a
                # disconnect, so a handler waiting in receive() ends (as under uvicorn and
                # granian).
                inbox.put_nowait(
                    {
                        "type": "websocket.disconnect",
                        "code": message.get("code", 1000),
                        "reason": reason,
                    }
                )

        try:
            await self.app(self.scope, receive, send)
        except BaseException as e:
            self._error = e
        finally:
            with self._lock:
                self._loop_done = True

    def _post(self, message: dict[str, t.Any]) -> None:
        """Hand *message* to the app's ``receive``; dropped once the app has finished."""
        with self._lock:
            loop, inbox = self._loop, self._inbox
            if self._loop_done or loop is None or inbox is None:
                return
            loop.call_soon_threadsafe(inbox.put_nowait, message)

    def _next(self, timeout: float | None, waiting_for: str = "sent no WebSocket message") -> t.Any:
        wait = self.timeout if timeout is None else timeout
        try:
            return self._outbox.get(timeout=wait)
        except queue.Empty:
            raise TimeoutError(
                f"The app {waiting_for} within {wait} seconds (path {self.scope.get('path')!r})."
            ) from None

    def _finish(self) -> None:
        """Wait for the app to end; cancel it (and raise :class:`TimeoutError`) if it won't."""
        thread = self._thread
        if thread is None:
            return
        thread.join(self.timeout)
        if thread.is_alive():
            with self._lock:
                loop, task = self._loop, self._task
                if not self._loop_done and loop is not None and task is not None:
                    loop.call_soon_threadsafe(task.cancel)
            thread.join(self.timeout)
            raise TimeoutError(
                f"The WebSocket app did not finish within {self.timeout} seconds after the"
                f" connection closed (path {self.scope.get('path')!r}); it was cancelled."
            )

    # -- the test's side ---------------------------------------------------------------------

    def __enter__(self) -> WebsocketTestSession:
        if self._entered:
            raise RuntimeError("A WebsocketTestSession can only be entered once.")
        self._entered = True
        self._thread = threading.Thread(
            target=self._run_thread, name=f"carboy-websocket-test {self.scope.get('path')}"
        )
        self._thread.daemon = True
        self._thread.start()
        self._ready.wait(self.timeout)
        self._post({"type": "websocket.connect"})
        try:
            message = self._next(None, "did not answer the WebSocket handshake")
        except TimeoutError:
            self.closed = True
            self._post({"type": "websocket.disconnect", "code": 1006, "reason": ""})
            try:
                self._finish()
            except TimeoutError:
                pass  # cancelled; the handshake timeout is the error to report
            raise
        kind = message["type"] if isinstance(message, dict) else None
        if kind == "websocket.accept":
            self.accepted_subprotocol = message.get("subprotocol")
            self.accept_headers = _headers(message.get("headers"))
            return self
        self.closed = True
        if kind == "websocket.http.response.start":
            rejection = WebsocketRejected(
                message["status"], _headers(message.get("headers")), self._read_body()
            )
        elif kind == "websocket.close":
            rejection = WebsocketRejected(403, Headers(), b"")
        else:
            rejection = None
        self._finish()
        self._raise_error()
        if rejection is None:
            raise RuntimeError(
                f"The app answered the WebSocket handshake with {message!r} instead of"
                " 'websocket.accept', 'websocket.close' or 'websocket.http.response.start'."
            )
        raise rejection

    def _read_body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = self._next(None)
            if message is _FINISHED:
                break
            if message["type"] != "websocket.http.response.body":
                raise RuntimeError(f"Expected 'websocket.http.response.body', got {message!r}.")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.closed:
            self.closed = True
            self._post({"type": "websocket.disconnect", "code": 1000, "reason": ""})
        self._finish()
        if exc_value is None:
            self._raise_error()

    def _raise_error(self) -> None:
        """Raise the exception the app propagated, once (not again when leaving the block)."""
        error = self._error
        if error is not None and not self._error_raised:
            self._error_raised = True
            raise error

    def send(self, data: str | bytes) -> None:
        """Send *data* to the app: a text frame for ``str``, a binary frame for ``bytes``.

        :param data: the message.
        :raises TypeError: for other types.
        :raises RuntimeError: when the connection is closed.
        """
        if self.closed:
            raise RuntimeError("The WebSocket connection is closed.")
        if isinstance(data, str):
            self._post({"type": "websocket.receive", "text": data})
        elif isinstance(data, bytes | bytearray | memoryview):
            self._post({"type": "websocket.receive", "bytes": bytes(data)})
        else:
            raise TypeError(f"send takes str or bytes, not {type(data).__name__}.")

    def send_json(self, obj: t.Any) -> None:
        """Send *obj* as JSON (encoded with the app's JSON provider) in a text frame.

        :param obj: the data to send.
        :raises TypeError: when *obj* is not serializable.
        :raises RuntimeError: when the connection is closed.
        """
        self.send(self._json().dumps(obj))

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message from the app: ``str`` for a text frame, ``bytes`` for binary.

        :param timeout: seconds (float) to wait; the session's timeout when ``None``.
        :raises carboy.WebSocketDisconnect: when the app closes the connection (its code and
            reason), or has ended without closing (code 1000).
        :raises TimeoutError: when the app sends nothing in time.
        :raises Exception: the exception the app propagated, if it ended with one.
        """
        if self.closed:
            raise RuntimeError("The WebSocket connection is closed.")
        message = self._next(timeout)
        if message is _FINISHED:
            self.closed = True
            self._raise_error()
            raise WebSocketDisconnect(1000, "")
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                return t.cast(str, text)
            return t.cast(bytes, message.get("bytes") or b"")
        if kind == "websocket.close":
            self.closed = True
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason") or "")
        raise RuntimeError(f"Unexpected ASGI message from the app: {message!r}.")

    def receive_json(self, timeout: float | None = None) -> t.Any:
        """The next message from the app, decoded as JSON with the app's JSON provider.

        :param timeout: seconds (float) to wait; the session's timeout when ``None``.
        :raises ValueError: when the message is not valid JSON.
        :raises carboy.WebSocketDisconnect: when the app closes the connection.
        :raises TimeoutError: when the app sends nothing in time.
        """
        return self._json().loads(self.receive(timeout))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection from the client's side and wait for the app to finish.

        The app's next ``websocket.receive()`` raises :class:`carboy.WebSocketDisconnect`
        with *code*. Closing twice does nothing.

        :param code: the close code (int), 1000 for a normal close.
        :param reason: the close reason.
        :raises TimeoutError: when the app does not finish in time (it is then cancelled).
        """
        if self.closed:
            return
        self.closed = True
        self._post({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._finish()

    def _json(self) -> t.Any:
        provider = getattr(self.app, "json", None)
        if provider is None:
            import json

            return json
        return provider
