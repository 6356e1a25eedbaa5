"""Serving a broadcast channel to browsers: Server-Sent Events and WebSockets.

Both helpers subscribe before the client sees anything (the SSE stream's first bytes, the
WebSocket's accept), so a client that sees the stream open receives every message published
from then on; both take the client's last message id to resume from (SSE sends it as
``Last-Event-ID`` on every reconnect, to whichever worker or host answers).

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import typing as t

from .broadcast import Gap, Message, SlowConsumer, Subscription

if t.TYPE_CHECKING:
    from ..wrappers import Response
    from .broadcast import Broadcast

__all__ = ["format_event", "serve_websocket", "sse_response"]

logger = logging.getLogger("carboy.scale.broadcast")

#: The most queued messages the SSE helper writes in one chunk.
SSE_BATCH = 256


def format_event(message: Message, event: str | None = None) -> str:
    """*message* as one Server-Sent Event: its ``id:``, an optional ``event:`` name, and one
    ``data:`` line per line of its data (bytes are decoded as UTF-8, bad bytes replaced).

    .. versionadded:: 0.1
    """
    data = message.data
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    head = f"id: {message.id}\n" if event is None else f"id: {message.id}\nevent: {event}\n"
    if "\n" not in data and "\r" not in data:
        return f"{head}data: {data}\n\n"
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return head + "".join(f"data: {line}\n" for line in lines) + "\n"


def _gap_event(gap: Gap) -> str:
    return f"event: gap\ndata: {json.dumps(gap.as_dict(), separators=(',', ':'))}\n\n"


def sse_response(
    broadcast: Broadcast,
    channel: str,
    last_id: t.Any = ...,
    *,
    retry: int | None = None,
    heartbeat: float | None = None,
    event: str | None = None,
    queue_size: int | None = None,
    overflow: str | None = None,
    gap_events: bool = True,
    headers: t.Mapping[str, str] | None = None,
) -> Response:
    """A ``text/event-stream`` response that streams *channel* until the client leaves.

    Call it in a view (sync or ``async def``), under ASGI (the stream runs on the event loop)
    or WSGI (it holds the worker thread; each thread reads the channel itself). The stream:

    * starts with a ``retry:`` hint (milliseconds the browser waits before reconnecting);
    * sends each message as an event with its ``id:`` (see :func:`format_event`);
    * sends a comment line (``:``) after *heartbeat* seconds without a message, which keeps
      proxies from closing an idle stream and finds a client that left;
    * sends ``event: gap`` with the :class:`~carboy.scale.broadcast.Gap` as JSON data when
      messages were missed (unless *gap_events* is false; ``EventSource.onmessage`` does not
      see named events, so listen with ``addEventListener("gap", ...)``);
    * ends when :meth:`~carboy.scale.broadcast.Broadcast.close_all` drains the worker, or
      when the client is too slow (``BROADCAST_SLOW_CONSUMER``: ``"close"``): the browser
      reconnects with ``Last-Event-ID`` and resumes without a gap on the streams backend;
    * ends at once, with a comment, if the backend cannot be reached (the browser retries).

    :param broadcast: the broadcast.
    :param channel: the channel's name.
    :param last_id: resume after this message id; by default the request's
        ``Last-Event-ID`` header (or a ``last_event_id`` query argument, for clients that
        cannot set headers). An invalid id is ignored.
    :param retry: the ``retry:`` hint in milliseconds; default ``BROADCAST_SSE_RETRY``.
    :param heartbeat: seconds between heartbeats; default ``BROADCAST_SSE_HEARTBEAT``.
    :param event: an ``event:`` name for every message (default: none, so ``onmessage``).
    :param queue_size: this stream's queue bound; default ``BROADCAST_QUEUE_SIZE``.
    :param overflow: ``"close"`` or ``"drop_oldest"``; default ``BROADCAST_SLOW_CONSUMER``.
    :param gap_events: send ``event: gap`` events.
    :param headers: extra response headers.
    :raises RuntimeError: outside a request.

    .. versionadded:: 0.1
    """
    from ..globals import current_app, request

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    config = app.config
    if last_id is ...:
        last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    retry_ms = int(config["BROADCAST_SSE_RETRY"] if retry is None else retry)
    beat = float(config["BROADCAST_SSE_HEARTBEAT"] if heartbeat is None else heartbeat)
    sub = broadcast.subscribe(channel, last_id, queue_size=queue_size, overflow=overflow)

    async def stream() -> t.AsyncIterator[str]:
        try:
            try:
                await sub.start()
            except Exception as e:
                logger.warning("SSE stream of %r could not subscribe: %s", channel, e)
                yield f"retry: {retry_ms}\n: unavailable\n\n"
                return
            yield f"retry: {retry_ms}\n\n"
            while True:
                try:
                    item = await sub.get(beat, gaps=True)
                except StopAsyncIteration:
                    yield ": end\n\n"  # drained (or closed): the browser reconnects elsewhere
                    return
                except SlowConsumer:
                    return  # the browser reconnects with Last-Event-ID
                except Exception as e:  # the history of a resume could not be read
                    logger.warning("SSE stream of %r ends: %s", channel, e)
                    return
                if item is None:
                    yield ":\n\n"
                elif isinstance(item, Gap):
                    if gap_events:
                        yield _gap_event(item)
                else:
                    chunk = format_event(item, event)
                    more = sub.ready(SSE_BATCH)
                    if more:
                        chunk += "".join([format_event(m, event) for m in more])
                    yield chunk
        finally:
            await sub.aclose()

    response_headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        **(headers or {}),
    }
    return t.cast("Response", app.make_response((stream(), 200, response_headers)))


async def serve_websocket(
    broadcast: Broadcast,
    channel: str,
    last_id: str | None = None,
    *,
    encode: t.Callable[[Message], str | bytes] | None = None,
    on_message: t.Callable[[str | bytes], t.Any] | None = None,
    on_gap: t.Callable[[Gap], t.Any] | None = None,
    queue_size: int | None = None,
    overflow: str | None = None,
    slow_code: int | None = None,
    close_timeout: float | None = None,
    subprotocol: str | None = None,
    on_open: t.Callable[[Subscription], t.Any] | None = None,
) -> str:
    """Forward *channel* to the current WebSocket (call it in an ``@app.websocket`` handler)
    until the client leaves, the worker drains, or the client is too slow.

    Messages go out as frames (text for ``str`` data, binary for ``bytes``), or as what
    *encode* makes of each :class:`~carboy.scale.broadcast.Message` (for example
    ``lambda m: json.dumps({"id": m.id, "data": m.data})`` for a client that resumes). One
    task sends and one receives, so a client that stops reading holds only its own bounded
    queue and its own send, never the other connections:

    * ``overflow="close"`` (``BROADCAST_SLOW_CONSUMER``): when the queue is full, the
      subscription ends and the socket is closed with *slow_code* (1013 "try again later",
      or 1008 "policy violation"); the close waits at most *close_timeout* seconds for a
      stalled socket to take the frame;
    * ``overflow="drop_oldest"``: the oldest queued messages are dropped and *on_gap* is
      called with a :class:`~carboy.scale.broadcast.Gap` (``reason="overflow"``).

    :param broadcast: the broadcast.
    :param channel: the channel's name.
    :param last_id: resume after this message id (for example the client's
        ``?last_id=`` argument).
    :param encode: turns a message into the frame to send; default its data.
    :param on_message: called with each frame the client sends (sync or ``async def``);
        default: frames are read and ignored.
    :param on_gap: called with each gap (sync or ``async def``), in order with the messages.
    :param queue_size: the connection's queue bound; default ``BROADCAST_QUEUE_SIZE``.
    :param overflow: ``"close"`` or ``"drop_oldest"``; default ``BROADCAST_SLOW_CONSUMER``.
    :param slow_code: the close code for a slow client; default ``BROADCAST_WS_SLOW_CODE``.
    :param close_timeout: seconds; default ``BROADCAST_WS_CLOSE_TIMEOUT``.
    :param subprotocol: the subprotocol to accept with.
    :param on_open: called with the :class:`~carboy.scale.broadcast.Subscription` once it is
        made and the socket accepted, before anything is forwarded (sync or ``async def``):
        send a greeting or a snapshot of the current state there, knowing that nothing
        published from then on is missed; the subscription's counters (``delivered``,
        ``dropped``, ``peak``) stay readable after this returns.
    :returns: why it ended: ``"disconnected"`` (the client left), ``"slow"``, ``"drain"``
        (closed with the code given to ``close_all``, 1012 by default), ``"closed"`` (the
        subscription was closed by other code) or ``"unavailable"`` (the backend could not
        be reached: closed with 1013).
    :raises RuntimeError: outside a WebSocket handler.
    :raises Exception: what *encode* or *on_message* raise (the socket is closed with 1011
        by carboy).

    .. versionadded:: 0.1
    """
    from ..globals import current_app
    from ..websocket import WebSocketDisconnect, websocket

    ws = websocket._get_current_object()  # type: ignore[attr-defined]
    config = current_app.config
    code = int(config["BROADCAST_WS_SLOW_CODE"] if slow_code is None else slow_code)
    wait = float(config["BROADCAST_WS_CLOSE_TIMEOUT"] if close_timeout is None else close_timeout)
    sub = broadcast.subscribe(
        channel, last_id, queue_size=queue_size, overflow=overflow, on_gap=on_gap
    )
    try:
        await sub.start()
    except Exception as e:
        logger.warning("WebSocket of %r could not subscribe: %s", channel, e)
        await sub.aclose()
        if not ws.accepted:
            await ws.accept(subprotocol)
        await ws.close(1013, "broadcast unavailable")
        return "unavailable"
    try:
        if not ws.accepted:
            await ws.accept(subprotocol)
        if on_open is not None:
            rv = on_open(sub)
            if inspect.isawaitable(rv):
                await rv
    except BaseException:
        await sub.aclose()
        raise

    async def pump() -> None:
        send = ws.send
        if encode is None:
            async for message in sub:
                await send(message.data)
        else:
            async for message in sub:
                await send(encode(message))

    async def listen() -> None:
        while True:
            data = await ws.receive()
            if on_message is not None:
                rv = on_message(data)
                if inspect.isawaitable(rv):
                    await rv

    sender = asyncio.ensure_future(pump())
    listener = asyncio.ensure_future(listen())
    try:
        await asyncio.wait((sender, listener), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, listener):
            if not task.done():
                task.cancel()
        await asyncio.gather(sender, listener, return_exceptions=True)
        await sub.aclose()
    for task in (listener, sender):
        if task.cancelled():
            continue
        error = task.exception()
        if isinstance(error, WebSocketDisconnect | OSError):
            return "disconnected"
        if isinstance(error, SlowConsumer):
            await _close(ws, code, "slow consumer", wait)
            return "slow"
        if error is not None:
            raise error
    if sub.ended == "drain":
        await _close(ws, sub.close_code or 1012, "server draining", wait)
        return "drain"
    return "closed"


async def _close(ws: t.Any, code: int, reason: str, wait: float) -> None:
    """Close *ws*, giving up after *wait* seconds (a client that reads nothing never takes the
    close frame; the server closes the socket when the handler returns)."""
    try:
        await asyncio.wait_for(ws.close(code, reason), wait)
    except (TimeoutError, OSError):
        pass
