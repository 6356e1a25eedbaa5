"""Realtime fan-out across workers and hosts: publish to a channel, subscribe from anywhere.

:class:`Broadcast` is an extension object (``Broadcast(app)`` or ``init_app``). Code anywhere
publishes to a named channel (:meth:`~Broadcast.publish` from views, CLI commands and
background threads; :meth:`~Broadcast.apublish` from ``async def`` code), and WebSocket
handlers and Server-Sent Events streams subscribe (:meth:`~Broadcast.subscribe`,
:meth:`~Broadcast.sse`, :meth:`~Broadcast.serve_websocket`)::

    broadcast = Broadcast(app)

    @app.post("/rooms/<room>")
    def post(room):
        broadcast.publish(room, request.get_data(as_text=True))
        return "", 204

    @app.get("/rooms/<room>/events")
    def events(room):
        return broadcast.sse(room)          # honours Last-Event-ID

    @app.websocket("/rooms/<room>/ws")
    async def ws(room):
        await broadcast.serve_websocket(room)

Backends (``BROADCAST_BACKEND``):

``"memory"``
    In this process only (the default without Redis): one worker. Keeps the last
    ``BROADCAST_MAXLEN`` messages of each channel, so a client can resume in this process.
``"streams"`` (alias ``"redis"``)
    A Redis Stream per channel (the default when ``REDIS_URL`` is set): each message is
    stored with ``XADD ... MAXLEN ~ BROADCAST_MAXLEN``, so any worker on any host can resume a
    client from its last id, and a reader that reconnects loses nothing.
``"pubsub"``
    Redis ``PUBLISH``/``SUBSCRIBE``: at most once, nothing stored. Each message carries a
    per-channel sequence number, so a message lost while a reader reconnected is reported as
    a :class:`Gap`, never lost silently.
``"postgres"``
    PostgreSQL ``LISTEN``/``NOTIFY`` (:mod:`carboy.scale.broadcast_postgres`): as pub/sub,
    for apps without Redis; messages of at most 7,900 bytes.

Each process (each event loop of it) reads a channel once, with one reader, whatever the number
of its subscribers, and fans each message out to its subscribers' bounded queues
(:class:`Subscription`). A subscriber that does not keep up is dropped from its oldest
messages (a :class:`Gap` tells it) or ended with :class:`SlowConsumer`
(``BROADCAST_SLOW_CONSUMER``); it never grows the worker's memory without bound nor delays
the others.

Draining: :meth:`Broadcast.close_all` ends every subscription of this process (WebSockets are
closed with code 1012, SSE streams end) so that clients reconnect, and resume, on another
worker.

``docs/scale/realtime.md`` states each backend's guarantees.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import json
import logging
import os
import threading
import typing as t
import weakref

if t.TYPE_CHECKING:
    from ..app import Carboy
    from ..wrappers import Response
    from .broadcast_backends import Backend

__all__ = ["Broadcast", "Gap", "Message", "SlowConsumer", "Subscription"]

logger = logging.getLogger("carboy.scale.broadcast")

#: The key of the broadcast's state in ``app.extensions``.
EXTENSION_KEY = "carboy.broadcast"
#: ``carboy.scale.connection.EXTENSION_KEY``, spelled here so that this module imports no redis.
_REDIS_KEY = "carboy.redis"

_DEFAULTS: dict[str, t.Any] = {
    "BROADCAST_BACKEND": None,
    "BROADCAST_KEY_PREFIX": "carboy:broadcast:",
    "BROADCAST_MAXLEN": 10000,
    "BROADCAST_MAXLEN_APPROXIMATE": True,
    "BROADCAST_KEY_TTL": 86400,
    "BROADCAST_BLOCK": 1.0,
    "BROADCAST_RECONNECT_MAX": 0.5,
    "BROADCAST_QUEUE_SIZE": 1000,
    "BROADCAST_SLOW_CONSUMER": "close",
    "BROADCAST_LINGER": 2.0,
    "BROADCAST_SSE_HEARTBEAT": 15.0,
    "BROADCAST_SSE_RETRY": 2000,
    "BROADCAST_WS_SLOW_CODE": 1013,
    "BROADCAST_WS_CLOSE_TIMEOUT": 10.0,
    "BROADCAST_POSTGRES_URL": None,
    "BROADCAST_POSTGRES_TABLE": "carboy_broadcast",
    "BROADCAST_POSTGRES_POOL_SIZE": 4,
}

#: Seconds :meth:`Subscription.start` waits for a channel's reader to reach its backend.
READY_TIMEOUT = 3.0

_BACKENDS = {"memory": "memory", "streams": "streams", "redis": "streams", "pubsub": "pubsub"}
_BACKENDS["postgres"] = "postgres"
_POLICIES = ("close", "drop_oldest")


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One published message, as a subscriber receives it.

    .. versionadded:: 0.1
    """

    #: The channel it was published to.
    channel: str
    #: Its id: ``"<ms>-<n>"`` for the streams and memory backends (Redis Stream ids, in
    #: publish order), ``"<n>"`` (the channel's sequence number) for pub/sub. A client sends
    #: the last one it received to resume (SSE's ``Last-Event-ID``).
    id: str
    #: The payload: ``str`` when a ``str`` (or a JSON-encoded value) was published, ``bytes``
    #: when ``bytes`` were.
    data: str | bytes

    def json(self) -> t.Any:
        """:attr:`data` decoded as JSON.

        :raises ValueError: it is not valid JSON.
        """
        return json.loads(self.data)


