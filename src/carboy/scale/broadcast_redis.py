"""The Redis backends of :mod:`carboy.scale.broadcast`, on the app's connection layer.

**Streams** (``BROADCAST_BACKEND = "streams"``): a channel is the Stream
``<BROADCAST_KEY_PREFIX><channel>``. Publishing is ``XADD <key> MAXLEN ~ <BROADCAST_MAXLEN> *
d <data>`` (and ``PEXPIRE`` by ``BROADCAST_KEY_TTL``) in one round trip. Each process (each
event loop) reads a channel with one loop of ``XREAD BLOCK <BROADCAST_BLOCK> STREAMS <key>
<last id>`` and fans what arrives out to its subscribers. The reader remembers the last id it
read, so after a reconnect it reads on from there: nothing published meanwhile is lost
(unless ``MAXLEN`` trimmed it first, which is reported as a gap). A resuming client gets the
kept messages after its id from ``XRANGE``.

**Pub/sub** (``"pubsub"``): publishing runs ``lua/broadcast_publish.lua``: ``INCR`` the
channel's sequence key ``<prefix>seq:<channel>`` and ``PUBLISH`` ``<n>:<data>`` in one atomic
step. Each process subscribes once per channel. A message published while its connection was
down is lost (at most once), but never silently: after reconnecting the reader reads the
sequence key and reports the numbers it missed as a :class:`~carboy.scale.broadcast.Gap`.

Connections: each reader keeps one connection for itself, made from the app's asyncio pool
(same URL, password, TLS and timeouts) and named ``carboy-broadcast:<backend>:<pid>`` (see
``CLIENT LIST``), with a read timeout of ``BROADCAST_BLOCK`` plus ``REDIS_SOCKET_TIMEOUT``.
It is never handed back to the pool. Publishing uses the layer's own clients: the sync client
for :meth:`~carboy.scale.broadcast.Broadcast.publish`, the event loop's asyncio client for
``apublish``.

Failures: a reader whose connection fails reconnects at once, then after 0.05, 0.1, 0.2 s...
up to ``BROADCAST_RECONNECT_MAX`` (0.5 s): back within a second of Redis answering again. A
connection the server closed after an idle ``timeout`` is one such failure; a blocked ``XREAD``
and a subscribed connection are exempt from Redis's idle timeout, and the pub/sub reader
``PING``\\ s every ``BROADCAST_BLOCK`` seconds of silence, which also finds a dead peer.

A Redis Cluster URL works with the streams backend (its reader uses the cluster client's
``XREAD`` with a block below the socket timeout); the pub/sub backend needs one server (or
Sentinel).

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import logging
import os
import typing as t
import weakref
from importlib import resources

import redis
import redis.asyncio

from .broadcast import Gap, Message, parse_id
from .broadcast_backends import Backend, decode_payload
from .connection import EXTENSION_KEY, RedisConnection, execute

if t.TYPE_CHECKING:
    from ..app import Carboy
    from .broadcast import _Channel

__all__ = ["RedisPubSubBackend", "RedisStreamsBackend", "make_backend"]

logger = logging.getLogger("carboy.scale.broadcast")

#: The errors after which a reader reconnects.
_LOST = (redis.ConnectionError, redis.TimeoutError, OSError)
#: Entries one ``XREAD`` returns at most.
READ_COUNT = 1000


def make_backend(name: str, app: Carboy) -> Backend:
    """The Redis backend *name* (``"streams"`` or ``"pubsub"``) for *app*, on its
    :class:`~carboy.scale.connection.RedisConnection` (made here from ``REDIS_URL`` if the app
    has none).

    :raises ValueError: ``"pubsub"`` on a Redis Cluster URL, or no ``REDIS_URL``.

    .. versionadded:: 0.1
    """
    layer = app.extensions.get(EXTENSION_KEY)
    if layer is None:
        layer = RedisConnection(app)
    config = app.config
    options = {
        "prefix": config["BROADCAST_KEY_PREFIX"],
        "ttl": float(config["BROADCAST_KEY_TTL"] or 0),
        "block": float(config["BROADCAST_BLOCK"]),
        "reconnect_max": float(config["BROADCAST_RECONNECT_MAX"]),
        "socket_timeout": float(config.get("REDIS_SOCKET_TIMEOUT") or 1.0),
    }
    if name == "pubsub":
        if layer.is_cluster:
            raise ValueError("The pub/sub broadcast backend needs one Redis server or Sentinel.")
        return RedisPubSubBackend(layer, **options)
    maxlen = int(config["BROADCAST_MAXLEN"])
    approximate = bool(config["BROADCAST_MAXLEN_APPROXIMATE"])
    return RedisStreamsBackend(layer, maxlen=maxlen, approximate=approximate, **options)


def backoff(failures: int, cap: float) -> float:
    """Seconds to wait before reconnect attempt number *failures* (1: at once; then 0.05,
    0.1, 0.2 ..., at most *cap* seconds).

    .. versionadded:: 0.1
    """
    if failures <= 1:
        return 0.0
    return min(cap, 0.05 * 2.0 ** (failures - 2))


def _text(value: t.Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _RedisBackend(Backend):
    def __init__(
        self,
        layer: RedisConnection,
        *,
        prefix: str,
        ttl: float,
        block: float,
        reconnect_max: float,
        socket_timeout: float,
    ) -> None:
        self.layer = layer
        self.prefix = prefix
        self.ttl_ms = int(ttl * 1000)
        self.block = block
        self.reconnect_max = reconnect_max
        self.read_timeout = block + socket_timeout

    async def _connect(self) -> t.Any:
        """A new connection of the layer's asyncio pool, for a reader to keep, connected."""
        pool: t.Any = self.layer.aio.connection_pool
        conn = pool.make_connection()
        conn.health_check_interval = 0  # the reader reads all the time; no PING before sends
        conn.socket_timeout = self.read_timeout
        conn.client_name = f"carboy-broadcast:{self.name}:{os.getpid()}"
        try:
            await conn.connect()
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn

    async def _lost(self, channel: _Channel, failures: int, error: BaseException) -> None:
        if failures == 1:
            logger.warning(
                "Broadcast reader of %r lost Redis (%s); reconnecting.", channel.name, error
            )
        await asyncio.sleep(backoff(failures, self.reconnect_max))


