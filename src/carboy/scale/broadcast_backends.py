"""The broadcast's backend interface, and its in-process backend (one worker).

The Redis backends are in :mod:`carboy.scale.broadcast_redis`, PostgreSQL's in
:mod:`carboy.scale.broadcast_postgres`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import typing as t

from .broadcast import Gap, Message, parse_id

if t.TYPE_CHECKING:
    from .broadcast import _Channel, _State

__all__ = ["Backend", "MemoryBackend", "decode_payload"]


class Backend:
    """What a broadcast backend does; subclass it for another engine.

    The payload a backend stores is ``(kind, data)``: kind ``"s"`` for text (UTF-8) or
    ``"b"`` for bytes.

    .. versionadded:: 0.1
    """

    #: The name in ``BROADCAST_BACKEND``.
    name = "base"
    #: Whether messages are kept, so that a subscriber can resume from an id.
    keeps_history = False

    def publish(self, channel: str, kind: str, data: bytes) -> str:
        """Publish one message from sync code.

        :param channel: the channel's name.
        :param kind: ``"s"`` (*data* is UTF-8 text) or ``"b"`` (bytes).
        :param data: the payload.
        :returns: the message's id.
        :raises Exception: the engine's error when it did not take the message.
        """
        raise NotImplementedError

    async def apublish(self, channel: str, kind: str, data: bytes) -> str:
        """:meth:`publish` without blocking the event loop."""
        raise NotImplementedError

    async def run(self, channel: _Channel) -> None:
        """Read *channel* for this process until cancelled: call ``channel.set_ready(last_id)``
        once its position is known, then ``channel.dispatch(messages)`` for what arrives, and
        ``channel.gap(gap)`` for what was lost. Reconnect on errors by itself."""
        raise NotImplementedError

    async def history(
        self, channel: str, after: str, upto: str, count: int
    ) -> tuple[list[Message], bool]:
        """Up to *count* kept messages with ids in ``(after, upto]``, oldest first, and whether
        more are left in that range."""
        return [], False

    async def check_resume(self, channel: str, after: str, upto: str) -> Gap | None:
        """The gap a resume after *after* meets (messages no longer kept), or ``None``."""
        return Gap(channel, "no_history", after, upto, None)

    async def aclose(self) -> None:
        """Release what the backend holds for the running event loop (called when the app's
        workers stop, before :meth:`close`)."""

    def close(self) -> None:
        """Release what the backend holds (called when the app's workers stop)."""


def decode_payload(kind: bytes | str, data: bytes | str) -> str | bytes:
    """The message data of a stored ``(kind, data)`` payload: ``bytes`` for kind ``"b"``,
    else ``str`` (decoded as UTF-8).

    :raises UnicodeDecodeError: text that is not UTF-8.

    .. versionadded:: 0.1
    """
    if kind in (b"b", "b"):
        return data.encode("utf-8") if isinstance(data, str) else data
    return data if isinstance(data, str) else data.decode("utf-8")


class MemoryBackend(Backend):
    """This process only: the embedded default, for one worker.

    Keeps the last *maxlen* messages of each channel (so a client can resume within this
    process) and hands each published message to every event loop of the process that reads
    the channel. Thread-safe: publish from any thread.

    :param state: the broadcast's state for the app.
    :param maxlen: the messages kept per channel.

    .. versionadded:: 0.1
    """

    name = "memory"
    keeps_history = True

    def __init__(self, state: _State, maxlen: int) -> None:
        self.state = state
        self.maxlen = maxlen
        self._lock = threading.Lock()
        self._kept: dict[str, collections.deque[Message]] = {}
        self._last = (0, 0)

    def _next_id(self) -> str:
        ms = int(time.time() * 1000)
        last_ms, seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return f"{self._last[0]}-{self._last[1]}"

    def publish(self, channel: str, kind: str, data: bytes) -> str:
        value = decode_payload(kind, data)
        with self._lock:
            message = Message(channel, self._next_id(), value)
            kept = self._kept.get(channel)
            if kept is None:
                kept = self._kept[channel] = collections.deque(maxlen=self.maxlen)
            kept.append(message)
            # Queued (even on the hub's own thread) under the lock: every loop receives the
            # channel's messages in publish order.
            for hub in self.state.hubs():
                hub.call_soon(hub.deliver, channel, message, now=False)
        return message.id

    async def apublish(self, channel: str, kind: str, data: bytes) -> str:
        return self.publish(channel, kind, data)

    async def run(self, channel: _Channel) -> None:
        with self._lock:
            kept = self._kept.get(channel.name)
            channel.set_ready(kept[-1].id if kept else "0-0")
        await asyncio.Event().wait()  # deliveries come through _Hub.deliver

    def _range(self, channel: str, after: str, upto: str) -> list[Message]:
        low, high = parse_id(after), parse_id(upto)
        with self._lock:
            kept = list(self._kept.get(channel, ()))
        return [m for m in kept if low < parse_id(m.id) <= high]

    async def history(
        self, channel: str, after: str, upto: str, count: int
    ) -> tuple[list[Message], bool]:
        found = self._range(channel, after, upto)
        return found[:count], len(found) > count

    async def check_resume(self, channel: str, after: str, upto: str) -> Gap | None:
        with self._lock:
            kept = self._kept.get(channel)
            oldest = kept[0].id if kept else None
            full = kept is not None and len(kept) == kept.maxlen
        if oldest is not None and full and parse_id(oldest) > parse_id(after):
            return Gap(channel, "trimmed", after, None, None)
        return None
