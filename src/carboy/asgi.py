"""The ASGI adapter: one HTTP request from ``(scope, receive, send)`` to a response sent back.

Flask's request object, hooks and error handling read a WSGI environ, so an HTTP scope becomes
an environ (headers decoded once, as a WSGI server would) and the rest of the request path is the
one WSGI uses. What differs is only where things run:

* an endpoint whose view or hooks are ``async def`` runs on the server's event loop
  (:meth:`carboy.Carboy.asgi_app`), its sync hooks in the app's thread pool;
* an endpoint that is all sync, or an app that overrides a dispatch step, runs Flask's sync
  path in one pool thread (:meth:`carboy.Carboy._handle`), reading the body as it arrives;
* a streamed body is stepped in the pool (sync iterator) or on the loop (async iterator) while
  a watcher listens for ``http.disconnect``; on disconnect the iterator is closed, so
  ``stream_with_context`` bodies run their teardown.

Body limits: ``MAX_CONTENT_LENGTH`` is checked against ``Content-Length`` before reading and
against the bytes received while reading; past it the rest is not read, and reading the body
raises 413 (so a routing error or a before-request answer comes first, as under WSGI).

Bodies read the same whatever the server's message sizes: a read of *n* bytes returns *n*
unless the body ends. A large form or JSON body received for an ``async def`` view is parsed
in the pool before the view runs (:func:`parse_ahead`).
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import os
import stat
import sys
import tempfile
import typing as t
import weakref

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wsgi import FileWrapper

from .concurrency import executor, run_sync, run_sync_in
from .ctx import RequestContext
from .wrappers import _FORM_TYPES, _Body, _Page

if t.TYPE_CHECKING:
    from .app import Carboy

Scope = t.MutableMapping[str, t.Any]
Message = t.MutableMapping[str, t.Any]
Receive = t.Callable[[], t.Awaitable[Message]]
Send = t.Callable[[Message], t.Awaitable[None]]

#: Bytes of a received body kept in memory; past this it spools to a temporary file.
SPOOL_MEMORY_SIZE = 1024 * 1024

# PERF: header name → environ key, computed once per distinct name (a dict hit per header
# instead of decode/upper/replace); bounded so hostile clients cannot grow it.
_ENVIRON_KEYS: dict[bytes, str] = {
    b"content-type": "CONTENT_TYPE",
    b"content-length": "CONTENT_LENGTH",
}
_ENVIRON_KEYS_MAX = 512


def _environ_key(name: bytes) -> str:
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < _ENVIRON_KEYS_MAX:
            _ENVIRON_KEYS[name] = key
    return key


_ENVIRON_TEMPLATE: dict[str, t.Any] = {
    "wsgi.version": (1, 0),
    "wsgi.input_terminated": True,
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": True,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
}
_SERVER_NAMES: dict[t.Any, tuple[str, str]] = {}


def _server_names(server: t.Any) -> tuple[str, str]:
    host, port = server if server else ("localhost", 80)
    names = (str(host), str(port) if port is not None else "")
    if server.__class__ is tuple and len(_SERVER_NAMES) < 64:
        _SERVER_NAMES[server] = names
    return names


class _EmptyInput:
    """``wsgi.input`` of a request without a body: reads give ``b""``. One instance is shared,
    since it holds no state."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> t.Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        pass


EMPTY_INPUT = _EmptyInput()