@dataclasses.dataclass(frozen=True, slots=True)
class Gap:
    """Messages a subscriber did not get, reported instead of being lost silently.

    ``reason`` is one of:

    * ``"reconnect"``: pub/sub: published while this process's reader was reconnecting;
    * ``"sequence"``: pub/sub: the channel's sequence number jumped on a live connection;
    * ``"trimmed"``: a resume from an id older than what the channel keeps (``MAXLEN``);
    * ``"no_history"``: a resume asked of the pub/sub backend, which keeps nothing;
    * ``"overflow"``: this subscriber was too slow and its oldest messages were dropped
      (``BROADCAST_SLOW_CONSUMER = "drop_oldest"``).

    .. versionadded:: 0.1
    """

    #: The channel.
    channel: str
    #: Why (see above).
    reason: str
    #: The id of the last message received before the gap, when known.
    after: str | None = None
    #: The id of the last message missed, when known.
    until: str | None = None
    #: How many messages were missed, when known.
    missed: int | None = None

    def as_dict(self) -> dict[str, t.Any]:
        """The gap as a JSON-ready dict (what the SSE helper sends as ``event: gap``)."""
        return dataclasses.asdict(self)


class SlowConsumer(Exception):
    """Raised by a :class:`Subscription` whose queue overflowed under the ``"close"`` policy.

    :param channel: the channel.
    :param size: the queue's bound (messages).

    .. versionadded:: 0.1
    """

    def __init__(self, channel: str, size: int) -> None:
        super().__init__(f"Subscriber of {channel!r} fell {size} messages behind.")
        self.channel = channel
        self.size = size


def parse_id(value: str) -> tuple[int, int]:
    """A message id as a tuple that sorts in publish order: ``"<ms>-<n>"`` -> ``(ms, n)``,
    ``"<n>"`` -> ``(n, 0)``.

    :raises ValueError: *value* is not such an id.

    .. versionadded:: 0.1
    """
    head, sep, tail = value.partition("-")
    if not head.isdigit() or (sep and not tail.isdigit()):
        raise ValueError(f"Not a message id: {value!r}.")
    return int(head), int(tail) if sep else 0


def _is_id(value: str | None) -> bool:
    try:
        return value is not None and bool(parse_id(value))
    except ValueError:
        return False


# -- subscriptions -----------------------------------------------------------------------------


