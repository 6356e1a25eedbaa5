"""WebSocket routes under ASGI: the :data:`websocket` proxy and the connection's life.

A WebSocket connection gets a request context, as an HTTP request does, so ``session``, ``g``,
``current_app``, ``request.args`` and ``url_for`` work in the handler. Its life:

1. the URL is matched against the rules by Werkzeug's matcher (only rules made with
   ``websocket()`` match; an HTTP rule answers 400, no rule 404);
2. the ``url_value_preprocessors`` run, then the ``before_websocket`` functions (each: app,
   then enclosing blueprints); a ``before_websocket`` function that returns a value or aborts
   rejects the handshake with that response, e.g. 403;
3. the handler runs; ``websocket.accept()`` is called for it on its first send or receive;
   returning a response value before accepting rejects the handshake with it;
4. the socket closes: 1000 when the handler returns, 1011 (and the error logged) when it raises;
   an error before the handshake is answered rejects it with a 500 instead;
5. teardown functions run and the context pops.

A rejection is sent as an HTTP response when the server supports the ASGI
``websocket.http.response`` extension, else as a close before accepting (servers answer 403).
"""

from __future__ import annotations

import io
import json as _json
import sys
import typing as t

from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.local import LocalProxy

from .asgi import scope_environ
from .concurrency import ensure_async, run_sync
from .globals import _cv_request_get
from .wrappers import split_blueprint_path

if t.TYPE_CHECKING:
    from .app import Carboy
    from .asgi import Receive, Scope, Send
    from .ctx import RequestContext