def scope_path(scope: Scope) -> str:
    """The path of *scope* below its ``root_path`` (decoded text, as ASGI gives it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :]
    return path


class ScopeRequestContext(RequestContext):
    """The request context of an ASGI ``http`` scope, whose WSGI environ is built on first use.

    Matching, dispatch and the short path read the few facts they need from the scope; the
    environ (and with it the :class:`~carboy.wrappers.Request`) is made when anything asks for
    ``ctx.environ``.

    :param app: the application.
    :param scope: the ASGI ``http`` scope.
    :param bare: true when the caller (:func:`carboy.bare.serve_asgi`) has found that the
        request has no body, no cookie and no ``Upgrade`` header.

    .. versionadded:: 0.1
    """

    #: The ``Host`` header's value (several joined by ``,``, as in the environ), or ``None``
    #: (and for a bare request, whose host :func:`carboy.bare.serve_asgi` has checked).
    host_header: bytes | None = None

    def __init__(self, app: Carboy, scope: Scope, bare: bool = False) -> None:
        # PERF: RequestContext.__init__ is not called: it would store an environ, and there is
        # none until asked for (~1.7 µs of an 11 µs ASGI hello); the ``environ`` property
        # builds it on first access. (A property, not ``__getattr__``: a class with
        # ``__getattr__`` loses CPython's specialised attribute loads on all its attributes.)
        # The rest is RequestContext's state for a new request.
        self.app = app
        self._environ: dict[str, t.Any] | None = None
        self._request = None
        self._session = None
        self._rule = None
        self._view_args = None
        self._routing_exception = None
        self._torn_down = False
        self._after_request_functions = []
        self._cv_tokens = []
        self._scope = scope
        #: The request method, upper case.
        self.method: str = scope.get("method", "GET")
        if bare:
            self.has_body = self.has_cookie = self.upgrade = False
        else:
            raw_headers = scope["headers"]
            headers = dict(raw_headers)
            self.host_header = headers.get(b"host")
            if len(headers) != len(raw_headers) and self.host_header is not None:
                self.host_header = b",".join(v for k, v in raw_headers if k == b"host")
            #: Whether the request announces a body (``Content-Length`` or
            #: ``Transfer-Encoding``).
            self.has_body = b"content-length" in headers or b"transfer-encoding" in headers
            #: Whether the request carries a ``Cookie`` header.
            self.has_cookie = b"cookie" in headers
            #: Whether the request asks for a protocol upgrade (Werkzeug matches WebSocket
            #: rules).
            self.upgrade = b"upgrade" in headers
        extensions = scope.get("extensions")
        if extensions and extensions.get("carboy.environ"):
            self.environ = scope_environ(scope)  # test clients pass environ-only values

    def copy(self) -> RequestContext:
        """A plain :class:`~carboy.ctx.RequestContext` for the same environ, request and
        session (for another thread)."""
        return RequestContext(self.app, self.environ, self.request, self._open_session())

    @property
    def environ(self) -> dict[str, t.Any]:
        """The WSGI environ of the request, built from the scope on first access."""
        environ = self._environ
        if environ is None:
            environ = self._environ = scope_environ(self._scope)
        return environ

    @environ.setter
    def environ(self, value: dict[str, t.Any]) -> None:
        self._environ = value


def request_facts(ctx: RequestContext) -> tuple[str, bool, bool]:
    """``(method, has_body, has_cookie)`` of *ctx*'s request, read without building an
    environ when *ctx* is a :class:`ScopeRequestContext` whose environ nobody asked for."""
    if isinstance(ctx, ScopeRequestContext):
        return ctx.method, ctx.has_body, ctx.has_cookie
    environ = ctx.environ
    has_body = "CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ
    return environ["REQUEST_METHOD"], has_body, "HTTP_COOKIE" in environ


def scope_environ(scope: Scope, body: t.Any = EMPTY_INPUT) -> dict[str, t.Any]:
    """A WSGI environ for an ASGI ``http`` or ``websocket`` *scope*.

    :param scope: the ASGI connection scope.
    :param body: the file-like object to expose as ``wsgi.input``; an empty stream by default.
    :returns: the environ, with the scope under ``"asgi.scope"``.
    """
    path = scope_path(scope)
    root: str = scope.get("root_path", "")
    if root and not root.isascii():
        root = root.encode("utf-8").decode("latin-1")
    if not path.isascii():
        path = path.encode("utf-8").decode("latin-1")
    kind = scope["type"]
    # PERF: the entries that never change come from one template copied in C; the server
    # address is converted once per distinct address.
    environ = _ENVIRON_TEMPLATE.copy()
    environ["REQUEST_METHOD"] = scope.get("method", "GET")
    environ["SCRIPT_NAME"] = root
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = scope["query_string"].decode("latin-1")
    server = scope.get("server")
    names = _SERVER_NAMES.get(server) if server.__class__ is tuple else None
    if names is None:
        names = _server_names(server)
    environ["SERVER_NAME"], environ["SERVER_PORT"] = names
    version = scope.get("http_version", "1.1")
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if version == "1.1" else "HTTP/" + version
    environ["wsgi.url_scheme"] = scope.get("scheme") or ("ws" if kind == "websocket" else "http")
    environ["wsgi.input"] = body
    environ["asgi.scope"] = scope
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    keys = _ENVIRON_KEYS
    for name, value in scope["headers"]:
        key = keys.get(name) or _environ_key(name)
        text = value.decode("latin-1")
        if key in environ:
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + text
        environ[key] = text
    if kind == "websocket":
        environ.setdefault("HTTP_UPGRADE", "websocket")
        environ.setdefault("HTTP_CONNECTION", "Upgrade")
    extra = scope.get("extensions")
    if extra and "carboy.environ" in extra:
        # Test clients pass environ-only values (preserve_context hooks) this way.
        environ.update(extra["carboy.environ"])
    return environ


def _has_body(environ: dict[str, t.Any]) -> bool:
    length = environ.get("CONTENT_LENGTH")
    if length is not None:
        return length.strip() not in ("", "0")
    return "HTTP_TRANSFER_ENCODING" in environ


def _declared_too_large(environ: dict[str, t.Any], limit: int | None) -> bool:
    if limit is None:
        return False
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) > limit
    except ValueError:
        return False  # Werkzeug answers the malformed header when the body is read


class _RefusedBody(io.RawIOBase):
    """``wsgi.input`` of a received body that passed ``MAX_CONTENT_LENGTH``: reading it
    raises :class:`~werkzeug.exceptions.RequestEntityTooLarge` (413)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: t.Any) -> int:
        raise RequestEntityTooLarge()