def _fields(raw: t.Any) -> tuple[t.Any, t.Any]:
    """``(kind, data)`` of an entry's fields (a flat list, or a dict from redis-py)."""
    if isinstance(raw, dict):
        return raw.get(b"k", raw.get("k", b"s")), raw.get(b"d", raw.get("d", b""))
    kind, data = b"s", b""
    for i in range(0, len(raw) - 1, 2):
        name = raw[i]
        if name in (b"d", "d"):
            data = raw[i + 1]
        elif name in (b"k", "k"):
            kind = raw[i + 1]
    return kind, data


def _messages(channel: str, entries: t.Iterable[t.Any]) -> list[Message]:
    out = []
    for entry_id, raw in entries:
        kind, data = _fields(raw)
        out.append(Message(channel, _text(entry_id), decode_payload(kind, data)))
    return out


def _after(entry_id: str) -> str:
    """The smallest stream id after *entry_id* (``XRANGE``'s start is inclusive)."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"


class RedisStreamsBackend(_RedisBackend):
    """A Redis Stream per channel: kept (``MAXLEN``), resumable, nothing lost on reconnect.

    :param layer: the app's connection layer.
    :param maxlen: the entries kept per channel (``BROADCAST_MAXLEN``).
    :param approximate: trim with ``MAXLEN ~`` (whole nodes: cheaper, keeps a few more).
    :param prefix: the key prefix.
    :param ttl: seconds a channel's stream lives after its last publish (0: forever).
    :param block: seconds one ``XREAD BLOCK`` waits.
    :param reconnect_max: the longest pause between reconnect attempts (seconds).
    :param socket_timeout: the layer's reply timeout (seconds).

    .. versionadded:: 0.1
    """

    name = "streams"
    keeps_history = True

    def __init__(self, layer: RedisConnection, *, maxlen: int, approximate: bool, **options: t.Any):
        super().__init__(layer, **options)
        self.maxlen = maxlen
        self.trim = ("MAXLEN", "~", maxlen) if approximate else ("MAXLEN", maxlen)

    def _commands(self, channel: str, kind: str, data: bytes) -> list[tuple[t.Any, ...]]:
        key = self.prefix + channel
        fields = ("d", data) if kind == "s" else ("d", data, "k", kind)
        commands: list[tuple[t.Any, ...]] = [("XADD", key, *self.trim, "*", *fields)]
        if self.ttl_ms:
            commands.append(("PEXPIRE", key, self.ttl_ms))
        return commands

    def publish(self, channel: str, kind: str, data: bytes) -> str:
        replies = execute(self.layer.sync, self._commands(channel, kind, data))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return _text(replies[0])

    async def apublish(self, channel: str, kind: str, data: bytes) -> str:
        client: t.Any = self.layer.aio
        commands = self._commands(channel, kind, data)
        if len(commands) == 1:
            return _text(await client.execute_command(*commands[0]))
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies = await pipe.execute()
        return _text(replies[0])

    async def run(self, channel: _Channel) -> None:
        key = self.prefix + channel.name
        if not hasattr(self.layer.aio, "connection_pool"):  # a cluster: no connection of our own
            await self._run_cluster(channel, key)
            return
        conn: t.Any = None
        position: str | None = None
        failures = 0
        block_ms = int(self.block * 1000)
        try:
            while True:
                try:
                    if conn is None:
                        conn = await self._connect()
                        if position is None:
                            await conn.send_command("XREVRANGE", key, "+", "-", "COUNT", 1)
                            last = await conn.read_response()
                            position = _text(last[0][0]) if last else "0-0"
                            channel.set_ready(position)
                        else:
                            await conn.send_command("XRANGE", key, "-", "+", "COUNT", 1)
                            gap = self._trimmed(channel.name, position, await conn.read_response())
                            if gap is not None:
                                channel.gap(gap)
                    await conn.send_command(
                        "XREAD", "COUNT", READ_COUNT, "BLOCK", block_ms, "STREAMS", key, position
                    )
                    reply = await conn.read_response()
                    if failures:
                        logger.warning("Broadcast reader of %r is back.", channel.name)
                        failures = 0
                    if reply:
                        messages = _messages(channel.name, reply[0][1])
                        if messages:
                            position = messages[-1].id
                            channel.dispatch(messages)
                except _LOST as e:
                    failures += 1
                    if conn is not None:
                        await conn.disconnect(nowait=True)
                        conn = None
                    await self._lost(channel, failures, e)
        finally:
            if conn is not None:
                await conn.disconnect(nowait=True)

    async def _run_cluster(self, channel: _Channel, key: str) -> None:
        client: t.Any = self.layer.aio
        position: str | None = None
        failures = 0
        # The cluster client reads with the layer's socket timeout: block for less.
        block_ms = max(1, int(min(self.block, (self.read_timeout - self.block) / 2) * 1000))
        while True:
            try:
                if position is None:
                    last = await client.execute_command("XREVRANGE", key, "+", "-", "COUNT", 1)
                    position = _text(last[0][0]) if last else "0-0"
                    channel.set_ready(position)
                reply = await client.xread({key: position}, count=READ_COUNT, block=block_ms)
                failures = 0
                for _stream, entries in reply or ():
                    messages = _messages(channel.name, entries)
                    if messages:
                        position = messages[-1].id
                        channel.dispatch(messages)
            except _LOST as e:
                failures += 1
                await self._lost(channel, failures, e)

    def _trimmed(self, channel: str, after: str, oldest: t.Any) -> Gap | None:
        """A gap if the stream's oldest kept entry (*oldest*, an ``XRANGE ... COUNT 1`` reply)
        is newer than *after*: what followed *after* may have been trimmed away."""
        if not oldest:
            return None
        if parse_id(_text(oldest[0][0])) > parse_id(after):
            return Gap(channel, "trimmed", after, None, None)
        return None

    async def history(
        self, channel: str, after: str, upto: str, count: int
    ) -> tuple[list[Message], bool]:
        key = self.prefix + channel
        client: t.Any = self.layer.aio
        entries = await client.execute_command("XRANGE", key, _after(after), upto, "COUNT", count)
        messages = _messages(channel, entries or ())
        return messages, len(messages) == count

    async def check_resume(self, channel: str, after: str, upto: str) -> Gap | None:
        client: t.Any = self.layer.aio
        oldest = await client.execute_command("XRANGE", self.prefix + channel, "-", "+", "COUNT", 1)
        return self._trimmed(channel, after, oldest)


class RedisPubSubBackend(_RedisBackend):
    """Redis pub/sub: at most once, nothing kept; every lost message is reported as a gap.

    Parameters as :class:`RedisStreamsBackend` (no *maxlen*).

    .. versionadded:: 0.1
    """

    name = "pubsub"
    keeps_history = False

    def __init__(self, layer: RedisConnection, **options: t.Any) -> None:
        super().__init__(layer, **options)
        source = resources.files("carboy.scale").joinpath("lua/broadcast_publish.lua")
        self.source = source.read_text("utf-8")
        self._sha: str | None = None
        self._scripts: weakref.WeakKeyDictionary[t.Any, t.Any] = weakref.WeakKeyDictionary()

    def _args(self, channel: str, kind: str, data: bytes) -> tuple[t.Any, ...]:
        seq_key = self.prefix + "seq:" + channel
        return (1, seq_key, self.prefix + channel, kind.encode() + data, self.ttl_ms)

    def publish(self, channel: str, kind: str, data: bytes) -> str:
        client = self.layer.sync
        args = self._args(channel, kind, data)
        if self._sha is not None:
            reply = execute(client, [("EVALSHA", self._sha, *args)])[0]
            if not isinstance(reply, redis.exceptions.NoScriptError):
                if isinstance(reply, Exception):
                    raise reply
                return str(reply)
        self._sha = _text(client.script_load(self.source))
        reply = execute(client, [("EVALSHA", self._sha, *args)])[0]
        if isinstance(reply, Exception):
            raise reply
        return str(reply)

    async def apublish(self, channel: str, kind: str, data: bytes) -> str:
        client = self.layer.aio
        script = self._scripts.get(client)
        if script is None:
            script = self._scripts[client] = client.register_script(self.source)
        _, key, *args = self._args(channel, kind, data)
        return str(await script(keys=[key], args=args))

    async def run(self, channel: _Channel) -> None:
        name = channel.name
        redis_channel = self.prefix + name
        seq_key = self.prefix + "seq:" + name
        last: int | None = None
        failures = 0
        conn: t.Any = None

        def deliver(reply: t.Any) -> None:
            nonlocal last
            seq, message = _parse(name, reply[2])
            if last is not None:
                if seq > last + 1:
                    channel.gap(Gap(name, "sequence", str(last), str(seq - 1), seq - last - 1))
                elif seq <= last:  # the sequence key expired (no publish for its TTL)
                    logger.info("Broadcast channel %r started its sequence again.", name)
            last = seq
            channel.dispatch((message,))

        try:
            while True:
                try:
                    conn = await self._connect()
                    await conn.send_command("SUBSCRIBE", redis_channel)
                    await conn.read_response()
                    current = int(await self.layer.aio.get(seq_key) or 0)
                    # What was published between SUBSCRIBE and GET is on this connection before
                    # the PING's answer: it was not missed.
                    await conn.send_command("PING", "carboy")
                    early: list[t.Any] = []
                    while True:
                        reply = await conn.read_response()
                        if reply[0] in (b"pong", "pong"):
                            break
                        if reply[0] in (b"message", "message"):
                            early.append(reply)
                    seqs = [_parse(name, r[2])[0] for r in early]
                    if last is None:
                        last = current
                        channel.set_ready(str(current))
                    else:
                        missed_until = min(min(seqs, default=current + 1) - 1, current)
                        if missed_until > last:
                            missed = missed_until - last
                            channel.gap(
                                Gap(name, "reconnect", str(last), str(missed_until), missed)
                            )
                            last = missed_until
                    for seq, reply in zip(seqs, early, strict=True):
                        if seq > last:
                            deliver(reply)
                    if failures:
                        logger.warning("Broadcast reader of %r is back.", name)
                        failures = 0
                    pinged = False
                    while True:
                        reply = await conn.read_response(timeout=self.block)
                        if reply is None:  # silence: is the connection alive?
                            if pinged:
                                raise redis.TimeoutError("No answer to PING.")
                            await conn.send_command("PING")
                            pinged = True
                        elif reply[0] in (b"message", "message"):
                            deliver(reply)
                        elif reply[0] in (b"pong", "pong"):
                            pinged = False
                except _LOST as e:
                    failures += 1
                    if conn is not None:
                        await conn.disconnect(nowait=True)
                        conn = None
                    await self._lost(channel, failures, e)
        finally:
            if conn is not None:
                await conn.disconnect(nowait=True)

    async def check_resume(self, channel: str, after: str, upto: str) -> Gap | None:
        try:
            missed: int | None = parse_id(upto)[0] - parse_id(after)[0]
        except ValueError:  # pragma: no cover (ids are checked before)
            missed = None
        return Gap(channel, "no_history", after, upto, missed)


def _parse(channel: str, payload: bytes | str) -> tuple[int, Message]:
    """``(sequence number, message)`` of a pub/sub payload ``<n>:<kind><data>``."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    head, _, rest = raw.partition(b":")
    seq = int(head)
    return seq, Message(channel, str(seq), decode_payload(rest[:1], rest[1:]))
