"""The stores behind :class:`carboy.scale.caching.Cache`: in-process, Redis, and none.

Every backend speaks the same small interface of serialized bytes (``get``/``set`` of
:func:`dumps` output, per-key locks for single-flight recomputes, ``fill`` that stores an entry
and releases its lock in one step), sync and async. The async methods of the in-process and
null backends call the sync ones (they do no I/O); :class:`RedisCache` uses the asyncio client
of the app's :class:`~carboy.scale.connection.RedisConnection`, so nothing blocks a loop.

Serialization is Flask-Caching's (cachelib's) Redis format, so both can read each other's plain
values: an ``int`` is stored as its decimal digits (so ``INCRBY`` works on it), anything else as
``b"!"`` followed by a :mod:`pickle`. Unpickling runs code named by the data: the cache's Redis
must be trusted (reachable only by the app's workers), as with Flask-Caching.

Outage (:class:`RedisCache`): any :class:`redis.RedisError` is logged once, and the call fails
open: a read is a miss, a write or lock is skipped. For 0.25 s after a failure the backend does
not call Redis at all (so a dead server costs one timeout, not one per call), then tries again.

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
import typing as t
import uuid
import weakref
from collections import OrderedDict
from importlib import resources

if t.TYPE_CHECKING:
    import redis

    from .connection import RedisConnection

__all__ = ["BaseBackend", "Entry", "NullCache", "RedisCache", "SimpleCache", "dumps", "loads"]

logger = logging.getLogger("carboy.scale.caching")

#: After a Redis failure, skip Redis for this many seconds (the breaker), then try again.
RETRY_AFTER = 0.25


class Entry(t.NamedTuple):
    """What the cache decorators store: the value and the ETag derived from its bytes."""

    value: t.Any
    etag: str | None


def dumps(value: t.Any) -> bytes:
    """Serialize *value* in cachelib's Redis format (an ``int`` as digits, else ``!``, then
    a pickle)."""
    if type(value) is int:
        return str(value).encode()
    return b"!" + pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def loads(data: bytes | None) -> t.Any:
    """The value :func:`dumps` serialized (``None`` for ``None``).

    :raises pickle.UnpicklingError: and others, for bytes that are not a valid pickle.
    """
    if data is None:
        return None
    if data[:1] == b"!":
        return pickle.loads(data[1:])
    try:
        return int(data)
    except ValueError:
        return data


def new_token() -> str:
    return uuid.uuid4().hex


def _ttl_ms(timeout: float | None) -> int:
    """Milliseconds for a timeout in seconds; 0 (or ``None``) means no expiry."""
    return 0 if not timeout else max(1, int(timeout * 1000))


class BaseBackend:
    """The interface; keys given to it are the user's keys, the backend adds the prefix.

    :param key_prefix: prepended to every key (``CACHE_KEY_PREFIX``).
    :param default_timeout: seconds for a ``timeout=None`` write (0: no expiry).
    """

    #: Whether locks coordinate more than this process (a shared store).
    shared = False

    def __init__(self, key_prefix: str = "", default_timeout: int = 300) -> None:
        self.key_prefix = key_prefix
        self.default_timeout = default_timeout

    def _timeout(self, timeout: float | None) -> float:
        return self.default_timeout if timeout is None else timeout

    # The plain key-value API: bytes in, bytes out.
    def get(self, key: str) -> bytes | None:
        return None

    def get_many(self, keys: t.Sequence[str]) -> list[bytes | None]:
        return [self.get(k) for k in keys]

    def set(self, key: str, data: bytes, timeout: float | None = None) -> bool:
        return False

    def add(self, key: str, data: bytes, timeout: float | None = None) -> bool:
        return False

    def set_many(self, mapping: t.Mapping[str, bytes], timeout: float | None = None) -> list[str]:
        return [k for k, v in mapping.items() if self.set(k, v, timeout)]

    def delete(self, key: str) -> bool:
        return False

    def delete_many(self, keys: t.Sequence[str]) -> list[str]:
        return [k for k in keys if self.delete(k)]

    def has(self, key: str) -> bool:
        return False

    def clear(self) -> bool:
        return False

    def inc(self, key: str, delta: int) -> int | None:
        return None

    # The single-flight API.
    def entry(self, key: str, ttl: bool = True) -> tuple[bytes | None, float | None]:
        """The stored bytes and the seconds left before they expire (``None``: no expiry, or
        not asked for: *ttl* false)."""
        return None, None

    def lock(
        self, key: str, token: str, ttl: float, stale: float
    ) -> tuple[bool | None, bytes | None]:
        """Take *key*'s recompute lock for *ttl* seconds unless the entry is fresh (more
        than *stale* seconds left), in one step.

        Returns ``(taken, fresh)``: ``(False, bytes)`` with the entry when it is fresh (a
        caller filled it since this one looked), ``(True, None)`` if taken, ``(False, None)``
        if another caller holds it, ``(None, None)`` if the store cannot tell (outage: compute
        without coordination).
        """
        return None, None

    def poll(self, key: str) -> tuple[bytes | None, bool]:
        """The stored bytes, and whether *key*'s lock is still held."""
        return None, False

    def fill(self, key: str, data: bytes, timeout: float | None, token: str | None) -> None:
        """Store *data* for *timeout* seconds (0: no expiry) and release the lock *token*."""

    def unlock(self, key: str, token: str) -> None:
        """Release *key*'s lock if *token* still holds it."""

    def extend(self, key: str, token: str, ttl: float) -> None:
        """Give *key*'s lock *ttl* more seconds if *token* still holds it (a holder that is
        still computing renews its lock; one that died stops, and its lock expires)."""

    async def aextend(self, key: str, token: str, ttl: float) -> None:
        self.extend(key, token, ttl)

    # Async twins: stores without I/O answer at once.
    async def aentry(self, key: str, ttl: bool = True) -> tuple[bytes | None, float | None]:
        return self.entry(key, ttl)

    async def alock(
        self, key: str, token: str, ttl: float, stale: float
    ) -> tuple[bool | None, bytes | None]:
        return self.lock(key, token, ttl, stale)

    async def apoll(self, key: str) -> tuple[bytes | None, bool]:
        return self.poll(key)

    async def afill(self, key: str, data: bytes, timeout: float | None, token: str | None) -> None:
        self.fill(key, data, timeout, token)

    async def aunlock(self, key: str, token: str) -> None:
        self.unlock(key, token)