async def read_body(app: Carboy, environ: dict[str, t.Any], receive: Receive) -> int:
    """Receive the whole body into ``wsgi.input`` (memory, then a temporary file), so Flask's
    sync body API works in ``async def`` views.

    When ``Content-Length`` or the bytes received pass ``MAX_CONTENT_LENGTH``, the rest of
    the body is not read, and reading ``wsgi.input`` raises
    :class:`~werkzeug.exceptions.RequestEntityTooLarge` (413): as under WSGI, the 413 comes
    when something reads the body, after a routing error (404, 405) or a before-request
    function's answer.

    :returns: the body's size in bytes (0 for a refused body).
    :raises werkzeug.exceptions.ClientDisconnected: (400) when the client goes away mid-body.
    """
    if not _has_body(environ):
        return 0
    chunks: list[bytes] = []
    disk: t.Any = None  # a temporary file once the body passes SPOOL_MEMORY_SIZE
    size = 0
    try:
        async for chunk in iter_receive(receive, environ, app.config["MAX_CONTENT_LENGTH"]):
            size += len(chunk)
            if disk is None and size > SPOOL_MEMORY_SIZE:
                # On disk from here on, written from the pool: the loop never waits on a disk.
                disk = await run_sync_in(contextvars.copy_context(), app, tempfile.TemporaryFile)
                chunks.append(chunk)
                chunk = b"".join(chunks)
                chunks.clear()
            if disk is not None:
                await run_sync_in(contextvars.copy_context(), app, disk.write, chunk)
            else:
                chunks.append(chunk)
    except RequestEntityTooLarge:
        if disk is not None:
            disk.close()
        environ["wsgi.input"] = _RefusedBody()
        return 0
    except BaseException:
        if disk is not None:
            disk.close()
        raise
    if disk is not None:
        disk.seek(0)
        environ["wsgi.input"] = disk
    else:
        environ["wsgi.input"] = io.BytesIO(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    environ["CONTENT_LENGTH"] = str(size)
    return size


#: A received form body larger than this (bytes) is parsed in the pool before an ``async def``
#: view runs. Werkzeug parses a multipart form at about 15 µs a part (a 16 KiB form of small
#: fields holds the loop ~2.5 ms), against ~50 µs for a trip to the pool.
FORM_IN_POOL_SIZE = 16 * 1024
#: Likewise for a JSON body; :func:`json.loads` reads ~100 MB/s (256 KiB: ~2 ms).
JSON_IN_POOL_SIZE = 256 * 1024


async def parse_ahead(app: Carboy, ctx: RequestContext, size: int) -> None:
    """Parse a large received form or JSON body of *size* bytes in the pool, so that
    ``request.form``, ``request.files`` and ``request.get_json()`` (sync calls, made on the
    event loop by an ``async def`` view) find it parsed instead of parsing on the loop.

    What the parse raises (413 for too many parts, 400 for a bad body) is raised when the
    view asks, as when parsing there; a view that reads the body otherwise (``request.data``,
    ``request.stream``) gets it whole and the parse is not used.
    """
    request = ctx.request
    mimetype = request.mimetype
    if (size > FORM_IN_POOL_SIZE and mimetype in _FORM_TYPES) or (
        size > JSON_IN_POOL_SIZE and request.is_json
    ):
        ahead = getattr(request, "_parse_ahead", None)
        if ahead is not None:  # not for a request class that is not carboy's
            await run_sync(app, ahead)


async def _await(receive: Receive) -> Message:
    return await receive()


class ReceiveStream(io.RawIOBase):
    """``wsgi.input`` for code in a pool thread: reads block the thread (not the event loop)
    while ``receive()`` runs on the loop.

    Like a WSGI server's input, ``read(n)`` returns *n* bytes unless the body ends first,
    whatever sizes the server's ``http.request`` messages have: Werkzeug's multipart parser
    gives different answers for differently cut input (a field ``abc`` read as ``abc\r``
    when a message ended inside the closing delimiter).

    :param receive: the ASGI receive callable.
    :param loop: the server's event loop.
    :param limit: most bytes to read (``MAX_CONTENT_LENGTH``), or ``None``; past it a read
        raises :class:`~werkzeug.exceptions.RequestEntityTooLarge` (413).
    """

    def __init__(
        self, receive: Receive, loop: asyncio.AbstractEventLoop, limit: int | None = None
    ) -> None:
        self._receive = receive
        self._loop = loop
        self._limit = limit
        self._received = 0
        # The message being read, and how much of it has been read.
        self._pending = memoryview(b"")
        self._offset = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        if asyncio._get_running_loop() is self._loop:
            raise RuntimeError(
                "The request body is read as it arrives for this view; from 'async def' code,"
                " use 'async for chunk in request.iter_body()'."
            )
        # FIX (test_servers): granian's receive() returns an awaitable that is not a coroutine
        # object, which run_coroutine_threadsafe rejects (TypeError); await it in one.
        pending = asyncio.run_coroutine_threadsafe(_await(self._receive), self._loop)
        message: Message = pending.result()
        if message["type"] == "http.disconnect":
            self._done = True
            raise ClientDisconnected()
        if not message.get("more_body", False):
            self._done = True
        chunk = t.cast(bytes, message.get("body", b""))
        self._received += len(chunk)
        if self._limit is not None and self._received > self._limit:
            self._done = True
            raise RequestEntityTooLarge()
        return chunk

    def readinto(self, buffer: t.Any) -> int:
        out = memoryview(buffer).cast("B")
        wanted = len(out)
        filled = 0
        while filled < wanted:
            pending = self._pending
            offset = self._offset
            if offset == len(pending):
                if self._done:
                    break
                self._pending = memoryview(self._next_chunk())
                self._offset = 0
                continue
            n = min(wanted - filled, len(pending) - offset)
            out[filled : filled + n] = pending[offset : offset + n]
            self._offset = offset + n
            filled += n
        return filled


async def iter_receive(
    receive: Receive, environ: dict[str, t.Any], limit: int | None
) -> t.AsyncIterator[bytes]:
    """Yield body chunks from *receive* as they arrive, enforcing *limit* (bytes).

    :raises werkzeug.exceptions.RequestEntityTooLarge: past *limit*.
    :raises werkzeug.exceptions.ClientDisconnected: when the client goes away.
    """
    if not _has_body(environ):
        return
    if _declared_too_large(environ, limit):
        raise RequestEntityTooLarge()
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise RequestEntityTooLarge()
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


# -- sending the response -----------------------------------------------------------------------


def _raw_headers(headers: t.Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def call_wsgi(
    app: Carboy,
    wsgi: t.Callable[..., t.Iterable[bytes]],
    environ: dict[str, t.Any],
    context: contextvars.Context,
    receive: Receive,
    send: Send,
) -> None:
    """Serve the request through the WSGI callable *wsgi* (the app's wrapped ``wsgi_app``) in
    the pool, so WSGI middleware applied to the app keeps working under ASGI."""
    started: list[t.Any] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Any:
        if exc_info is not None and started and started[0] is True:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        return _no_write

    app_iter = await run_sync_in(context, app, wsgi, environ, start_response)
    try:
        if isinstance(app_iter, list | tuple):
            status, headers = started
            await send(_start(status, headers))
            await send({"type": "http.response.body", "body": b"".join(app_iter)})
            return
        loop = asyncio.get_running_loop()
        iterator = iter(app_iter)
        first = await loop.run_in_executor(executor(app), context.run, _step, iterator)
        status, headers = started
        await send(_start(status, headers))
        if first is not _DONE:
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            await _stream(app, iterator, context, receive, send, close=False)
        else:
            await send({"type": "http.response.body", "body": b""})
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            await run_sync_in(context, app, close)


def _no_write(data: bytes) -> None:
    raise RuntimeError("carboy does not support the WSGI write() callable under ASGI.")


def _start(status: str, headers: t.Iterable[tuple[str, str]]) -> Message:
    return {
        "type": "http.response.start",
        "status": int(status.split(" ", 1)[0]),
        "headers": _raw_headers(headers),
    }


async def _asgi_signature(scope: Scope, receive: Receive, send: Send) -> None:
    """The signature servers read; never called."""


class AsgiCall:
    """``app.__call__`` as read from an app instance.

    :meth:`carboy.Carboy.__call__` is a plain function, since WSGI servers call it
    synchronously. uvicorn (``asyncio.iscoroutinefunction``) and hypercorn
    (``inspect.iscoroutinefunction``) read ``app.__call__`` to choose ASGI 3; the app stores an
    instance of this class under that name, which reads as an ``async def`` of
    ``(scope, receive, send)`` to both, while ``app(...)`` still goes to the class's method.
    This is the one place carboy adapts to that detection.
    """

    __slots__ = ("_app",)
    # A weak reference: a strong one would make every app part of a reference cycle, kept
    # alive until the garbage collector runs (Flask apps are freed at refcount zero).
    __name__ = "__call__"
    __code__ = _asgi_signature.__code__
    __defaults__ = None
    __kwdefaults__ = None
    _is_coroutine = getattr(asyncio.coroutines, "_is_coroutine", None)

    def __init__(self, app: t.Any) -> None:
        self._app = weakref.ref(app)

    def __call__(self, *args: t.Any) -> t.Any:
        app = self._app()
        return type(app).__call__(app, *args)


AsgiCall.__annotations__ = {}


# PERF: the header pairs of short-path answers, made once per content type and per length
# below 1 KiB (tuples of bytes cannot be edited, so every answer may share them). Building the
# pairs anew cost 1.2k instructions per ASGI hello; callgrind's cache-simulated estimate under
# granian drops by 3.2k cycles (of 175k) with them shared.
_type_headers: dict[str, tuple[bytes, bytes]] = {}
_length_headers: dict[int, tuple[bytes, bytes]] = {}


def short_start(body: bytes, content_type: str) -> Message:
    """The ``http.response.start`` message of carboy's short-path *body*: a 200 with content
    type and length. A new dict and header list each time: middleware may edit the messages
    it passes on."""
    type_header = _type_headers.get(content_type)
    if type_header is None:
        type_header = (b"content-type", content_type.encode("latin-1"))
        if len(_type_headers) < 64:  # a bound for apps that make up content types
            _type_headers[content_type] = type_header
    length = len(body)
    length_header = _length_headers.get(length)
    if length_header is None:
        length_header = (b"content-length", str(length).encode())
        if length < 1024:
            _length_headers[length] = length_header
    return {"type": "http.response.start", "status": 200, "headers": [type_header, length_header]}


async def send_response(
    app: Carboy,
    response: t.Any,
    environ: dict[str, t.Any],
    body_context: contextvars.Context,
    receive: Receive,
    send: Send,
) -> None:
    """Send *response* (a :class:`~werkzeug.wrappers.Response` or carboy's short-path body).

    A sequence body is sent in one message. An iterator body is sent chunk by chunk: a sync
    iterator is stepped in the pool inside *body_context* (where ``stream_with_context`` pushed
    its context), an async one on the loop; if the client disconnects, it is closed.
    """
    if response.__class__ is _Body:
        body, content_type = response
        await send(short_start(body, content_type))
        await send({"type": "http.response.body", "body": body})
        return
    if response.__class__ is _Page:
        await send(
            {
                "type": "http.response.start",
                "status": response.code,
                "headers": _raw_headers(response.headers),
            }
        )
        body = b"" if environ["REQUEST_METHOD"] == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})
        return
    source = getattr(response.response, "_carboy_async_source", None)
    if source is not None:
        await _send_async_body(app, response, environ, source, receive, send)
        return
    app_iter, status, headers = response.get_wsgi_response(environ)
    start = _start(status, headers)
    if response.is_sequence or isinstance(app_iter, list | tuple):
        # In memory: joining and sending on the loop is cheaper than any thread hop.
        try:
            chunks = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        await send(start)
        await send({"type": "http.response.body", "body": chunks})
        return
    if isinstance(app_iter, FileWrapper):
        await _send_file(app, app_iter, start, body_context, receive, send)
        return
    await _stream(app, app_iter, body_context, receive, send, start)


