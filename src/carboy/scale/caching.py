"""A cache with Flask-Caching's API that recomputes a missing value once, on every host.

:class:`Cache` keeps Flask-Caching 2.x's names and ``CACHE_*`` config keys (switching is one
import line: ``from carboy.scale.caching import Cache``), and adds what that extension lacks:

- **Single flight** (``lock=True``, the default: ``CACHE_LOCK_DEFAULT``). On a miss one caller
  takes the entry's lock (Redis ``SET NX PX`` with a random token, ``CACHE_LOCK_TIMEOUT``
  seconds), computes and stores the value and releases the lock in one step
  (``lua/cache_fill.lua``); the others poll for the value with short sleeps for at most
  ``CACHE_LOCK_WAIT`` seconds, then compute themselves: nobody hangs. The holder renews its
  lock while it computes (``lua/cache_extend.lua``); if it dies, its lock expires and the next
  caller takes over.
- **Stale-while-revalidate** (``stale_ttl=`` seconds). An entry lives ``timeout + stale_ttl``
  seconds in the store; in its last ``stale_ttl`` seconds (measured by the store's clock:
  Redis ``PTTL``) it is stale: callers get it at once while the one caller that takes the lock
  recomputes it.
- **Async views** (``async def``) are cached with the asyncio client and ``asyncio.sleep``
  while waiting, so the event loop is never blocked.
- **ETag and 304** for cached views: the entry carries an ETag derived from the stored value's
  bytes, so every worker sends the same one, and a request whose ``If-None-Match`` matches gets
  ``304 Not Modified`` from the cache entry.
- **Outage**: when Redis does not answer, cached views compute as if the cache were empty
  (fail open), logged once; the cache is used again within 0.25 s of Redis answering.

Backends (``CACHE_TYPE``): ``"SimpleCache"``/``"simple"`` (in-process, the default without
Redis), ``"RedisCache"``/``"redis"`` (``CACHE_REDIS_URL``, else the app's ``REDIS_URL``
connection layer), ``"NullCache"``/``"null"``. With no ``CACHE_TYPE``, Redis is used when
``REDIS_URL`` or ``CACHE_REDIS_URL`` is set, else the in-process cache.

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import collections.abc as cabc
import datetime
import functools
import hashlib
import inspect
import logging
import math
import typing as t
import uuid

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from werkzeug.exceptions import HTTPException

from .caching_backends import BaseBackend, Entry, NullCache, RedisCache, SimpleCache, dumps, loads
from .caching_flight import _adrive, _drive, _flight, _join, _Plan, _true

if t.TYPE_CHECKING:
    from ..app import Carboy
    from ..wrappers import Response

__all__ = ["Cache", "CachedResponse", "make_template_fragment_key"]

logger = logging.getLogger("carboy.scale.caching")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: The key of the cache's state in ``app.extensions`` (a dict: one backend per Cache object).
EXTENSION_KEY = "cache"

_DEFAULTS: dict[str, t.Any] = {
    "CACHE_TYPE": None,
    "CACHE_DEFAULT_TIMEOUT": 300,
    "CACHE_THRESHOLD": 500,
    "CACHE_KEY_PREFIX": "flask_cache_",
    "CACHE_REDIS_URL": None,
    "CACHE_REDIS_HOST": None,
    "CACHE_REDIS_PORT": 6379,
    "CACHE_REDIS_DB": 0,
    "CACHE_REDIS_PASSWORD": None,
    "CACHE_SOURCE_CHECK": False,
    "CACHE_HASH_METHOD": hashlib.sha256,
    "CACHE_LOCK_DEFAULT": True,
    "CACHE_LOCK_TIMEOUT": 10.0,
    "CACHE_LOCK_WAIT": 15.0,
    "CACHE_STALE_TTL": 0,
    "CACHE_ETAG": True,
}

_TYPES = {
    "simplecache": "simple",
    "simple": "simple",
    "rediscache": "redis",
    "redis": "redis",
    "nullcache": "null",
    "null": "null",
}

TEMPLATE_FRAGMENT_KEY_TEMPLATE = "_template_fragment_cache_%s%s"


def make_template_fragment_key(fragment_name: str, vary_on: list[str] | None = None) -> str:
    """The cache key of a ``{% cache %}`` fragment (Flask-Caching's format), for deleting it.

    :param fragment_name: the fragment's name (the tag's second argument).
    :param vary_on: the extra key parts given after the name.

    .. versionadded:: 0.1
    """
    if vary_on:
        return TEMPLATE_FRAGMENT_KEY_TEMPLATE % (f"{fragment_name}_", "_".join(vary_on))
    return TEMPLATE_FRAGMENT_KEY_TEMPLATE % (fragment_name, "")


def normalize_timeout(timeout: t.Any) -> int | None:
    """Seconds as an ``int`` (a :class:`~datetime.timedelta` rounds up), or ``None``.

    :raises ValueError: a negative timeout or a string that is not a number.
    :raises TypeError: a value of another type.
    """
    if timeout is None:
        return None
    if isinstance(timeout, str):
        timeout = int(timeout)
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"A cache timeout is seconds or a timedelta, not {timeout!r}.")
    if timeout < 0:
        raise ValueError(f"A cache timeout cannot be negative: {timeout!r}.")
    return math.ceil(timeout)


class CachedResponse:
    """Return ``CachedResponse(response, timeout)`` from a cached view to choose the entry's
    timeout (seconds) for this response (Flask-Caching's name).

    .. versionadded:: 0.1
    """

    def __new__(cls, response: Response, timeout: t.Any) -> t.Any:
        response.cache_timeout = normalize_timeout(timeout)  # type: ignore[attr-defined]
        return response


class Cache:
    """Flask-Caching's ``Cache``: the cache API, view and function decorators, and the
    ``{% cache %}`` template tag, with single-flight recomputes and stale-while-revalidate.

    :param app: the app to register with now, or ``None`` for :meth:`init_app` later.
    :param with_jinja2_ext: register the ``{% cache timeout, "key" %}`` tag on
        ``app.jinja_env``.
    :param config: ``CACHE_*`` settings that override the app's config.
    :raises ValueError: *config* is not a dict, or an unknown ``CACHE_TYPE``.

    Config keys (defaults): ``CACHE_TYPE`` (Redis if a URL is set, else ``"SimpleCache"``),
    ``CACHE_DEFAULT_TIMEOUT`` (300 s; 0 never expires), ``CACHE_THRESHOLD`` (500 entries, the
    in-process cache's bound), ``CACHE_KEY_PREFIX`` (``"flask_cache_"``), ``CACHE_REDIS_URL``
    (or ``CACHE_REDIS_HOST``/``_PORT``/``_DB``/``_PASSWORD``), ``CACHE_SOURCE_CHECK``,
    ``CACHE_HASH_METHOD``, and carboy's ``CACHE_LOCK_DEFAULT`` (True), ``CACHE_LOCK_TIMEOUT``
    (10 s: the lock's TTL, renewed while its holder computes, so the longest a dead holder
    delays others),
    ``CACHE_LOCK_WAIT`` (15 s: the longest a caller waits for another's value),
    ``CACHE_STALE_TTL`` (0 s), ``CACHE_ETAG`` (True).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Carboy | None = None,
        with_jinja2_ext: bool = True,
        config: dict[str, t.Any] | None = None,
    ) -> None:
        if config is not None and not isinstance(config, dict):
            raise ValueError("`config` must be a dict or None.")
        self.with_jinja2_ext = with_jinja2_ext
        self.config = config
        self.app: Carboy | None = None
        self._settings: dict[str, t.Any] = dict(_DEFAULTS)
        if app is not None:
            self.init_app(app, config)

    def init_app(self, app: Carboy, config: dict[str, t.Any] | None = None) -> None:
        """Make the backend from the ``CACHE_*`` config and register it on *app*.

        :raises ValueError: *config* is not a dict, or ``CACHE_TYPE`` is unknown.
        """
        if config is not None and not isinstance(config, dict):
            raise ValueError("`config` must be a dict or None.")
        settings = dict(_DEFAULTS)
        settings.update({k: v for k, v in app.config.items() if k in _DEFAULTS})
        settings.update(self.config or {})
        settings.update(config or {})
        settings["CACHE_DEFAULT_TIMEOUT"] = normalize_timeout(settings["CACHE_DEFAULT_TIMEOUT"])
        if not callable(settings["CACHE_HASH_METHOD"]):
            raise ValueError("CACHE_HASH_METHOD must be a hash constructor (hashlib.sha256).")
        self._settings = settings
        backend = self._make_backend(app, settings)
        app.extensions.setdefault(EXTENSION_KEY, {})[self] = backend
        if self.with_jinja2_ext:
            app.jinja_env.add_extension(CacheExtension)
            app.jinja_env.carboy_fragment_cache = self  # type: ignore[attr-defined]
        self.app = app

    @staticmethod
    def _make_backend(app: Carboy, settings: dict[str, t.Any]) -> BaseBackend:
        kind_name = settings["CACHE_TYPE"]
        url = settings["CACHE_REDIS_URL"]
        if not url and settings["CACHE_REDIS_HOST"]:
            auth = (
                f":{settings['CACHE_REDIS_PASSWORD']}@" if settings["CACHE_REDIS_PASSWORD"] else ""
            )
            url = (
                f"redis://{auth}{settings['CACHE_REDIS_HOST']}:{settings['CACHE_REDIS_PORT']}"
                f"/{settings['CACHE_REDIS_DB']}"
            )
        if kind_name is None:
            kind = "redis" if url or app.config.get("REDIS_URL") else "simple"
        else:
            kind = _TYPES.get(str(kind_name).rsplit(".", 1)[-1].lower(), "")
        if not kind:
            raise ValueError(
                f"Unknown CACHE_TYPE {kind_name!r}: use 'SimpleCache', 'RedisCache' or 'NullCache'."
            )
        prefix = settings["CACHE_KEY_PREFIX"] or ""
        timeout = settings["CACHE_DEFAULT_TIMEOUT"] or 0
        if kind == "simple":
            return SimpleCache(prefix, timeout, int(settings["CACHE_THRESHOLD"] or 0))
        if kind == "null":
            return NullCache(prefix, timeout)
        from .connection import EXTENSION_KEY as REDIS_KEY
        from .connection import RedisConnection

        if url:
            connection = RedisConnection(url=url)
            holder = _Holder(app, url)
            connection.init_app(t.cast("Carboy", holder))
        else:
            layer = app.extensions.get(REDIS_KEY)
            connection = layer if layer is not None else RedisConnection(app)
        return RedisCache(connection, prefix, timeout)

    # -- the plain API -----------------------------------------------------------------------
    @property
    def cache(self) -> BaseBackend:
        """The backend of the current app (or of the app given to :meth:`init_app`)."""
        from ..globals import current_app

        app: t.Any = current_app if current_app else self.app
        if app is None:
            raise RuntimeError("Cache is not initialised: call init_app(app) first.")
        return t.cast(BaseBackend, app.extensions[EXTENSION_KEY][self])

    def get(self, key: str) -> t.Any:
        """The value stored under *key*, or ``None`` (missing, expired, or store down)."""
        value = self._load(self.cache.get(key))
        return value.value if type(value) is Entry else value

    def _load(self, data: bytes | None) -> t.Any:
        try:
            return loads(data)
        except Exception:
            return None

    def get_many(self, *keys: str) -> list[t.Any]:
        """The values of *keys*, ``None`` for each missing one."""
        values = [self._load(d) for d in self.cache.get_many(keys)]
        return [v.value if type(v) is Entry else v for v in values]

    def get_dict(self, *keys: str) -> dict[str, t.Any]:
        """``{key: value}`` for *keys*."""
        return dict(zip(keys, self.get_many(*keys), strict=True))

    def set(self, key: str, value: t.Any, timeout: t.Any = None) -> bool:
        """Store *value* for *timeout* seconds (``None``: ``CACHE_DEFAULT_TIMEOUT``, 0: no
        expiry). Returns whether it was stored."""
        return self.cache.set(key, dumps(value), normalize_timeout(timeout))

    def add(self, key: str, value: t.Any, timeout: t.Any = None) -> bool:
        """Store *value* only if *key* has none; returns whether it did."""
        return self.cache.add(key, dumps(value), normalize_timeout(timeout))

    def set_many(self, mapping: t.Mapping[str, t.Any], timeout: t.Any = None) -> list[str]:
        """Store each item; returns the keys stored."""
        data = {k: dumps(v) for k, v in mapping.items()}
        return self.cache.set_many(data, normalize_timeout(timeout))

    def delete(self, key: str) -> bool:
        """Delete *key*; returns whether it existed."""
        return self.cache.delete(key)

    def delete_many(self, *keys: str) -> list[str]:
        """Delete *keys*; returns those that existed."""
        return self.cache.delete_many(keys)

    def unlink(self, *keys: str) -> list[str]:
        """Same as :meth:`delete_many` (Flask-Caching's name)."""
        return self.delete_many(*keys)

    def has(self, key: str) -> bool:
        """Whether *key* holds a value."""
        return self.cache.has(key)

    def clear(self) -> bool:
        """Delete every entry of this cache (its ``CACHE_KEY_PREFIX``)."""
        return self.cache.clear()

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Add *delta* to the integer under *key* (0 if missing) atomically; the new value,
        ``None`` if the store is down.

        :raises ValueError: the value is not an integer (in-process cache).
        """
        return self.cache.inc(key, delta)

    def dec(self, key: str, delta: int = 1) -> int | None:
        """Subtract *delta*, like :meth:`inc`."""
        return self.cache.inc(key, -delta)

    # -- decorators ----------------------------------------------------------------------------
    def _settings_for(
        self, lock: bool | None, stale_ttl: float | None, lock_timeout: float | None
    ) -> tuple[bool, float, float, float]:
        s = self._settings
        return (
            s["CACHE_LOCK_DEFAULT"] if lock is None else bool(lock),
            float(s["CACHE_STALE_TTL"] if stale_ttl is None else stale_ttl),
            float(s["CACHE_LOCK_TIMEOUT"] if lock_timeout is None else lock_timeout),
            float(s["CACHE_LOCK_WAIT"]),
        )

    def _plan(
        self,
        key: str,
        timeout: t.Any,
        flight: tuple[bool, float, float, float],
        etag_on: bool,
        checks: tuple[bool, t.Callable[..., t.Any] | None, t.Callable[..., t.Any] | None],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
    ) -> _Plan:
        """The :class:`_Plan` of one call of a ``cached`` or ``memoize`` function: its *key*,
        its *timeout* in seconds (``None``: ``CACHE_DEFAULT_TIMEOUT``), the single-flight
        settings (:meth:`_settings_for`) and the decorator's ``(cache_none, is_stale,
        response_filter)``, which decide what a found value and a computed one count as."""
        use_lock, stale, lock_ttl, lock_wait = flight
        cache_none, is_stale, response_filter = checks
        seconds = normalize_timeout(timeout)
        if seconds is None:
            seconds = self._settings["CACHE_DEFAULT_TIMEOUT"] or 0

        def accept(value: t.Any) -> bool:
            if value is None and not cache_none:
                return False
            return not (is_stale is not None and _true(is_stale, value, *args, **kwargs))

        def keep(value: t.Any) -> bool:
            return response_filter is None or bool(response_filter(value))

        return _Plan(key, seconds, stale, use_lock, lock_ttl, lock_wait, etag_on, accept, keep)

    def _hash(self, hash_method: t.Callable[..., t.Any] | None) -> t.Callable[..., t.Any]:
        return hash_method or self._settings["CACHE_HASH_METHOD"]

    def cached(
        self,
        timeout: t.Any = None,
        key_prefix: str | t.Callable[[], str] = "view/%s",
        unless: t.Callable[..., t.Any] | None = None,
        forced_update: t.Callable[..., t.Any] | None = None,
        is_stale: t.Callable[..., t.Any] | None = None,
        response_filter: t.Callable[[t.Any], t.Any] | None = None,
        query_string: bool = False,
        hash_method: t.Callable[..., t.Any] | None = None,
        cache_none: bool = False,
        make_cache_key: t.Callable[..., str] | None = None,
        source_check: bool | None = None,
        response_hit_indication: bool | None = False,
        *,
        lock: bool | None = None,
        stale_ttl: float | None = None,
        lock_timeout: float | None = None,
        etag: bool | None = None,
    ) -> t.Callable[[F], F]:
        """Cache a view (or any function called in a request) under ``key_prefix``, where
        ``%s`` is ``request.path`` (Flask-Caching's ``cached``, same parameters).

        :param timeout: seconds (or a timedelta) the entry is fresh; ``None``: the default.
        :param key_prefix: the key, ``%s`` replaced by the path, or a callable returning it.
        :param unless: called (with the call's arguments if it takes any); ``True`` bypasses.
        :param forced_update: ``True`` recomputes and stores regardless of the entry.
        :param is_stale: called with a hit's value; ``True`` recomputes.
        :param response_filter: given a computed value; false keeps it out of the cache.
        :param query_string: key on the sorted query arguments as well.
        :param hash_method: hash for query-string and source keys (``CACHE_HASH_METHOD``).
        :param cache_none: a stored ``None`` is a hit (else a miss).
        :param make_cache_key: a callable given the call's arguments that returns the key.
        :param source_check: add a hash of the function's source to the key.
        :param response_hit_indication: add ``hit_cache: True`` to responses from the cache.
        :param lock: single-flight recompute (``CACHE_LOCK_DEFAULT``, True).
        :param stale_ttl: seconds an expired entry is still served while one caller
            recomputes it (``CACHE_STALE_TTL``, 0).
        :param lock_timeout: the recompute lock's TTL in seconds (``CACHE_LOCK_TIMEOUT``),
            renewed every third of it while the holder computes.
        :param etag: send an ETag and answer a matching ``If-None-Match`` with 304; by
            default (``CACHE_ETAG``) done when the decorated function is the request's view.

        An ``async def`` function gets an ``async def`` wrapper that waits without blocking.
        An :class:`~werkzeug.exceptions.HTTPException` it raises is cached and re-raised.

        .. versionadded:: 0.1
        """

        def decorator(f: F) -> F:
            flight = self._settings_for(lock, stale_ttl, lock_timeout)

            def plan(args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> _Plan:
                if make_cache_key is not None:
                    key = make_cache_key(*args, **kwargs)
                else:
                    key = wrapper.make_cache_key(*args, use_request=True, **kwargs)
                return self._plan(
                    key,
                    wrapper.cache_timeout,
                    flight,
                    self._wants_etag(etag, wrapper),
                    (cache_none, is_stale, response_filter),
                    args,
                    kwargs,
                )

            def finish(found: bool, entry: Entry, etag_on: bool) -> t.Any:
                value = entry.value
                if isinstance(value, HTTPException):
                    raise value
                if (etag_on and entry.etag) or (response_hit_indication and found):
                    return self._respond(
                        value,
                        entry.etag if etag_on else None,
                        found and bool(response_hit_indication),
                    )
                return value

            if inspect.iscoroutinefunction(f):

                @functools.wraps(f)
                async def awrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                    if _true(unless, f, *args, **kwargs) if unless else False:
                        return await f(*args, **kwargs)
                    try:
                        p = plan(args, kwargs)
                        forced = _true(forced_update, *args, **kwargs)
                    except Exception:
                        logger.exception("Cache key failed; calling the view uncached.")
                        return await f(*args, **kwargs)

                    async def compute() -> t.Any:
                        try:
                            return _join(await f(*args, **kwargs))
                        except HTTPException as e:
                            return e

                    found, entry = await _adrive(_flight(p, forced), self.cache, compute)
                    return finish(found, entry, p.etag)

                wrapper: t.Any = awrapper
            else:

                @functools.wraps(f)
                def swrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                    if _true(unless, f, *args, **kwargs) if unless else False:
                        return self._call(f, args, kwargs)
                    try:
                        p = plan(args, kwargs)
                        forced = _true(forced_update, *args, **kwargs)
                    except Exception:
                        logger.exception("Cache key failed; calling the view uncached.")
                        return self._call(f, args, kwargs)

                    def compute() -> t.Any:
                        try:
                            return _join(self._call(f, args, kwargs))
                        except HTTPException as e:
                            return e

                    found, entry = _drive(_flight(p, forced), self.cache, compute)
                    return finish(found, entry, p.etag)

                wrapper = swrapper

            wrapper.uncached = f
            wrapper.cache_timeout = timeout
            wrapper.make_cache_key = self._view_key_maker(
                f, key_prefix, query_string, hash_method, source_check
            )
            return t.cast(F, wrapper)

        return decorator

    def _call(
        self, f: t.Callable[..., t.Any], args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
    ) -> t.Any:
        if self.app is not None and inspect.iscoroutinefunction(f):
            return self.app.ensure_sync(f)(*args, **kwargs)
        return f(*args, **kwargs)

    def _wants_etag(self, etag: bool | None, wrapper: t.Any) -> bool:
        from ..globals import current_app, request

        if not request:
            return False
        if request.method not in ("GET", "HEAD"):
            return False
        if etag is not None:
            return etag
        if not self._settings["CACHE_ETAG"]:
            return False
        return current_app.view_functions.get(request.endpoint or "") is wrapper

    @staticmethod
    def _respond(value: t.Any, etag: str | None, hit: bool) -> Response:
        from ..globals import current_app, request

        response = current_app.make_response(value)
        if hit:
            response.headers["hit_cache"] = "True"
        if etag and response.status_code == 200 and "ETag" not in response.headers:
            response.set_etag(etag)
            response.make_conditional(request)
        return response

    def _view_key_maker(
        self,
        f: t.Callable[..., t.Any],
        key_prefix: str | t.Callable[[], str],
        query_string: bool,
        hash_method: t.Callable[..., t.Any] | None,
        source_check: bool | None,
    ) -> t.Callable[..., str]:
        def make_cache_key(*args: t.Any, **kwargs: t.Any) -> str:
            from ..globals import request
            from ..helpers import url_for

            use_request = kwargs.pop("use_request", False)
            path = None if use_request else kwargs.pop("path", None)
            query_args = None if use_request else kwargs.pop("query_args", None)
            if path is None and use_request:
                path = request.path
            if callable(key_prefix):
                key = key_prefix()
            elif "%s" in key_prefix:
                if path is None:
                    names = list(inspect.signature(f).parameters)
                    kwargs.update(zip(names, args, strict=False))
                    path = url_for(f.__name__, _external=False, **kwargs)
                key = key_prefix % path
            else:
                key = key_prefix
            digest = None
            if query_string:
                if query_args is None:
                    pairs = list(request.args.items(multi=True))
                elif isinstance(query_args, str):
                    from urllib.parse import parse_qsl

                    pairs = parse_qsl(query_args, keep_blank_values=True)
                elif isinstance(query_args, cabc.Mapping):
                    pairs = [(str(k), str(v)) for k, v in query_args.items()]
                else:
                    pairs = [(str(k), str(v)) for k, v in query_args]
                digest = self._hash(hash_method)(str(tuple(sorted(pairs))).encode())
            if self._settings["CACHE_SOURCE_CHECK"] if source_check is None else source_check:
                source = inspect.getsource(f).encode()
                if digest is None:
                    key += self._hash(hash_method)(source).hexdigest()
                else:
                    digest.update(source)
            if digest is not None:
                key += digest.hexdigest()
            return key

        return make_cache_key

    def delete_cached(
        self,
        f: t.Callable[..., t.Any],
        path: str | None = None,
        query_args: t.Any = None,
        **kwargs: t.Any,
    ) -> bool:
        """Delete the entry of a :meth:`cached` function for *path* (and *query_args*)."""
        key = f.make_cache_key(path=path, query_args=query_args, **kwargs)  # type: ignore[attr-defined]
        return self.delete(key)

    # -- memoize -------------------------------------------------------------------------------
    def memoize(
        self,
        timeout: t.Any = None,
        make_name: t.Callable[[str], str] | None = None,
        unless: t.Callable[..., t.Any] | None = None,
        forced_update: t.Callable[..., t.Any] | None = None,
        is_stale: t.Callable[..., t.Any] | None = None,
        response_filter: t.Callable[[t.Any], t.Any] | None = None,
        hash_method: t.Callable[..., t.Any] | None = None,
        cache_none: bool = False,
        source_check: bool | None = None,
        args_to_ignore: list[str] | None = None,
        *,
        lock: bool | None = None,
        stale_ttl: float | None = None,
        lock_timeout: float | None = None,
    ) -> t.Callable[[F], F]:
        """Cache a function's result per arguments (Flask-Caching's ``memoize``, same
        parameters as :meth:`cached` where they overlap).

        :param make_name: given the function's qualified name, returns the name used in keys.
        :param args_to_ignore: names of parameters left out of the key.
        :param lock: single-flight recompute (``CACHE_LOCK_DEFAULT``).
        :param stale_ttl: stale-while-revalidate seconds (``CACHE_STALE_TTL``).
        :param lock_timeout: the recompute lock's TTL in seconds (``CACHE_LOCK_TIMEOUT``).

        Methods are keyed per instance (``repr(self)``, or ``self.__caching_id__()``).
        :meth:`delete_memoized` forgets one call or all of them.

        .. versionadded:: 0.1
        """

        def decorator(f: F) -> F:
            flight = self._settings_for(lock, stale_ttl, lock_timeout)
            ignore = tuple(args_to_ignore or ())

            def plan(args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> _Plan:
                key = self._memoize_key(
                    f, args, kwargs, make_name, hash_method, source_check, ignore
                )
                return self._plan(
                    key,
                    wrapper.cache_timeout,
                    flight,
                    False,
                    (cache_none, is_stale, response_filter),
                    args,
                    kwargs,
                )

            if inspect.iscoroutinefunction(f):

                @functools.wraps(f)
                async def awrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                    if unless is not None and _true(unless, f, *args, **kwargs):
                        return await f(*args, **kwargs)
                    try:
                        p = plan(args, kwargs)
                        forced = _true(forced_update, *args, **kwargs)
                    except Exception:
                        logger.exception("Cache key failed; calling the function uncached.")
                        return await f(*args, **kwargs)

                    async def compute() -> t.Any:
                        return _join(await f(*args, **kwargs))

                    return (await _adrive(_flight(p, forced), self.cache, compute))[1].value

                wrapper: t.Any = awrapper
            else:

                @functools.wraps(f)
                def swrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
                    if unless is not None and _true(unless, f, *args, **kwargs):
                        return self._call(f, args, kwargs)
                    try:
                        p = plan(args, kwargs)
                        forced = _true(forced_update, *args, **kwargs)
                    except Exception:
                        logger.exception("Cache key failed; calling the function uncached.")
                        return self._call(f, args, kwargs)

                    def compute() -> t.Any:
                        return _join(self._call(f, args, kwargs))

                    return _drive(_flight(p, forced), self.cache, compute)[1].value

                wrapper = swrapper

            wrapper.uncached = f
            wrapper.cache_timeout = timeout
            wrapper.make_cache_key = lambda fn, *a, **kw: self._memoize_key(
                fn, a, kw, make_name, hash_method, source_check, ignore
            )
            wrapper.delete_memoized = lambda: self.delete_memoized(wrapper)
            return t.cast(F, wrapper)

        return decorator

    @staticmethod
    def _namespace(f: t.Callable[..., t.Any], args: tuple[t.Any, ...]) -> tuple[str, str | None]:
        """The function's name in keys, and its instance's (for a method called on one)."""
        name = f"{f.__module__}.{f.__qualname__}"
        params = list(inspect.signature(f).parameters)
        if params and params[0] == "self" and args:
            return name, f"{name}.{_instance_id(args[0])}"
        return name, None

    def _memoize_version(
        self,
        f: t.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        *,
        reset: bool = False,
        delete: bool = False,
    ) -> str:
        """The version stamp in *f*'s keys (per function, and per instance for methods).
        *reset* gives the most specific one a new value (forgetting its entries); *delete*
        deletes it."""
        name, instance = self._namespace(f, args)
        keys = [name + "_memver"] + ([instance + "_memver"] if instance else [])
        if delete:
            self.delete(keys[-1])
            return ""
        if reset:
            self.set(keys[-1], _new_version(), timeout=0)
            return ""
        versions = self.get_many(*keys)
        fresh = {k: _new_version() for k, v in zip(keys, versions, strict=True) if not v}
        if fresh:
            for k, v in fresh.items():
                if not self.add(k, v, timeout=0):  # another caller made it first: use theirs
                    fresh[k] = self.get(k) or v
            versions = [v or fresh[k] for k, v in zip(keys, versions, strict=True)]
        return "".join(str(v) for v in versions)

    def _memoize_key(
        self,
        f: t.Callable[..., t.Any],
        args: tuple[t.Any, ...],
        kwargs: dict[str, t.Any],
        make_name: t.Callable[[str], str] | None,
        hash_method: t.Callable[..., t.Any] | None,
        source_check: bool | None,
        ignore: tuple[str, ...],
    ) -> str:
        version = self._memoize_version(f, args)
        name = self._namespace(f, args)[0]
        if make_name is not None:
            name = make_name(name)
        try:
            bound = inspect.signature(f).bind(*args, **kwargs)
            bound.apply_defaults()
            items = [
                (k, None if k in ignore else _instance_id(v) if k in ("self", "cls") else v)
                for k, v in bound.arguments.items()
            ]
        except TypeError:  # arguments that do not fit: key them as given
            items = [("args", args), ("kwargs", sorted(kwargs.items()))]
        digest = self._hash(hash_method)(f"{name}{items!r}".encode())
        if self._settings["CACHE_SOURCE_CHECK"] if source_check is None else source_check:
            digest.update(inspect.getsource(f).encode())
        return base64.b64encode(digest.digest())[:16].decode() + version

    def delete_memoized(self, f: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> None:
        """Forget a :meth:`memoize` function's results: all of them (no arguments, or for a
        bound method, all of its instance's), or those of one call.

        :raises TypeError: *f* is not callable (names are not supported).
        """
        if not callable(f):
            raise TypeError("delete_memoized needs the memoized function, not its name.")
        instance = getattr(f, "__self__", None)
        target = getattr(f, "uncached", f)
        if instance is not None and not inspect.isclass(instance):
            if not args or args[0] is not instance:
                args = (instance, *args)
        elif instance is not None:  # a classmethod
            args = (instance, *args)
        if not args and not kwargs:
            self._memoize_version(target, (), reset=True)
            return
        if len(args) == 1 and not kwargs and instance is not None and not inspect.isclass(instance):
            self._memoize_version(target, args, reset=True)
            return
        self.delete(f.make_cache_key(target, *args, **kwargs))  # type: ignore[attr-defined]

    def delete_memoized_verhash(self, f: t.Callable[..., t.Any], *args: t.Any) -> None:
        """Delete the version stamp of a :meth:`memoize` function (its entries then expire
        unused).

        :raises TypeError: *f* is not callable.
        """
        if not callable(f):
            raise TypeError("delete_memoized_verhash needs the memoized function.")
        self._memoize_version(getattr(f, "uncached", f), args, delete=True)


def _instance_id(obj: t.Any) -> str:
    caching_id = getattr(obj, "__caching_id__", None)
    return repr(obj) if caching_id is None else str(caching_id())


def _new_version() -> str:
    return base64.b64encode(uuid.uuid4().bytes)[:6].decode()


class CacheExtension(Extension):
    """The ``{% cache timeout[, "name"[, vary_on...]] %}...{% endcache %}`` tag (Flask-Caching's).

    Without a name the key is the template's file name and the tag's line. A timeout of
    ``"del"`` deletes the entry and renders the body. The store is the :class:`Cache` that
    registered the tag; if it fails the body is rendered.

    .. versionadded:: 0.1
    """

    tags = {"cache"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        args: list[nodes.Expr] = [parser.parse_expression()]
        if parser.stream.skip_if("comma"):
            args.append(parser.parse_expression())
        else:
            args.append(nodes.Const(f"{parser.filename}{lineno}"))
        vary: list[nodes.Expr] = []
        while parser.stream.skip_if("comma"):
            vary.append(parser.parse_expression())
        args.append(nodes.List(vary))
        body = parser.parse_statements(("name:endcache",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", args), [], [], body).set_lineno(lineno)

    def _render(
        self, timeout: t.Any, name: str, vary_on: list[t.Any], caller: t.Callable[[], str]
    ) -> str:
        cache: Cache = self.environment.carboy_fragment_cache  # type: ignore[attr-defined]
        key = make_template_fragment_key(name, [str(v) for v in vary_on])
        if timeout == "del":
            cache.delete(key)
            return caller()
        value = cache.get(key)
        if value is None:
            value = caller()
            cache.set(key, value, timeout=normalize_timeout(timeout))
        return str(value)


class _Holder:
    """A stand-in app for a cache's own Redis URL (``CACHE_REDIS_URL``), so that its connection
    is configured like the app's without replacing the app's ``REDIS_URL`` layer."""

    def __init__(self, app: Carboy, url: str) -> None:
        self.config = dict(app.config)
        self.config["REDIS_URL"] = url
        self.extensions: dict[str, t.Any] = {}
