"""Rate-limit storage on the app's Redis, on the Redis server's clock.

Two pieces, both over the same keys and data as the :mod:`limits` library's
:class:`~limits.storage.RedisStorage`, so limits' strategies read and clear what they write:

* :class:`ServerClockRedisStorage`, a :class:`limits.storage.RedisStorage` whose moving-window
  steps read the time with ``TIME`` on the server (limits passes each host's ``time.time()``,
  so hosts whose clocks differ would disagree about which entries are in a window). The fixed
  and sliding windows already run on server TTLs and are limits' own.
* :class:`LimitScript`: every limit of one request in one call of ``check_limits.lua`` (one
  round trip), returning for each limit whether it was allowed, what remains and when the
  window frees an entry, so the rate-limit headers cost no further round trip.

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
import os
import typing as t
from importlib import resources

import redis
from limits.storage import RedisStorage
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from .connection import execute

if t.TYPE_CHECKING:
    from limits import RateLimitItem

    from .connection import RedisConnection

__all__ = ["LimitScript", "ServerClockRedisStorage", "lua_source"]

#: The one-letter kind ``check_limits.lua`` takes for each limits strategy name.
KINDS = {"fixed-window": "f", "moving-window": "m", "sliding-window-counter": "s"}


def lua_source(name: str) -> str:
    """The text of ``carboy/scale/lua/<name>.lua``."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


class _ProcessScript(Script):
    """A redis-py script whose client is the connection layer's client of this process (so a
    storage made before a fork runs its scripts on the child's own connections)."""

    def __init__(self, connection: RedisConnection, source: str | bytes) -> None:
        self._connection = connection
        super().__init__(None, source)  # type: ignore[arg-type]

    @property
    def registered_client(self) -> t.Any:
        return self._connection.sync

    @registered_client.setter
    def registered_client(self, value: t.Any) -> None:
        """Ignored: the client is always the layer's."""


class ServerClockRedisStorage(RedisStorage):
    """limits' Redis storage over a :class:`~carboy.scale.connection.RedisConnection`, with
    the moving window on the server's clock.

    :param connection: the Redis layer whose sync client (per process) the storage uses.
    :param key_prefix: the prefix of every key (limits' default ``"LIMITS"``).

    Not registered under a URL scheme: :class:`~carboy.scale.limiter.Limiter` passes it
    directly.

    .. versionadded:: 0.1
    """

    # No STORAGE_SCHEME in this body: limits' registry keeps "redis://" for its own class.

    def __init__(self, connection: RedisConnection, key_prefix: str = RedisStorage.PREFIX) -> None:
        # RedisStorage.__init__ would make its own client from a URL: the layer's is used.
        self.wrap_exceptions = False
        self.key_prefix = key_prefix
        self.target_server = "redis"
        self.connection = connection
        # limits' own scripts for the steps that already run on the server's clock; carboy's
        # for the moving window.
        self.lua_sliding_window = _ProcessScript(connection, self.SCRIPT_SLIDING_WINDOW)
        self.lua_acquire_sliding_window = _ProcessScript(
            connection, self.SCRIPT_ACQUIRE_SLIDING_WINDOW
        )
        self.lua_incr_expire = _ProcessScript(connection, self.SCRIPT_INCR_EXPIRE)
        self.lua_clear_keys = _ProcessScript(connection, self.SCRIPT_CLEAR_KEYS)
        self.lua_moving_window = _ProcessScript(connection, lua_source("moving_window_read"))
        self.lua_acquire_moving_window = _ProcessScript(
            connection, lua_source("moving_window_acquire")
        )

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return redis.RedisError

    def initialize_storage(self, _uri: str) -> None:
        """Nothing to do: scripts are registered with each process's client on first use."""

    def get_connection(self, readonly: bool = False) -> t.Any:
        return self.connection.sync

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """``(start of the window, entries in it)``; an empty window starts now (the server's
        now, read with ``TIME`` like the entries)."""
        oldest, count, _now = self.lua_moving_window([self.prefixed_key(key)], [expiry, limit])
        return float(oldest), int(count)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Take *amount* entries of the moving window at the server's time, if they fit."""
        taken = self.lua_acquire_moving_window([self.prefixed_key(key)], [limit, expiry, amount])
        return bool(taken)