class NullCache(BaseBackend):
    """Stores nothing: every read is a miss, every view computes (``CACHE_TYPE="NullCache"``)."""


class SimpleCache(BaseBackend):
    """An in-process store for one worker (``CACHE_TYPE="SimpleCache"``), thread-safe.

    It holds at most *threshold* entries: when full, expired entries are dropped first, then
    the oldest written. Values are kept serialized, so a caller mutating what it got back
    cannot change what the next caller gets. Locks are per process.

    :param threshold: the most entries kept (``CACHE_THRESHOLD``, 500); 0 means no bound.
    """

    def __init__(self, key_prefix: str = "", default_timeout: int = 300, threshold: int = 500):
        super().__init__(key_prefix, default_timeout)
        self.threshold = threshold
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._locks: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()

    def _expiry(self, timeout: float | None) -> float:
        seconds = self._timeout(timeout)
        return time.monotonic() + seconds if seconds else 0.0

    def _live(self, key: str, now: float) -> tuple[float, bytes] | None:
        item = self._data.get(self.key_prefix + key)
        if item is None:
            return None
        if item[0] and item[0] <= now:
            del self._data[self.key_prefix + key]
            return None
        return item

    def _store(self, key: str, data: bytes, timeout: float | None) -> None:
        full = self.key_prefix + key
        self._data.pop(full, None)
        if self.threshold and len(self._data) >= self.threshold:
            now = time.monotonic()
            for k in [k for k, (exp, _) in self._data.items() if exp and exp <= now]:
                del self._data[k]
            while len(self._data) >= self.threshold:
                self._data.popitem(last=False)
        self._data[full] = (self._expiry(timeout), data)

    def get(self, key: str) -> bytes | None:
        with self._mutex:
            item = self._live(key, time.monotonic())
        return None if item is None else item[1]

    def set(self, key: str, data: bytes, timeout: float | None = None) -> bool:
        with self._mutex:
            self._store(key, data, timeout)
        return True

    def add(self, key: str, data: bytes, timeout: float | None = None) -> bool:
        with self._mutex:
            if self._live(key, time.monotonic()) is not None:
                return False
            self._store(key, data, timeout)
        return True

    def delete(self, key: str) -> bool:
        with self._mutex:
            return self._data.pop(self.key_prefix + key, None) is not None

    def has(self, key: str) -> bool:
        with self._mutex:
            return self._live(key, time.monotonic()) is not None

    def clear(self) -> bool:
        with self._mutex:
            self._data.clear()
            self._locks.clear()
        return True

    def inc(self, key: str, delta: int) -> int | None:
        with self._mutex:
            item = self._live(key, time.monotonic())
            current = 0 if item is None else loads(item[1])
            if type(current) is not int:
                raise ValueError(f"The cache value of {key!r} is not an integer.")
            value = current + delta
            expiry = 0.0 if item is None else item[0]
            self._data[self.key_prefix + key] = (expiry, dumps(value))
            return value

    def entry(self, key: str, ttl: bool = True) -> tuple[bytes | None, float | None]:
        now = time.monotonic()
        with self._mutex:
            item = self._live(key, now)
        if item is None:
            return None, None
        return item[1], (item[0] - now if item[0] else None)

    def lock(
        self, key: str, token: str, ttl: float, stale: float
    ) -> tuple[bool | None, bytes | None]:
        now = time.monotonic()
        with self._mutex:
            item = self._live(key, now)
            if item is not None and (not item[0] or item[0] - now > stale):
                return False, item[1]
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                return False, None
            self._locks[key] = (token, now + ttl)
            return True, None

    def poll(self, key: str) -> tuple[bytes | None, bool]:
        now = time.monotonic()
        with self._mutex:
            item = self._live(key, now)
            held = self._locks.get(key)
            return (None if item is None else item[1]), held is not None and held[1] > now

    def fill(self, key: str, data: bytes, timeout: float | None, token: str | None) -> None:
        with self._mutex:
            self._store(key, data, timeout)
            if token is not None:
                self._release(key, token)

    def unlock(self, key: str, token: str) -> None:
        with self._mutex:
            self._release(key, token)

    def extend(self, key: str, token: str, ttl: float) -> None:
        with self._mutex:
            held = self._locks.get(key)
            if held is not None and held[0] == token:
                self._locks[key] = (token, time.monotonic() + ttl)

    def _release(self, key: str, token: str) -> None:
        held = self._locks.get(key)
        if held is not None and held[0] == token:
            del self._locks[key]