class _Inbox:
    """A subscriber's bounded queue: what the channel's reader holds and fills (the
    :class:`Subscription` the user holds wraps it, so that dropping the subscription without
    closing it still lets the channel go)."""

    __slots__ = (
        "__weakref__", "channel", "close_code", "count", "dropped", "ended", "last_id",
        "overflow", "overflow_gap", "peak", "queue", "queue_size", "skip_upto", "waiter",
    )  # fmt: skip

    def __init__(self, queue_size: int, overflow: str) -> None:
        self.queue: collections.deque[Message | Gap] = collections.deque()
        self.count = 0  # messages (not gaps) in the queue
        self.queue_size = queue_size
        self.overflow = overflow
        self.waiter: asyncio.Future[None] | None = None
        self.channel: _Channel | None = None
        self.skip_upto: tuple[int, int] | None = None  # skip live messages up to this id
        self.overflow_gap: list[t.Any] | None = None  # [last id dropped, count] not reported
        self.ended: str | None = None
        self.close_code: int | None = None
        self.dropped = 0
        self.peak = 0
        self.last_id: str | None = None

    def put(self, message: Message) -> None:
        """Queue a live *message* (called by the channel's reader, on the loop)."""
        if self.ended is not None:  # ended during this dispatch
            return
        skip = self.skip_upto
        if skip is not None:
            if parse_id(message.id) <= skip:
                return
            self.skip_upto = None
        if self.count >= self.queue_size:
            if self.overflow == "close":
                self.end("slow")
                return
            self.drop_oldest()
        self.queue.append(message)
        count = self.count = self.count + 1
        if count > self.peak:
            self.peak = count
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def drop_oldest(self) -> None:
        queue = self.queue
        while queue:
            item = queue.popleft()
            if isinstance(item, Message):
                self.count -= 1
                self.dropped += 1
                gap = self.overflow_gap
                if gap is None:
                    self.overflow_gap = [item.id, 1]
                else:
                    gap[0] = item.id
                    gap[1] += 1
                return

    def put_gap(self, gap: Gap) -> None:
        self.queue.append(gap)
        self.wake()

    def end(self, reason: str, code: int | None = None) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        self.close_code = code
        self.queue.clear()
        self.count = 0
        self.leave()
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def leave(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.remove(self)


class Subscription:
    """One subscriber of a channel in this process: an async iterator of :class:`Message`.

    Made by :meth:`Broadcast.subscribe`. Use it as an async context manager, so that it leaves
    the channel when done (one that is dropped without closing leaves when it is garbage
    collected)::

        async with broadcast.subscribe("news", last_id=request.args.get("last_id")) as sub:
            async for message in sub:
                ...

    It joins the channel on ``__aenter__`` (or the first ``__anext__``): from then on every
    message published is delivered, in order; with *last_id*, every message after that id is
    delivered first (the streams and memory backends keep them; see :class:`Gap`).

    :param broadcast: the broadcast.
    :param app: the app whose broadcast state it uses.
    :param channel: the channel's name.
    :param last_id: resume after this message id (``None``, or an invalid id: from now on).
    :param queue_size: the bound of its queue (messages).
    :param overflow: ``"close"`` (raise :class:`SlowConsumer`) or ``"drop_oldest"``.
    :param on_gap: called with each :class:`Gap` (sync or ``async def``), in order with the
        messages.
    :raises ValueError: *overflow* is not one of those, or *queue_size* is below 1.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        broadcast: Broadcast,
        app: Carboy,
        channel: str,
        last_id: str | None,
        *,
        queue_size: int,
        overflow: str,
        on_gap: t.Callable[[Gap], t.Any] | None = None,
    ) -> None:
        if overflow not in _POLICIES:
            raise ValueError(f"overflow must be one of {_POLICIES}, not {overflow!r}.")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size!r}.")
        self.broadcast = broadcast
        self.app = app
        #: The channel.
        self.channel = channel
        self.on_gap = on_gap
        #: Messages delivered so far.
        self.delivered = 0
        self._inbox = _Inbox(queue_size, overflow)
        self._inbox.last_id = last_id if _is_id(last_id) else None
        self._backlog: collections.deque[Message | Gap] = collections.deque()
        self._backlog_after: str | None = None  # history left to fetch: (after, upto]
        self._backlog_upto: str | None = None
        self._started = False

    @property
    def last_id(self) -> str | None:
        """The id of the last message delivered (the resume id, before any)."""
        return self._inbox.last_id

    @property
    def ended(self) -> str | None:
        """Why the subscription ended: ``None`` (it has not), ``"closed"``, ``"drain"`` or
        ``"slow"``."""
        return self._inbox.ended

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code :meth:`Broadcast.close_all` asked for (drain only)."""
        return self._inbox.close_code

    @property
    def queue_size(self) -> int:
        """The bound of the queue (messages)."""
        return self._inbox.queue_size

    @property
    def overflow(self) -> str:
        """The slow-consumer policy: ``"close"`` or ``"drop_oldest"``."""
        return self._inbox.overflow

    @property
    def pending(self) -> int:
        """Messages waiting in the queue now."""
        return self._inbox.count

    @property
    def peak(self) -> int:
        """The most messages that ever waited in the queue at once."""
        return self._inbox.peak

    @property
    def dropped(self) -> int:
        """Messages dropped from the queue (``drop_oldest``)."""
        return self._inbox.dropped

    async def start(self) -> Subscription:
        """Join the channel (once): wait until this process's reader knows the channel's
        position, so that every message published after this returns is delivered.

        :raises TimeoutError: the channel's reader could not reach Redis within
            ``READY_TIMEOUT`` seconds (it goes on trying).
        :raises redis.RedisError: the resume's history could not be read from Redis.
        """
        if self._started:
            return self
        self._started = True
        inbox = self._inbox
        state = self.broadcast._state(self.app)
        if state.drain_code is not None:
            inbox.end("drain", state.drain_code)
            return self
        channel = state.hub().channel(self.channel)
        try:
            await asyncio.wait_for(channel.wait_ready(), READY_TIMEOUT)
        except TimeoutError:
            inbox.end("closed")
            channel.stop_when_idle()  # its reader goes on trying only while wanted
            raise TimeoutError(
                f"The broadcast's reader of {self.channel!r} did not reach its backend"
                f" within {READY_TIMEOUT} s."
            ) from None
        if state.drain_code is not None:  # drained while it waited
            inbox.end("drain", state.drain_code)
        if inbox.ended is not None:
            return self
        # No await between reading the position and joining: every message after the
        # position reaches this subscriber, and none before it.
        position = channel.position
        channel.add(inbox)
        inbox.channel = channel
        last = inbox.last_id
        if last is None or position is None:
            return self
        last_key, pos_key = parse_id(last), parse_id(position)
        if last_key > pos_key:
            inbox.skip_upto = last_key  # a client ahead of this reader: skip what it has
        elif last_key < pos_key:
            self._backlog_after, self._backlog_upto = last, position
            gap = await state.backend.check_resume(self.channel, last, position)
            if gap is not None:
                self._backlog.appendleft(gap)  # before the history that follows it
        return self

    async def _fill_backlog(self) -> None:
        after, upto = self._backlog_after, self._backlog_upto
        if after is None or upto is None:
            return
        state = self.broadcast._state(self.app)
        messages, more = await state.backend.history(self.channel, after, upto, 500)
        self._backlog.extend(messages)
        if more and messages:
            self._backlog_after = messages[-1].id
        else:
            self._backlog_after = self._backlog_upto = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        message = await self.get()
        if message is None:  # pragma: no cover (no timeout given)
            raise StopAsyncIteration
        return message

    @t.overload
    async def get(self, timeout: float | None = None) -> Message | None: ...

    @t.overload
    async def get(self, timeout: float | None, gaps: t.Literal[True]) -> Message | Gap | None: ...

    async def get(self, timeout: float | None = None, gaps: bool = False) -> Message | Gap | None:
        """The next message; ``None`` if none came within *timeout* seconds.

        :param timeout: seconds to wait at most (``None``: until one comes).
        :param gaps: return each :class:`Gap` too, in order, instead of passing it to
            ``on_gap``.
        :raises StopAsyncIteration: the subscription ended (closed, or drained: see
            :attr:`ended`).
        :raises SlowConsumer: it ended because its queue overflowed (policy ``"close"``).
        :raises TimeoutError: see :meth:`start`.
        """
        if not self._started:
            await self.start()
        inbox = self._inbox
        deadline: float | None = None
        while True:
            ended = inbox.ended
            if ended is not None:
                if ended == "slow":
                    raise SlowConsumer(self.channel, inbox.queue_size)
                raise StopAsyncIteration
            item: Message | Gap
            if self._backlog:
                item = self._backlog.popleft()
            elif self._backlog_after is not None:
                await self._fill_backlog()
                continue
            elif inbox.overflow_gap is not None:
                # What was dropped followed what this subscriber received last.
                until, missed = inbox.overflow_gap
                inbox.overflow_gap = None
                item = Gap(self.channel, "overflow", inbox.last_id, until, missed)
            elif inbox.queue:
                item = inbox.queue.popleft()
                if isinstance(item, Message):
                    inbox.count -= 1
            else:
                loop = asyncio.get_running_loop()
                if timeout is not None:
                    if deadline is None:
                        deadline = loop.time() + timeout
                    elif loop.time() >= deadline:
                        return None
                waiter = inbox.waiter = loop.create_future()
                if deadline is None:
                    await waiter
                else:
                    handle = loop.call_at(deadline, _wake_up, waiter)
                    try:
                        await waiter
                    finally:
                        handle.cancel()
                continue
            if isinstance(item, Gap):
                if gaps:
                    return item
                await self._report(item)
                continue
            inbox.last_id = item.id
            self.delivered += 1
            return item

    def ready(self, limit: int) -> list[Message]:
        """Up to *limit* live messages that are already queued, taken without waiting (and
        none while history or a gap comes first): lets a sender write several at once."""
        out: list[Message] = []
        inbox = self._inbox
        queue = inbox.queue
        if self._backlog or self._backlog_after is not None or inbox.overflow_gap is not None:
            return out
        # PERF: the SSE helper sends what piled up in one chunk instead of one chunk per
        # message: one ASGI send and one socket write for many messages.
        while queue and len(out) < limit and isinstance(queue[0], Message):
            item = t.cast(Message, queue.popleft())
            inbox.count -= 1
            out.append(item)
        if out:
            inbox.last_id = out[-1].id
            self.delivered += len(out)
        return out

    async def _report(self, gap: Gap) -> None:
        callback = self.on_gap
        if callback is None:
            return
        rv = callback(gap)
        if inspect.isawaitable(rv):
            await rv

    async def aclose(self) -> None:
        """Leave the channel (idempotent)."""
        self._inbox.end("closed")

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        inbox = getattr(self, "_inbox", None)  # None: __init__ raised
        channel = inbox.channel if inbox is not None else None
        if channel is not None and inbox is not None and inbox.ended is None:
            channel.hub.call_soon(inbox.end, "closed")


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# -- one hub per process and event loop --------------------------------------------------------


class _Channel:
    """A channel in one hub: its subscribers and the one reader that feeds them."""

    __slots__ = ("_ready", "_subs", "_tuple", "hub", "linger", "name", "position", "task")

    def __init__(self, hub: _Hub, name: str) -> None:
        self.hub = hub
        self.name = name
        #: The id of the last message this reader dispatched (or the channel's last id when
        #: it started); ``None`` until ready.
        self.position: str | None = None
        self._subs: dict[_Inbox, None] = {}
        self._tuple: tuple[_Inbox, ...] = ()
        self._ready: asyncio.Future[None] = hub.loop.create_future()
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.task = self.hub.loop.create_task(self._run(), name=f"broadcast reader {self.name}")

    async def _run(self) -> None:
        try:
            await self.hub.state.backend.run(self)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a bug: end every subscriber rather than hang them
            logger.exception("The reader of channel %r failed.", self.name)
            if not self._ready.done():
                self._ready.set_exception(e)
            for sub in self._tuple:
                sub.end("closed")
            self.hub.forget(self)

    def set_ready(self, position: str | None) -> None:
        """Called by the backend's reader once the channel's current position is known."""
        if self.position is None:
            self.position = position
        if not self._ready.done():
            self._ready.set_result(None)

    async def wait_ready(self) -> None:
        await asyncio.shield(self._ready)

    def add(self, sub: _Inbox) -> None:
        self._subs[sub] = None
        self._tuple = tuple(self._subs)
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None

    def remove(self, sub: _Inbox) -> None:
        if self._subs.pop(sub, 1) is None:
            self._tuple = tuple(self._subs)
            self.stop_when_idle()

    def stop_when_idle(self) -> None:
        """Stop the reader :attr:`linger` seconds from now unless a subscriber joins."""
        if not self._subs and self.linger is None:
            self.linger = self.hub.loop.call_later(self.hub.state.linger, self._idle)

    def _idle(self) -> None:
        self.linger = None
        if not self._subs:
            self.hub.forget(self)

    def dispatch(self, messages: t.Iterable[Message]) -> None:
        """Deliver *messages* (newer than :attr:`position`, in order) to every subscriber."""
        for message in messages:
            self.position = message.id
            for sub in self._tuple:
                sub.put(message)

    def gap(self, gap: Gap) -> None:
        """Report a gap of this process's reader to the app and to every subscriber."""
        self.hub.state.report(gap)
        for sub in self._tuple:
            sub.put_gap(gap)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


class _Hub:
    """The channels of one event loop in one process."""

    def __init__(self, state: _State, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.loop = loop
        self.thread = threading.get_ident()
        self.channels: dict[str, _Channel] = {}

    def channel(self, name: str) -> _Channel:
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = _Channel(self, name)
            channel.start()
        return channel

    def forget(self, channel: _Channel) -> None:
        if self.channels.get(channel.name) is channel:
            del self.channels[channel.name]
        if channel.linger is not None:
            channel.linger.cancel()
        task = channel.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def call_soon(self, func: t.Callable[..., t.Any], *args: t.Any, now: bool = True) -> None:
        """Run ``func(*args)`` on this hub's loop, from any thread (dropped if it closed):
        at once when called on the loop's thread and *now* is true, else in the loop's
        queue (in the order of the calls)."""
        if now and threading.get_ident() == self.thread and self.loop.is_running():
            func(*args)
            return
        try:
            self.loop.call_soon_threadsafe(func, *args)
        except RuntimeError:  # the loop is closed
            pass

    def drain(self, code: int) -> None:
        for channel in list(self.channels.values()):
            for sub in channel._tuple:
                sub.end("drain", code)

    def deliver(self, name: str, message: Message) -> None:
        """In-process publish: dispatch *message* if this hub reads *name* and has not seen it."""
        channel = self.channels.get(name)
        if channel is None or channel.position is None:
            return
        if parse_id(message.id) > parse_id(channel.position):
            channel.dispatch((message,))


# -- the extension -----------------------------------------------------------------------------


class _State:
    """The broadcast's state for one app in one process."""

    def __init__(self, broadcast: Broadcast, app: Carboy) -> None:
        config = app.config
        self.broadcast = broadcast
        self.app = app
        self.pid = os.getpid()
        self.linger = float(config["BROADCAST_LINGER"])
        self.drain_code: int | None = None
        self._hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Future[t.Any]] = set()  # running async on_gap calls
        self.backend: Backend = broadcast._make_backend(self, app)

    def hub(self) -> _Hub:
        loop = asyncio.get_running_loop()
        hub = self._hubs.get(loop)
        if hub is None:
            with self._lock:
                hub = self._hubs.get(loop)
                if hub is None:
                    hub = self._hubs[loop] = _Hub(self, loop)
        return hub

    def hubs(self) -> list[_Hub]:
        with self._lock:
            return list(self._hubs.values())

    def close_all(self, code: int = 1012) -> None:
        """See :meth:`Broadcast.close_all` (here so that a drain can call it on
        ``app.extensions["carboy.broadcast"]`` without importing this module)."""
        self.drain_code = code
        for hub in self.hubs():
            # Queued even on the loop's own thread: a signal handler may run in the middle of
            # a dispatch.
            hub.call_soon(hub.drain, code, now=False)

    async def stop(self) -> None:
        """Stop the running loop's readers (the app's ``after_serving``)."""
        hub = self._hubs.get(asyncio.get_running_loop())
        if hub is not None:
            channels = list(hub.channels.values())
            for channel in channels:
                hub.forget(channel)
            await asyncio.gather(*(c.task for c in channels if c.task), return_exceptions=True)
        await self.backend.aclose()
        self.backend.close()

    def report(self, gap: Gap) -> None:
        logger.warning(
            "Broadcast gap on channel %r (%s): after %s until %s, %s missed.",
            gap.channel, gap.reason, gap.after, gap.until,
            "?" if gap.missed is None else gap.missed,
        )  # fmt: skip
        callback = self.broadcast.on_gap
        if callback is None:
            return
        try:
            rv = callback(gap)
            if inspect.isawaitable(rv):
                task = asyncio.ensure_future(rv)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            logger.exception("The broadcast's on_gap callback failed.")


class Broadcast:
    """Publish to channels and subscribe to them, across every worker and host.

    :param app: the app to register with now, or ``None`` to call :meth:`init_app` later.
    :param backend: ``"memory"``, ``"streams"`` (``"redis"``), ``"pubsub"`` or ``"postgres"``;
        ``None`` reads
        ``BROADCAST_BACKEND``, whose default is ``"streams"`` when ``REDIS_URL`` is set (or a
        :class:`~carboy.scale.connection.RedisConnection` is registered) and ``"memory"``
        otherwise.
    :param on_gap: called with every :class:`Gap` a reader of this process detects (pub/sub
        messages lost while reconnecting, ...), on the event loop that detected it; sync or
        ``async def``. Gaps are logged as warnings either way.

    Config keys (read at :meth:`init_app`):

    ==================================  ===========  ===============================================
    ``BROADCAST_BACKEND``               auto         see *backend*
    ``BROADCAST_KEY_PREFIX``            see right    key prefix (``"carboy:broadcast:"``)
    ``BROADCAST_MAXLEN``                10000        messages kept per channel (streams, memory)
    ``BROADCAST_MAXLEN_APPROXIMATE``    True         ``MAXLEN ~`` (cheaper trimming)
    ``BROADCAST_KEY_TTL``               86400        seconds keys outlive the last publish
    ``BROADCAST_BLOCK``                 1.0          seconds a reader blocks on Redis per wait
    ``BROADCAST_RECONNECT_MAX``         0.5          the longest pause between reconnects (s)
    ``BROADCAST_QUEUE_SIZE``            1000         each subscriber's queue bound (messages)
    ``BROADCAST_SLOW_CONSUMER``         ``close``    slow-consumer policy (or ``drop_oldest``)
    ``BROADCAST_LINGER``                2.0          seconds a reader outlives its last subscriber
    ``BROADCAST_SSE_HEARTBEAT``         15.0         seconds between SSE heartbeat comments
    ``BROADCAST_SSE_RETRY``             2000         the SSE ``retry:`` hint (milliseconds)
    ``BROADCAST_WS_SLOW_CODE``          1013         close code for a slow WebSocket (or 1008)
    ``BROADCAST_WS_CLOSE_TIMEOUT``      10.0         seconds to wait for a stalled socket's close
    ``BROADCAST_POSTGRES_URL``          ``None``     postgres: the database (default: the app's
                                                     ``SQLALCHEMY_DATABASE_URI``)
    ``BROADCAST_POSTGRES_TABLE``        see right    postgres: the table of sequence numbers
                                                     (``"carboy_broadcast"``)
    ``BROADCAST_POSTGRES_POOL_SIZE``    4            postgres: publishing connections per pool
    ==================================  ===========  ===============================================

    :raises ValueError: (at :meth:`init_app`) an unknown backend or slow-consumer policy.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Carboy | None = None,
        *,
        backend: str | None = None,
        on_gap: t.Callable[[Gap], t.Any] | None = None,
    ) -> None:
        #: The app given to the constructor (used outside an app context).
        self.app = app
        self.backend_name = backend
        #: The app-wide gap callback (see the class docs).
        self.on_gap = on_gap
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Carboy) -> None:
        """Read the app's ``BROADCAST_*`` config and register in ``app.extensions``.

        :raises ValueError: an unknown backend or slow-consumer policy.
        """
        for key, value in _DEFAULTS.items():
            app.config.setdefault(key, value)
        policy = app.config["BROADCAST_SLOW_CONSUMER"]
        if policy not in _POLICIES:
            raise ValueError(f"BROADCAST_SLOW_CONSUMER must be one of {_POLICIES}: {policy!r}.")
        name = self.backend_name or app.config["BROADCAST_BACKEND"]
        if name is None:
            redis_set = app.config.get("REDIS_URL") or _REDIS_KEY in app.extensions
            name = "streams" if redis_set else "memory"
        if name not in _BACKENDS:
            raise ValueError(f"Unknown broadcast backend {name!r}: use one of {list(_BACKENDS)}.")
        app.config["BROADCAST_BACKEND"] = _BACKENDS[name]
        app.extensions[EXTENSION_KEY] = _State(self, app)

        async def stop_readers() -> None:
            await self._state(app).stop()

        app.after_serving(stop_readers)

    def _make_backend(self, state: _State, app: Carboy) -> Backend:
        config = app.config
        name = config["BROADCAST_BACKEND"]
        if name == "memory":
            from .broadcast_backends import MemoryBackend

            return MemoryBackend(state, int(config["BROADCAST_MAXLEN"]))
        if name == "postgres":
            from . import broadcast_postgres

            return broadcast_postgres.make_backend(app)
        from . import broadcast_redis

        return broadcast_redis.make_backend(name, app)

    def _state(self, app: Carboy | None = None) -> _State:
        if app is None:
            app = self.app
        if app is None:
            from ..globals import current_app

            app = t.cast("Carboy", current_app._get_current_object())  # type: ignore[attr-defined]
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, _State):
            raise RuntimeError("Broadcast is not initialised on this app: call init_app(app).")
        if state.pid != os.getpid():  # a forked child: nothing of the parent's loops is valid
            state = _State(self, app)
            app.extensions[EXTENSION_KEY] = state
        return state

    @property
    def backend(self) -> Backend:
        """The backend of the current app (or the constructor's app)."""
        return self._state().backend

    @property
    def draining(self) -> bool:
        """Whether :meth:`close_all` was called in this process."""
        return self._state().drain_code is not None

    def _encode(self, data: t.Any) -> tuple[str, bytes]:
        if isinstance(data, str):
            return "s", data.encode("utf-8")
        if isinstance(data, bytes | bytearray | memoryview):
            return "b", bytes(data)
        return "s", self._state().app.json.dumps(data).encode("utf-8")

    def publish(self, channel: str, data: t.Any) -> str:
        """Publish *data* to *channel*, from sync code (a view, a CLI command, a thread).

        :param channel: the channel's name.
        :param data: ``str``, ``bytes``, or any value the app's JSON provider encodes (sent
            as JSON text).
        :returns: the message's id.
        :raises redis.RedisError: Redis did not take it (``ConnectionError``, ``TimeoutError``
            after one retry: about a second at most).
        :raises psycopg.Error: (postgres) PostgreSQL did not take it.
        :raises ValueError: (postgres) the encoded data is over 7,900 bytes.

        From ``async def`` code, use :meth:`apublish`: this one waits for Redis on the
        calling thread.
        """
        kind, payload = self._encode(data)
        return self._state().backend.publish(channel, kind, payload)

    async def apublish(self, channel: str, data: t.Any) -> str:
        """Publish *data* to *channel* without blocking the event loop (the asyncio client).

        Parameters, result and errors as :meth:`publish`.
        """
        kind, payload = self._encode(data)
        return await self._state().backend.apublish(channel, kind, payload)

    def subscribe(
        self,
        channel: str,
        last_id: str | None = None,
        *,
        queue_size: int | None = None,
        overflow: str | None = None,
        on_gap: t.Callable[[Gap], t.Any] | None = None,
    ) -> Subscription:
        """A :class:`Subscription` to *channel* in this process (an async iterator).

        :param channel: the channel's name.
        :param last_id: resume after this message id (an invalid id is ignored).
        :param queue_size: its queue bound (messages); default ``BROADCAST_QUEUE_SIZE``.
        :param overflow: ``"close"`` or ``"drop_oldest"``; default ``BROADCAST_SLOW_CONSUMER``.
        :param on_gap: called with each :class:`Gap` this subscriber meets.
        :raises ValueError: a bad *overflow* or *queue_size*.
        """
        state = self._state()
        config = state.app.config
        return Subscription(
            self,
            state.app,
            channel,
            last_id,
            queue_size=int(queue_size or config["BROADCAST_QUEUE_SIZE"]),
            overflow=overflow or config["BROADCAST_SLOW_CONSUMER"],
            on_gap=on_gap,
        )

    def sse(self, channel: str, last_id: t.Any = ..., **options: t.Any) -> Response:
        """A ``text/event-stream`` response streaming *channel*; see
        :func:`carboy.scale.broadcast_http.sse_response` for *options*.

        :param last_id: resume after this id; by default the request's ``Last-Event-ID``.
        """
        from .broadcast_http import sse_response

        return sse_response(self, channel, last_id, **options)

    async def serve_websocket(
        self, channel: str, last_id: str | None = None, **options: t.Any
    ) -> str:
        """Forward *channel* to the current WebSocket until it closes; see
        :func:`carboy.scale.broadcast_http.serve_websocket` for *options* and the result."""
        from .broadcast_http import serve_websocket

        return await serve_websocket(self, channel, last_id, **options)

    def close_all(self, code: int = 1012) -> None:
        """Drain this process: end every subscription now and every one started later.

        The WebSocket helper closes its socket with *code* (1012, "service restart", by
        default: clients reconnect, to another worker); the SSE helper ends its stream (the
        browser reconnects after the ``retry:`` hint, with ``Last-Event-ID``). Safe to call
        from any thread or a signal handler. A drain that does not import this module can call
        ``app.extensions["carboy.broadcast"].close_all(code)`` (present when a Broadcast is).

        :param code: the WebSocket close code.
        """
        self._state().close_all(code)

    def stats(self) -> dict[str, int]:
        """This process's figures: channels read, subscribers, messages waiting in queues."""
        channels = subscribers = pending = 0
        for hub in self._state().hubs():
            for channel in list(hub.channels.values()):
                channels += 1
                subscribers += channel.subscribers
                pending += sum(sub.count for sub in channel._tuple)
        return {"channels": channels, "subscribers": subscribers, "pending": pending}