class LimitScript:
    """``check_limits.lua``: every limit of a request in one round trip, sync or asyncio.

    :param connection: the Redis layer (its sync client, or its asyncio client for the
        running loop).
    :param strategy: a limits strategy name (``fixed-window``, ``moving-window``,
        ``sliding-window-counter``).
    :param key_prefix: the storage's key prefix (limits' ``"LIMITS"``).

    .. versionadded:: 0.1
    """

    def __init__(self, connection: RedisConnection, strategy: str, key_prefix: str) -> None:
        if strategy not in KINDS:
            raise ValueError(f"Unknown rate-limit strategy {strategy!r}: use one of {list(KINDS)}.")
        self.connection = connection
        self.kind = KINDS[strategy]
        self.key_prefix = key_prefix
        self.source = lua_source("check_limits")
        self.sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        self._pid = 0
        self._cluster: bool | None = None

    def keys_for(self, key: str) -> list[str]:
        """The Redis keys of one limit's key (limits' layout: two for the sliding window)."""
        prefix = self.key_prefix
        if self.kind == "s":
            return [f"{prefix}:{{{key}}}/-1", f"{prefix}:{{{key}}}"]
        return [f"{prefix}:{key}"]

    def _batches(
        self, calls: t.Sequence[tuple[RateLimitItem, str, int, bool]], stop_on_breach: bool
    ) -> list[tuple[list[str], list[t.Any]]]:
        """The script calls for *calls* (``(item, key, cost, hit)``): one, or one per limit
        on a cluster (the keys of different limits may live on different nodes)."""
        if self._cluster is None or self._pid != os.getpid():
            self._cluster = self.connection.is_cluster
            self._pid = os.getpid()
        batches: list[tuple[list[str], list[t.Any]]] = []
        keys: list[str] = []
        args: list[t.Any] = [1 if stop_on_breach else 0]
        for item, key, cost, hit in calls:
            if self._cluster and keys:
                batches.append((keys, args))
                keys, args = [], [0]
            keys.extend(self.keys_for(key))
            args.extend((self.kind, item.amount, item.get_expiry(), cost, "h" if hit else "t"))
        batches.append((keys, args))
        return batches

    @staticmethod
    def _results(replies: list[list[int]]) -> list[tuple[int, int, float]]:
        flat = [int(v) for reply in replies for v in reply]
        return [(flat[i], flat[i + 1], flat[i + 2] / 1000) for i in range(0, len(flat), 3)]

    def check(
        self,
        calls: t.Sequence[tuple[RateLimitItem, str, int, bool]],
        stop_on_breach: bool,
        prefetch: t.Sequence[t.Any] = (),
    ) -> list[tuple[int, int, float]]:
        """Run the script for *calls* with the sync client: per limit ``(status, remaining,
        seconds until an entry frees)``, status 1 allowed, 0 breached, -1 not evaluated.

        :param prefetch: objects whose ``_prefetch(client)`` may give one more script call
            ``(sha, keys, args)`` to send in the same round trip (a server-side session's
            load); its reply goes to their ``_prefetched_reply(reply)``, an error reply to
            nobody (they then make the call themselves). Not on a cluster.
        :raises redis.RedisError: Redis did not answer (the caller applies its outage policy).
        """
        client = self.connection.sync
        batches = self._batches(calls, stop_on_breach)
        if prefetch and len(batches) == 1 and not self._cluster:
            wanted = [(p, call) for p in prefetch if (call := p._prefetch(client)) is not None]
            if wanted:
                return self._results([self._check_with(client, batches[0], wanted)])
        replies: list[list[int]] = []
        breached = False
        for keys, args in batches:
            if breached and stop_on_breach:
                replies.append([-1, 0, 0])
                continue
            reply = execute(client, [("EVALSHA", self.sha, len(keys), *keys, *args)])[0]
            if isinstance(reply, NoScriptError):
                client.script_load(self.source)
                reply = client.evalsha(self.sha, len(keys), *keys, *args)
            elif isinstance(reply, Exception):
                raise reply
            breached = breached or 0 in reply[0::3]
            replies.append(reply)
        return self._results(replies)

    def _check_with(
        self,
        client: t.Any,
        batch: tuple[list[str], list[t.Any]],
        wanted: list[tuple[t.Any, tuple[str, list[str], list[t.Any]]]],
    ) -> list[int]:
        """The limits' script call and the *wanted* calls, pipelined: one round trip."""
        keys, args = batch
        commands = [("EVALSHA", self.sha, len(keys), *keys, *args)]
        for _owner, (sha, their_keys, their_args) in wanted:
            commands.append(("EVALSHA", sha, len(their_keys), *their_keys, *their_args))
        replies = execute(client, commands)
        for (owner, _call), reply in zip(wanted, replies[1:], strict=True):
            if not isinstance(reply, Exception):
                owner._prefetched_reply(reply)
        reply = replies[0]
        if isinstance(reply, NoScriptError):
            client.script_load(self.source)
            reply = client.evalsha(self.sha, len(keys), *keys, *args)
        elif isinstance(reply, Exception):
            raise reply
        return t.cast(list[int], reply)

    async def acheck(
        self,
        calls: t.Sequence[tuple[RateLimitItem, str, int, bool]],
        stop_on_breach: bool,
        prefetch: t.Sequence[t.Any] = (),
    ) -> list[tuple[int, int, float]]:
        """:meth:`check` with the asyncio client of the running loop (never blocks it); the
        *prefetch* objects' ``_aprefetch(client)`` give their calls, as :meth:`check`'s do."""
        client = self.connection.aio
        batches = self._batches(calls, stop_on_breach)
        if prefetch and len(batches) == 1 and not self._cluster:
            wanted = [(p, call) for p in prefetch if (call := p._aprefetch(client)) is not None]
            if wanted:
                return self._results([await self._acheck_with(client, batches[0], wanted)])
        replies: list[list[int]] = []
        breached = False
        for keys, args in batches:
            if breached and stop_on_breach:
                replies.append([-1, 0, 0])
                continue
            try:
                reply = await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
            except NoScriptError:
                await client.script_load(self.source)
                reply = await client.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
            breached = breached or 0 in reply[0::3]
            replies.append(reply)
        return self._results(replies)

    async def _acheck_with(
        self,
        client: t.Any,
        batch: tuple[list[str], list[t.Any]],
        wanted: list[tuple[t.Any, tuple[str, list[str], list[t.Any]]]],
    ) -> list[int]:
        """:meth:`_check_with` on the asyncio *client*: one round trip."""
        keys, args = batch
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(self.sha, len(keys), *keys, *args)
        for _owner, (sha, their_keys, their_args) in wanted:
            pipe.evalsha(sha, len(their_keys), *their_keys, *their_args)
        replies = await pipe.execute(raise_on_error=False)
        for (owner, _call), reply in zip(wanted, replies[1:], strict=True):
            if not isinstance(reply, Exception):
                owner._prefetched_reply(reply)
        reply = replies[0]
        if isinstance(reply, NoScriptError):
            await client.script_load(self.source)
            reply = await client.evalsha(self.sha, len(keys), *keys, *args)
        elif isinstance(reply, Exception):
            raise reply
        return t.cast(list[int], reply)