def _script_source(name: str) -> str:
    return resources.files("carboy.scale").joinpath(f"lua/{name}.lua").read_text("utf-8")


def _has_tag(key: str) -> bool:
    """Whether Redis Cluster hashes *key* by a ``{...}`` tag (a non-empty one)."""
    start = key.find("{")
    return start != -1 and key.find("}", start + 1) > start + 1


def lock_key(full_key: str) -> str:
    """The lock's key for an entry's (prefixed) key, in the entry's Redis Cluster hash slot
    when that can be done (see :func:`lock_shares_slot`).

    A key hashed by its tag keeps the tag when a suffix is added; a key hashed whole is in the
    same slot as ``{key}:lock`` if it has no ``}``.
    """
    if _has_tag(full_key) or "}" in full_key:
        return full_key + ":lock"
    return "{" + full_key + "}:lock"


def lock_shares_slot(full_key: str) -> bool:
    """Whether :func:`lock_key` is in *full_key*'s slot: false only for a key with a ``}``
    but no tag (such as ``a}b``), whose lock is then released in a second step on a cluster."""
    return _has_tag(full_key) or "}" not in full_key


class RedisCache(BaseBackend):
    """The Redis store (``CACHE_TYPE="RedisCache"``): every worker and host shares it.

    :param connection: the :class:`~carboy.scale.connection.RedisConnection` whose clients
        (sync, and asyncio per event loop) it uses, with the layer's timeouts.
    """

    shared = True

    def __init__(
        self, connection: RedisConnection, key_prefix: str = "", default_timeout: int = 300
    ) -> None:
        from .connection import execute  # redis-py is imported only by apps that use Redis

        super().__init__(key_prefix, default_timeout)
        self.connection = connection
        self._execute = execute
        self._down_until = 0.0
        self._logged = False
        self._sources = {
            name: _script_source(name)
            for name in ("cache_lock", "cache_fill", "cache_unlock", "cache_extend")
        }
        self._scripts: weakref.WeakKeyDictionary[t.Any, dict[str, t.Any]] = (
            weakref.WeakKeyDictionary()
        )

    # -- outage handling -------------------------------------------------------------------
    def _up(self) -> bool:
        # PERF: one float compare per call while Redis is healthy.
        return self._down_until == 0.0 or time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER
        if not self._logged:
            self._logged = True
            logger.warning(
                "Redis cache unavailable (%s): cached views compute without the cache until"
                " it answers again.",
                error,
            )

    def _ok(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            if self._logged:
                self._logged = False
                logger.warning("Redis cache answers again.")

    def _call(self, default: t.Any, fn: t.Callable[[redis.Redis], t.Any]) -> t.Any:
        import redis

        if not self._up():
            return default
        try:
            result = fn(self.connection.sync)
        except redis.RedisError as e:
            self._failed(e)
            return default
        self._ok()
        return result

    async def _acall(self, default: t.Any, fn: t.Callable[[t.Any], t.Awaitable[t.Any]]) -> t.Any:
        import redis

        if not self._up():
            return default
        try:
            result = await fn(self.connection.aio)
        except (TimeoutError, redis.RedisError) as e:
            self._failed(e)
            return default
        self._ok()
        return result

    def _script(self, client: t.Any, name: str) -> t.Any:
        scripts = self._scripts.get(client)
        if scripts is None:
            scripts = self._scripts[client] = {}
        script = scripts.get(name)
        if script is None:
            script = scripts[name] = client.register_script(self._sources[name])
        return script

    # -- plain API ------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        return t.cast("bytes | None", self._call(None, lambda r: r.get(self.key_prefix + key)))

    def get_many(self, keys: t.Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        full = [self.key_prefix + k for k in keys]
        if self.connection.is_cluster:  # keys in many slots: one GET each
            return [self.get(k) for k in keys]
        return t.cast("list[bytes | None]", self._call([None] * len(keys), lambda r: r.mget(full)))

    def set(self, key: str, data: bytes, timeout: float | None = None) -> bool:
        ms = _ttl_ms(self._timeout(timeout))
        full = self.key_prefix + key
        return bool(self._call(False, lambda r: r.set(full, data, px=ms or None)))

    def add(self, key: str, data: bytes, timeout: float | None = None) -> bool:
        ms = _ttl_ms(self._timeout(timeout))
        full = self.key_prefix + key
        return bool(self._call(False, lambda r: r.set(full, data, px=ms or None, nx=True)))

    def set_many(self, mapping: t.Mapping[str, bytes], timeout: float | None = None) -> list[str]:
        if not mapping:
            return []
        ms = _ttl_ms(self._timeout(timeout))

        def run(r: redis.Redis) -> list[str]:
            pipe = r.pipeline(transaction=False)
            for k, v in mapping.items():
                pipe.set(self.key_prefix + k, v, px=ms or None)
            return [k for k, ok in zip(mapping, pipe.execute(), strict=True) if ok]

        return t.cast("list[str]", self._call([], run))

    def delete(self, key: str) -> bool:
        return bool(self._call(0, lambda r: r.delete(self.key_prefix + key)))

    def delete_many(self, keys: t.Sequence[str]) -> list[str]:
        if not keys:
            return []

        def run(r: redis.Redis) -> list[str]:
            pipe = r.pipeline(transaction=False)
            for k in keys:
                pipe.delete(self.key_prefix + k)
            return [k for k, n in zip(keys, pipe.execute(), strict=True) if n]

        return t.cast("list[str]", self._call([], run))

    def has(self, key: str) -> bool:
        return bool(self._call(0, lambda r: r.exists(self.key_prefix + key)))

    def clear(self) -> bool:
        """Delete every key with this cache's prefix (``SCAN``; all keys if the prefix is "")."""

        def run(r: redis.Redis) -> bool:
            if not self.key_prefix:
                return bool(r.flushdb())
            keys = list(r.scan_iter(match=_glob_escape(self.key_prefix) + "*", count=500))
            for start in range(0, len(keys), 500):
                pipe = r.pipeline(transaction=False)
                for k in keys[start : start + 500]:
                    pipe.delete(k)
                pipe.execute()
            return True

        return bool(self._call(False, run))

    def inc(self, key: str, delta: int) -> int | None:
        return t.cast(
            "int | None", self._call(None, lambda r: r.incrby(self.key_prefix + key, delta))
        )

    # -- single flight --------------------------------------------------------------------
    def _entry_pipe(self, r: t.Any, full: str) -> t.Any:
        pipe = r.pipeline(transaction=False)
        pipe.get(full)
        pipe.pttl(full)
        return pipe

    @staticmethod
    def _entry_result(result: list[t.Any]) -> tuple[bytes | None, float | None]:
        data = result[0]
        if data is None or len(result) == 1:
            return data, None
        pttl = result[1]
        return data, (pttl / 1000 if pttl is not None and pttl >= 0 else None)

    def entry(self, key: str, ttl: bool = True) -> tuple[bytes | None, float | None]:
        full = self.key_prefix + key
        # PERF: a cache without stale-while-revalidate never looks at the TTL: one command.
        commands = [("GET", full), ("PTTL", full)] if ttl else [("GET", full)]
        result = self._call(None, lambda r: _raise_any(self._execute(r, commands)))
        return (None, None) if result is None else self._entry_result(result)

    async def aentry(self, key: str, ttl: bool = True) -> tuple[bytes | None, float | None]:
        full = self.key_prefix + key
        if not ttl:
            data = await self._acall(None, lambda r: r.get(full))
            return data, None
        result = await self._acall(None, lambda r: self._entry_pipe(r, full).execute())
        return (None, None) if result is None else self._entry_result(result)

    @staticmethod
    def _lock_result(result: t.Any) -> tuple[bool | None, bytes | None]:
        if result is None:
            return None, None
        if result[0] == 2:
            return False, result[1]
        return result[0] == 1, None

    def lock(
        self, key: str, token: str, ttl: float, stale: float
    ) -> tuple[bool | None, bytes | None]:
        full = self.key_prefix + key
        ms = _ttl_ms(ttl)
        keys, args = [full, lock_key(full)], [token, ms, int(stale * 1000)]
        if self._split(key):  # two steps: take the lock, then look at the entry again
            taken = self._call(None, lambda r: r.set(keys[1], token, px=ms, nx=True))
            if not taken:
                return (None if taken is None else False), None
            data, left = self.entry(key)
            if data is not None and (left is None or left > stale):
                self.unlock(key, token)
                return False, data
            return True, None
        result = self._call(None, lambda r: self._script(r, "cache_lock")(keys=keys, args=args))
        return self._lock_result(result)

    async def alock(
        self, key: str, token: str, ttl: float, stale: float
    ) -> tuple[bool | None, bytes | None]:
        full = self.key_prefix + key
        ms = _ttl_ms(ttl)
        keys, args = [full, lock_key(full)], [token, ms, int(stale * 1000)]
        if self._split(key):
            taken = await self._acall(None, lambda r: r.set(keys[1], token, px=ms, nx=True))
            if not taken:
                return (None if taken is None else False), None
            data, left = await self.aentry(key)
            if data is not None and (left is None or left > stale):
                await self.aunlock(key, token)
                return False, data
            return True, None
        result = await self._acall(
            None, lambda r: self._script(r, "cache_lock")(keys=keys, args=args)
        )
        return self._lock_result(result)

    def _poll_pipe(self, r: t.Any, full: str) -> t.Any:
        pipe = r.pipeline(transaction=False)
        pipe.get(full)
        pipe.exists(lock_key(full))
        return pipe

    def poll(self, key: str) -> tuple[bytes | None, bool]:
        full = self.key_prefix + key
        result = self._call(None, lambda r: self._poll_pipe(r, full).execute())
        return (None, False) if result is None else (result[0], bool(result[1]))

    async def apoll(self, key: str) -> tuple[bytes | None, bool]:
        full = self.key_prefix + key
        result = await self._acall(None, lambda r: self._poll_pipe(r, full).execute())
        return (None, False) if result is None else (result[0], bool(result[1]))

    def _fill_args(
        self, key: str, data: bytes, timeout: float | None, token: str | None
    ) -> tuple[list[str], list[t.Any]]:
        full = self.key_prefix + key
        return [full, lock_key(full)], [data, _ttl_ms(self._timeout(timeout)), token or ""]

    def _split(self, key: str) -> bool:
        """Whether the fill must be two steps (a cluster key whose lock is in another slot)."""
        return not lock_shares_slot(self.key_prefix + key) and self.connection.is_cluster

    def fill(self, key: str, data: bytes, timeout: float | None, token: str | None) -> None:
        if self._split(key):
            self.set(key, data, timeout)
            if token is not None:
                self.unlock(key, token)
            return
        keys, args = self._fill_args(key, data, timeout, token)
        self._call(None, lambda r: self._script(r, "cache_fill")(keys=keys, args=args))

    async def afill(self, key: str, data: bytes, timeout: float | None, token: str | None) -> None:
        keys, args = self._fill_args(key, data, timeout, token)
        if self._split(key):
            ms = args[1]
            await self._acall(None, lambda r: r.set(keys[0], data, px=ms or None))
            if token is not None:
                await self.aunlock(key, token)
            return
        await self._acall(None, lambda r: self._script(r, "cache_fill")(keys=keys, args=args))

    def unlock(self, key: str, token: str) -> None:
        lk = lock_key(self.key_prefix + key)
        self._call(None, lambda r: self._script(r, "cache_unlock")(keys=[lk], args=[token]))

    async def aunlock(self, key: str, token: str) -> None:
        lk = lock_key(self.key_prefix + key)
        await self._acall(None, lambda r: self._script(r, "cache_unlock")(keys=[lk], args=[token]))

    def extend(self, key: str, token: str, ttl: float) -> None:
        lk, args = lock_key(self.key_prefix + key), [token, _ttl_ms(ttl)]
        self._call(None, lambda r: self._script(r, "cache_extend")(keys=[lk], args=args))

    async def aextend(self, key: str, token: str, ttl: float) -> None:
        lk, args = lock_key(self.key_prefix + key), [token, _ttl_ms(ttl)]
        await self._acall(None, lambda r: self._script(r, "cache_extend")(keys=[lk], args=args))


def _raise_any(replies: list[t.Any]) -> list[t.Any]:
    """*replies*, or the first error reply among them raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _glob_escape(text: str) -> str:
    """*text* with Redis glob specials escaped, for ``SCAN MATCH``."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