class WebSocketDisconnect(Exception):
    """The client closed the connection (raised by :meth:`Websocket.receive`).

    A handler may let it propagate: the connection then ends quietly.

    :param code: the close code the client sent (1000 normal, 1001 going away, ...).
    :param reason: the close reason, possibly empty.

    .. versionadded:: 0.1
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Websocket:
    """One WebSocket connection, as :data:`carboy.websocket` inside a handler.

    :param scope: the ASGI ``websocket`` scope.
    :param receive: the ASGI receive callable.
    :param send: the ASGI send callable.

    .. versionadded:: 0.1
    """

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        #: Whether the handshake was accepted.
        self.accepted = False
        #: Whether the connection is closed (by either side).
        self.closed = False

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.scope.get("subprotocols") or ())

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: t.Mapping[str, str] | t.Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """Accept the handshake, optionally choosing *subprotocol* and adding *headers*.

        :raises RuntimeError: when already accepted or closed.
        """
        if self.accepted or self.closed:
            raise RuntimeError("The WebSocket handshake was already answered.")
        message: dict[str, t.Any] = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers:
            items = headers.items() if isinstance(headers, t.Mapping) else headers
            message["headers"] = [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in items
            ]
        await self._send(message)
        self.accepted = True

    async def receive(self) -> str | bytes:
        """The next message from the client: ``str`` for text frames, ``bytes`` for binary.

        :raises WebSocketDisconnect: when the client closes the connection.
        """
        if not self.accepted:
            await self.accept()
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self.closed = True
            raise WebSocketDisconnect(message.get("code", 1005), message.get("reason") or "")
        text = message.get("text")
        if text is not None:
            return t.cast(str, text)
        return t.cast(bytes, message.get("bytes") or b"")

    async def send(self, data: str | bytes) -> None:
        """Send *data*: a text frame for ``str``, a binary frame for ``bytes``.

        :raises TypeError: for other types.
        :raises RuntimeError: after the connection closed.
        """
        if not self.accepted:
            await self.accept()
        if self.closed:
            raise RuntimeError("The WebSocket connection is closed.")
        if isinstance(data, str):
            await self._send({"type": "websocket.send", "text": data})
        elif isinstance(data, bytes | bytearray | memoryview):
            await self._send({"type": "websocket.send", "bytes": bytes(data)})
        else:
            raise TypeError(f"websocket.send takes str or bytes, not {type(data).__name__}.")

    async def receive_json(self) -> t.Any:
        """The next message, decoded as JSON.

        :raises ValueError: when it is not valid JSON.
        :raises WebSocketDisconnect: when the client closes the connection.
        """
        data = await self.receive()
        return _json.loads(data)

    async def send_json(self, obj: t.Any) -> None:
        """Send *obj* encoded with the app's JSON provider, as a text frame."""
        ctx = _cv_request_get(None)
        text = ctx.app.json.dumps(obj) if ctx is not None else _json.dumps(obj)
        await self.send(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with *code* and *reason* (once; later calls do nothing).

        A close frame carries at most 123 bytes of reason, so a longer *reason* is cut to fit
        (servers fail on a longer one).
        """
        if self.closed:
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": _fit(reason)})

    async def _reject(self, response: t.Any) -> None:
        """Refuse the handshake with *response* (a response object)."""
        self.closed = True
        if "websocket.http.response" in (self.scope.get("extensions") or {}):
            headers = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.items()
            ]
            await self._send(
                {
                    "type": "websocket.http.response.start",
                    "status": response.status_code,
                    "headers": headers,
                }
            )
            await self._send({"type": "websocket.http.response.body", "body": response.get_data()})
        else:
            await self._send({"type": "websocket.close", "code": 1008, "reason": ""})


#: The most UTF-8 bytes a close frame's reason can hold (RFC 6455, section 5.5: a control
#: frame's payload is at most 125 bytes, 2 of which are the code).
_MAX_REASON = 123


def _fit(reason: str) -> str:
    """*reason*, cut to :data:`_MAX_REASON` UTF-8 bytes without splitting a character."""
    data = reason.encode("utf-8")
    if len(data) <= _MAX_REASON:
        return reason
    return data[:_MAX_REASON].decode("utf-8", "ignore")


def _get_websocket() -> Websocket:
    ctx = _cv_request_get(None)
    ws = getattr(ctx, "websocket", None)
    if ws is None:
        raise RuntimeError(
            "'websocket' is only available inside a WebSocket handler (a route made with"
            " @app.websocket), served by an ASGI server."
        )
    return t.cast(Websocket, ws)


#: The connection of the active WebSocket handler.
#:
#: .. versionadded:: 0.1
websocket: Websocket = LocalProxy(_get_websocket)  # type: ignore[assignment]


async def serve_websocket(app: Carboy, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ASGI ``websocket`` connection with *app*."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    ctx = app.request_context(scope_environ(scope, io.BytesIO()))
    _match(ctx)
    ws = Websocket(scope, receive, send)
    ctx.websocket = ws
    error: BaseException | None = None
    try:
        ctx.push()
        app._got_first_request = True
        try:
            rv = await _run(app, ctx)
            if rv is not None and not ws.accepted:
                await ws._reject(app.make_response(rv))
            elif not ws.closed:
                await ws.close(1000)
        except WebSocketDisconnect:
            pass
        except HTTPException as e:
            if ws.accepted:
                await ws.close(1008, e.description or "")
            else:
                handled = await run_sync(app, app.handle_user_exception, e)
                await ws._reject(app.make_response(handled))
        except Exception as e:
            error = e
            app.log_exception((type(e), e, e.__traceback__))  # type: ignore[arg-type]
            if not ws.accepted and not ws.closed:
                # Failed before the handshake was answered: refuse it with a 500.
                await ws._reject(InternalServerError().get_response())
            elif not ws.closed:
                # 1011: the server hit an unexpected condition (RFC 6455, section 7.4.1).
                await ws.close(1011, "internal error")
    except BaseException:
        error = sys.exc_info()[1]
        raise
    finally:
        if error is not None and app.should_ignore_error(error):
            error = None
        try:
            await run_sync(app, ctx._teardown, error)
        finally:
            # Pop even when a teardown function raised, so the app context's teardown runs
            # too; the request's teardown functions are not run a second time.
            ctx._torn_down = True
            ctx.pop(error)


def _match(ctx: RequestContext) -> None:
    """Match the handshake's URL with Werkzeug's matcher, which tells WebSocket rules from HTTP
    ones (the app's fast router does not), before the context is pushed."""
    adapter = ctx.url_adapter  # records the routing exception of an untrusted host
    if adapter is None:
        return
    try:
        rule, args = adapter.match(return_rule=True)
    except HTTPException as e:
        # An HTTP-only rule at this URL gives WebsocketMismatch (400).
        ctx._set_routing_exception(e)
    else:
        ctx._set_match(rule, t.cast(dict[str, t.Any], args))


async def _run(app: Carboy, ctx: RequestContext) -> t.Any:
    if ctx._routing_exception is not None:
        raise ctx._routing_exception
    request = ctx.request
    endpoint = request.endpoint
    scopes: list[str | None] = [None]
    if endpoint is not None and "." in endpoint:
        scopes.extend(reversed(split_blueprint_path(endpoint.rpartition(".")[0])))
    # As for HTTP requests: the URL value preprocessors (app, then enclosing blueprints) may
    # take values out of the view arguments before the hooks and the handler see them.
    view_args = request.view_args
    for name in scopes:
        for preprocess in app.url_value_preprocessors.get(name, ()):
            preprocess(endpoint, view_args)
    for name in scopes:
        for func in app.before_websocket_funcs.get(name, ()):
            rv = await ensure_async(app, func)()
            if rv is not None:
                return rv
    handler: t.Any = app.view_functions[endpoint]  # type: ignore[index]
    return await handler(**(request.view_args or {}))