_DONE = object()
#: A file body's trip to the pool reads more than this many bytes, unless the file ends first.
FILE_BLOCK = 65536


def _step(iterator: t.Iterator[bytes]) -> t.Any:
    return next(iterator, _DONE)


class _FileBlocks:
    """Steps a :class:`~werkzeug.wsgi.FileWrapper` in blocks of just over :data:`FILE_BLOCK`
    bytes (Werkzeug reads 8 KiB at a time; at most twice that when a file's last read comes
    short). The step that reaches the end of the file closes it and says so, so that no trip
    to the pool is made only to find the end or to close."""

    def __init__(self) -> None:
        #: Whether the file has ended.
        self.ended = False
        #: Whether a read may wait for data to arrive (a pipe, a socket): decided on the first
        #: step, in the pool.
        self.may_wait: bool | None = None

    def __call__(self, wrapper: FileWrapper) -> t.Any:
        may_wait = self.may_wait
        if may_wait is None:
            may_wait = self.may_wait = _may_wait(wrapper.file)
        parts: list[bytes] = []
        size = 0
        full = wrapper.buffer_size
        while size <= 2 * FILE_BLOCK:
            chunk = next(wrapper, None)
            if chunk is None:
                self.ended = True
                wrapper.close()
                break
            parts.append(chunk)
            size += len(chunk)
            if len(chunk) < full:
                if may_wait:
                    break  # nothing more for now: send what there is
                # A short read of a file or buffer: its end is next, found in this same trip.
            elif size > FILE_BLOCK:
                break
        if not parts:
            return _DONE
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _may_wait(file: t.Any) -> bool:
    """Whether reading *file* may wait for more data to arrive: false for an in-memory buffer
    and a regular file, true for a pipe, a socket or anything unknown."""
    # A spooled file is either; asking it for its descriptor would write it to disk.
    if isinstance(file, io.BytesIO | tempfile.SpooledTemporaryFile):
        return False
    try:
        return not stat.S_ISREG(os.fstat(file.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return True


async def _send_file(
    app: Carboy,
    wrapper: FileWrapper,
    start: Message,
    body_context: contextvars.Context,
    receive: Receive,
    send: Send,
) -> None:
    """Send a file body. The first trip to the pool reads its first block; a file that ends
    there (closed in the same trip) is sent in one message, with no other trip and no watch
    for a disconnect; a longer one goes on through :func:`_stream`."""
    # PERF: a file (send_file, static files) is read just over 64 KiB per trip to the pool,
    # not in Werkzeug's 8 KiB blocks, one trip each: the benchmark's 64 KiB static file took
    # nine trips, a trip to close the file, and two tasks (862 µs in process); now one trip
    # (334 µs; under granian 1,751 -> 2,811 req/s).
    loop = asyncio.get_running_loop()
    pool = executor(app)
    blocks = _FileBlocks()
    future = loop.run_in_executor(pool, body_context.run, blocks, wrapper)
    try:
        first = await asyncio.shield(future)
    except BaseException:
        if not future.done():
            await asyncio.wait([future])
        if not blocks.ended:
            await loop.run_in_executor(pool, body_context.run, wrapper.close)
        raise
    if blocks.ended:
        await send(start)
        await send({"type": "http.response.body", "body": b"" if first is _DONE else first})
        return
    await _stream(app, wrapper, body_context, receive, send, start, blocks, first)


async def _stream(
    app: Carboy,
    app_iter: t.Iterable[bytes],
    body_context: contextvars.Context,
    receive: Receive,
    send: Send,
    start: Message | None = None,
    blocks: _FileBlocks | None = None,
    first: bytes | None = None,
    close: bool = True,
) -> None:
    """Send *start* (unless the caller has), then *app_iter*'s chunks, each stepped in the
    pool, then the final empty message; close *app_iter* (unless *close* is false) when done,
    when the client disconnects, or when a send fails.

    :param blocks: for a file body, the stepper :func:`_send_file` began with; *first* is
        the block it read.
    """
    iterator = iter(app_iter)
    step: t.Callable[[t.Any], t.Any] = _step if blocks is None else blocks
    loop = asyncio.get_running_loop()
    pool = executor(app)
    inflight: list[asyncio.Future[t.Any]] = []

    async def pump() -> None:
        if start is not None:
            await send(start)
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        while True:
            future = loop.run_in_executor(pool, body_context.run, step, iterator)
            inflight[:] = [future]
            chunk = await asyncio.shield(future)
            if chunk is _DONE:
                break
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if blocks is not None and blocks.ended:
                break
        await send({"type": "http.response.body", "body": b""})

    try:
        await _until_disconnect(pump(), receive)
    finally:
        # Wait for a step still running in the pool, then close the iterator in the same
        # context: generators run their ``finally`` blocks and ``stream_with_context`` pops.
        for future in inflight:
            if not future.done():
                await asyncio.wait([future])
        closer = getattr(app_iter, "close", None) if close else None
        if closer is not None and not (blocks is not None and blocks.ended):
            await loop.run_in_executor(pool, body_context.run, closer)


async def _send_async_body(
    app: Carboy,
    response: t.Any,
    environ: dict[str, t.Any],
    source: t.AsyncIterator[t.Any],
    receive: Receive,
    send: Send,
) -> None:
    headers = response.get_wsgi_headers(environ)
    code = response.status_code
    await send(
        {"type": "http.response.start", "status": code, "headers": _raw_headers(headers.items())}
    )
    charset = "utf-8"
    bodyless = environ["REQUEST_METHOD"] == "HEAD" or code in (204, 304) or code < 200

    async def pump() -> None:
        if not bodyless:
            async for chunk in source:
                if isinstance(chunk, str):
                    chunk = chunk.encode(charset)
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    try:
        await _until_disconnect(pump(), receive)
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
        response.close()


async def _until_disconnect(sending: t.Coroutine[t.Any, t.Any, None], receive: Receive) -> None:
    """Run *sending* until it ends or the client disconnects (then cancel it)."""
    sender = asyncio.ensure_future(sending)

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait([sender, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not sender.done():
            sender.cancel()
        watcher.cancel()
        await asyncio.gather(sender, watcher, return_exceptions=True)
    if not sender.cancelled():
        error = sender.exception()
        if error is not None and not isinstance(error, OSError):
            raise error
