"""The single-flight protocol of :mod:`carboy.scale.caching`, shared by sync and async callers.

:func:`_flight` is a generator that yields store operations and receives their results, so the
decisions (hit, stale, wait, take over, compute alone) are written once; :func:`_drive` and
:func:`_adrive` run it, blocking or awaiting. Nothing here does I/O itself.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import collections.abc as cabc
import hashlib
import inspect
import logging
import math
import threading
import time
import typing as t

from werkzeug.exceptions import HTTPException

from .caching_backends import BaseBackend, Entry, dumps, loads, new_token

logger = logging.getLogger("carboy.scale.caching")


def _wants_args(fn: t.Callable[..., t.Any]) -> bool:
    try:
        return bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False


def _true(fn: t.Callable[..., t.Any] | None, *args: t.Any, **kwargs: t.Any) -> bool:
    """Whether the callable (given the call's arguments if it takes any) returns ``True``."""
    if fn is None:
        return False
    return (fn(*args, **kwargs) if _wants_args(fn) else fn()) is True


class _Plan:
    """What one cached call decides before touching the store (shared by sync and async)."""

    __slots__ = (
        "accept",
        "etag",
        "keep",
        "key",
        "lock",
        "lock_ttl",
        "lock_wait",
        "stale_ttl",
        "timeout",
    )

    def __init__(
        self,
        key: str,
        timeout: int,
        stale_ttl: float,
        lock: bool,
        lock_ttl: float,
        lock_wait: float,
        etag: bool,
        accept: t.Callable[[t.Any], bool],
        keep: t.Callable[[t.Any], bool],
    ) -> None:
        self.key = key
        self.timeout = timeout
        self.stale_ttl = stale_ttl
        self.lock = lock
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        self.etag = etag
        self.accept = accept  # a hit's value is usable (cache_none, is_stale)
        self.keep = keep  # a computed value may be stored (response_filter)

    def decode(self, data: bytes | None) -> Entry | None:
        if data is None:
            return None
        try:
            value = loads(data)
        except Exception:  # a corrupt or foreign entry is a miss
            logger.warning("Unreadable cache entry %r: recomputing it.", self.key)
            return None
        entry = value if type(value) is Entry else Entry(value, None)
        return entry if self.accept(entry.value) else None

    def encode(self, rv: t.Any) -> tuple[Entry, bytes | None, int]:
        """The entry for a computed value, its bytes (``None``: not to be stored), and the
        store TTL in seconds (0: no expiry)."""
        timeout = self.timeout
        custom = getattr(rv, "cache_timeout", None)
        if custom is not None:
            timeout = custom
        if not self.keep(rv.get_response() if isinstance(rv, HTTPException) else rv):
            return Entry(rv, None), None, 0
        etag = None
        if self.etag and not isinstance(rv, HTTPException):
            etag = hashlib.sha256(dumps(rv)).hexdigest()[:32]
        entry = Entry(rv, etag)
        ttl = timeout + math.ceil(self.stale_ttl) if timeout else 0
        return entry, dumps(entry), ttl


_Op = tuple[t.Any, ...]
_Flight = cabc.Generator[_Op, t.Any, tuple[bool, Entry]]


def _flight(plan: _Plan, forced: bool) -> _Flight:
    """The single-flight protocol as a generator of store operations.

    It yields ``(operation, *args)`` (a backend method name, ``"sleep"`` or ``"compute"``) and
    is sent each result; the sync and async drivers only differ in how they wait. Returns
    ``(found, entry)``.
    """
    key = plan.key
    if not forced:
        data, left = yield ("entry", key, bool(plan.stale_ttl))
        entry = plan.decode(data)
        if entry is not None:
            if not plan.stale_ttl or left is None or left > plan.stale_ttl:
                return True, entry
            stale_token = new_token()  # stale: whoever takes the lock refreshes, others serve it
            got, fresh = yield ("lock", key, stale_token, plan.lock_ttl, plan.stale_ttl)
            if not got:
                return True, plan.decode(fresh) or entry
            return (yield from _compute(plan, stale_token))
    if not plan.lock or forced:
        return (yield from _compute(plan, None))
    token: str | None = new_token()
    deadline = time.monotonic() + plan.lock_wait
    delay = 0.005
    while True:
        got, fresh = yield ("lock", key, token, plan.lock_ttl, plan.stale_ttl)
        if fresh is not None:
            entry = plan.decode(fresh)
            if entry is not None:  # filled since we looked: no recompute
                return True, entry
            token = None  # a fresh entry this caller rejects (is_stale): recompute alone
            break
        if got is None:  # the store cannot coordinate (outage): compute alone
            token = None
            break
        if got:
            break
        released = False
        while time.monotonic() < deadline:
            yield ("sleep", delay)
            delay = min(delay * 2, 0.05)
            data, held = yield ("poll", key)
            entry = plan.decode(data)
            if entry is not None:
                return True, entry
            if not held:  # holder finished without storing, or died: try to take over
                released = True
                break
        if not released:  # waited CACHE_LOCK_WAIT: compute rather than hang
            token = None
            break
    return (yield from _compute(plan, token))


def _compute(plan: _Plan, token: str | None) -> _Flight:
    try:
        rv = yield ("compute", token, plan.key, plan.lock_ttl)
    except BaseException:
        if token is not None:
            yield ("unlock", plan.key, token)
        raise
    entry, data, ttl = plan.encode(rv)
    if data is not None:
        yield ("fill", plan.key, data, ttl, token)
    elif token is not None:
        yield ("unlock", plan.key, token)
    return False, entry


def _renew_every(ttl: float) -> float:
    """How often a holder renews its lock: three times per TTL, so one late renewal is fine."""
    return max(ttl / 3, 0.01)


def _renewing(backend: BaseBackend, key: str, token: str, ttl: float) -> threading.Event:
    """Renew *token*'s lock on *key* from a daemon thread until the returned event is set."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(_renew_every(ttl)):
            backend.extend(key, token, ttl)

    threading.Thread(target=renew, name="carboy-cache-lock", daemon=True).start()
    return done


async def _arenew(backend: BaseBackend, key: str, token: str, ttl: float) -> None:
    while True:
        await asyncio.sleep(_renew_every(ttl))
        await backend.aextend(key, token, ttl)


def _drive(flight: _Flight, backend: BaseBackend, compute: t.Callable[[], t.Any]) -> t.Any:
    sent: t.Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flight.send(sent) if error is None else flight.throw(error)
        except StopIteration as stop:
            return stop.value
        sent = error = None
        try:
            if op[0] == "compute":
                if op[1] is None:
                    sent = compute()
                else:  # PERF: only a lock holder pays for the renewing thread (misses only)
                    done = _renewing(backend, op[2], op[1], op[3])
                    try:
                        sent = compute()
                    finally:
                        done.set()
            elif op[0] == "sleep":
                time.sleep(op[1])
            else:
                sent = getattr(backend, op[0])(*op[1:])
        except BaseException as e:
            error = e


async def _adrive(
    flight: _Flight, backend: BaseBackend, compute: t.Callable[[], t.Awaitable[t.Any]]
) -> t.Any:
    sent: t.Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flight.send(sent) if error is None else flight.throw(error)
        except StopIteration as stop:
            return stop.value
        sent = error = None
        try:
            if op[0] == "compute":
                if op[1] is None:
                    sent = await compute()
                else:
                    renew = asyncio.ensure_future(_arenew(backend, op[2], op[1], op[3]))
                    try:
                        sent = await compute()
                    finally:
                        renew.cancel()
            elif op[0] == "sleep":
                await asyncio.sleep(op[1])
            else:
                sent = await getattr(backend, "a" + op[0])(*op[1:])
        except BaseException as e:
            error = e


def _join(rv: t.Any) -> t.Any:
    if inspect.isgenerator(rv):
        chunks: list[t.Any] = list(rv)
        if all(isinstance(c, str) for c in chunks):
            return "".join(chunks)
        if all(isinstance(c, bytes) for c in chunks):
            return b"".join(chunks)
        return chunks
    return rv
