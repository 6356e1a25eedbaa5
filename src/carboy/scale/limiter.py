"""Rate limits shared by every worker and host, with Flask-Limiter's API and config keys.

Moving from Flask-Limiter is one import line::

    from carboy.scale.limiter import Limiter, get_remote_address  # was: from flask_limiter ...

    limiter = Limiter(get_remote_address, app=app, default_limits=["200/day"])

    @app.route("/login", methods=["POST"])
    @limiter.limit("10/minute")
    def login(): ...

Storage, first match wins: the ``storage_uri`` argument, ``RATELIMIT_STORAGE_URI``, the app's
:class:`~carboy.scale.connection.RedisConnection` (``REDIS_URL``; made here if the app has
none yet), else ``memory://`` (one process). Redis URLs (``redis://``, ``rediss://``,
``redis+unix://``, ``redis+sentinel://``, ``redis+cluster://``) use carboy's Redis layer and
its timeouts; other limits URLs (``memcached://``, ``mongodb://``) use limits' storages.
``RATELIMIT_STORAGE_OPTIONS`` (updating the ``storage_options`` argument, as Flask-Limiter's
does) go to limits' storage, or, for a Redis URL of the limiter's own, to its redis-py client
(keyword arguments such as ``socket_timeout`` or ``ssl_cert_reqs``); on the app's shared
``REDIS_URL`` the ``REDIS_*`` keys apply instead.

On Redis, all the limits of one request are checked in one script call (one round trip), on
the Redis server's clock, and the ``X-RateLimit-*`` headers come from its answer. The
strategies (``RATELIMIT_STRATEGY``) are limits': ``fixed-window`` (default),
``moving-window`` and ``sliding-window-counter``, over the same keys as limits' storages.

Storage outage (``RATELIMIT_STORAGE_OUTAGE``): ``"local"`` (default) checks the same limits in
this process's memory until Redis answers again; ``"open"`` lets requests through (logged once
per outage); ``"closed"`` answers 503 with ``Retry-After: 1``. Flask-Limiter's
``RATELIMIT_SWALLOW_ERRORS = True`` means ``"open"`` and ``RATELIMIT_IN_MEMORY_FALLBACK_ENABLED``
(or ``RATELIMIT_IN_MEMORY_FALLBACK``) means ``"local"``. Never a 500. While Redis is down it is
tried again every ``RETRY_INTERVAL`` seconds (0.5), so service is back within a second.

Async: with ``RATELIMIT_ASYNC = True`` the hooks are coroutines that use the asyncio Redis
client of the running loop, for ASGI apps with async views (the loop is never blocked and no
request hops to the thread pool for its limits). Like the sync hook, it sends the request's
Redis session load in the limits' round trip; it also loads an async view's session before the
view when the app's sessions leave that to it. The default, sync hooks, suits WSGI and ASGI
apps whose views are sync (they run in the thread pool with the view).

.. versionadded:: 0.1
"""

from __future__ import annotations

import enum
import logging
import math
import time
import typing as t
from dataclasses import dataclass, field
from functools import partial

from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter
from werkzeug.exceptions import ServiceUnavailable, TooManyRequests
from werkzeug.http import http_date

from ..globals import _cv_request_get, current_app

if t.TYPE_CHECKING:
    from ..app import Carboy
    from ..wrappers import Response
    from .connection import RedisConnection
    from .limit_storage import LimitScript

__all__ = [
    "ExemptionScope",
    "HeaderNames",
    "Limit",
    "Limiter",
    "RateLimitExceeded",
    "RequestLimit",
    "get_remote_address",
]

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
logger = logging.getLogger("carboy.scale.limiter")

#: Seconds between attempts to reach a storage that failed (service is back within this).
RETRY_INTERVAL = 0.5
#: What an unreachable storage means for a request.
OUTAGE_POLICIES = ("local", "open", "closed")
#: ``carboy.scale.connection.EXTENSION_KEY``, spelled here so that reading it imports no redis-py.
_CONNECTION_KEY = "carboy.redis"
_REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "unix", "redis+sentinel", "redis+cluster")


def get_remote_address() -> str:
    """The client's address (``request.remote_addr``), or ``"127.0.0.1"`` when unknown.

    The same as ``flask_limiter.util.get_remote_address``.

    .. versionadded:: 0.1
    """
    return _req().remote_addr or "127.0.0.1"


def get_qualified_name(func: t.Callable[..., t.Any]) -> str:
    """The name a decorated view's limits are kept under (Flask-Limiter's formula, so views
    made by :meth:`~carboy.views.View.as_view` get one each)."""
    return f"{func.__module__}.{func.__name__}.{func.__qualname__}"


class HeaderNames(enum.Enum):
    """The rate-limit headers, for ``header_name_mapping`` (Flask-Limiter's names)."""

    RESET = "X-RateLimit-Reset"
    REMAINING = "X-RateLimit-Remaining"
    LIMIT = "X-RateLimit-Limit"
    RETRY_AFTER = "Retry-After"


class ExemptionScope(enum.Flag):
    """What :meth:`Limiter.exempt` exempts from (Flask-Limiter's flags)."""

    NONE = 0
    APPLICATION = enum.auto()
    META = enum.auto()
    DEFAULT = enum.auto()
    DESCENDENTS = enum.auto()
    ANCESTORS = enum.auto()


_ALL_EXEMPT = ExemptionScope.APPLICATION | ExemptionScope.DEFAULT | ExemptionScope.META


@dataclass(frozen=True, eq=False)
class _RuntimeLimit:
    """One parsed limit of a :class:`Limit` definition, as a request meets it."""

    item: RateLimitItem
    definition: Limit

    @property
    def limit(self) -> RateLimitItem:
        """The :class:`limits.RateLimitItem` (Flask-Limiter's ``RuntimeLimit.limit``)."""
        return self.item

    @property
    def error_message(self) -> str | t.Callable[[], str] | None:
        return self.definition.error_message


@dataclass(eq=False)
class Limit:
    """A limit definition: for ``default_limits``, ``application_limits``, or what
    :meth:`Limiter.limit` returns. Flask-Limiter's :class:`~flask_limiter.Limit` fields.

    :param limit_provider: a limit string (``"10/minute;100/day"``) or a callable returning one.
    :param key_function: who is limited (default: the limiter's ``key_func``).
    :param scope: a string, or a callable of the endpoint, naming the bucket.
    :param cost: what one request costs (int or callable), default 1.
    :param shared: whether the bucket is the scope alone (shared by routes).
    :param methods: only these HTTP methods are limited.
    :param per_method: a bucket per HTTP method.
    :param error_message: the 429's description (str or callable).
    :param exempt_when: a callable; true skips the limit for this request.
    :param deduct_when: a callable of the response; the limit is only tested before the view
        and deducted after it, when this returns true.
    :param on_breach: called with the :class:`RequestLimit` on a breach; a response it returns
        is the 429's.
    :param override_defaults: decorated limits replace the default limits (default true).

    .. versionadded:: 0.1
    """

    limit_provider: str | t.Callable[[], str]
    key_function: t.Callable[[], str] | None = None
    scope: str | t.Callable[[str], str] | None = None
    cost: int | t.Callable[[], int] | None = None
    shared: bool = False
    methods: t.Sequence[str] | None = None
    per_method: bool = False
    error_message: str | t.Callable[[], str] | None = None
    exempt_when: t.Callable[[], bool] | None = None
    deduct_when: t.Callable[[Response], bool] | None = None
    on_breach: t.Callable[[RequestLimit], Response | None] | None = None
    override_defaults: bool = True
    limiter: Limiter | None = field(default=None, repr=False)
    _items: tuple[_RuntimeLimit, ...] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.methods is not None:
            self.methods = tuple(m.lower() for m in self.methods)
        if isinstance(self.limit_provider, str):
            self._items = self._parse(self.limit_provider)  # bad strings fail at start-up
        elif not callable(self.limit_provider):
            raise TypeError(f"A limit is a string or a callable, not {self.limit_provider!r}.")

    def _parse(self, text: str) -> tuple[_RuntimeLimit, ...]:
        try:
            return tuple(_RuntimeLimit(item, self) for item in parse_many(text)) if text else ()
        except ValueError as e:
            raise ValueError(f"Bad rate limit {text!r}: {e}") from None

    def runtime(self) -> tuple[_RuntimeLimit, ...]:
        """This definition's limits now (a callable provider is called)."""
        if self._items is not None:
            return self._items
        return self._parse(t.cast(t.Callable[[], str], self.limit_provider)())

    def __call__(self, obj: F) -> F:
        """Limit a view function (returned unchanged) or every view of a blueprint."""
        if self.limiter is None:
            raise TypeError("This limit is not bound to a Limiter: use limiter.limit(...).")
        from ..blueprints import Blueprint

        if isinstance(obj, Blueprint):
            self.limiter._blueprint_limits.setdefault(obj.name, []).append(self)
        elif callable(obj):
            self.limiter._route_limits.setdefault(get_qualified_name(obj), []).append(self)
        else:
            raise TypeError(f"limit() decorates a view function or a blueprint, not {obj!r}.")
        self.limiter._resolved.clear()
        return obj


class RequestLimit:
    """A limit as one request met it: the item, key, whether it was breached, what remains.

    .. versionadded:: 0.1
    """

    __slots__ = ("breached", "key", "limit", "remaining", "reset_at", "shared")

    def __init__(
        self,
        limit: RateLimitItem,
        key: str,
        breached: bool,
        shared: bool,
        remaining: int,
        reset_at: int,
    ) -> None:
        #: The :class:`limits.RateLimitItem`.
        self.limit = limit
        #: The storage key of the bucket.
        self.key = key
        #: Whether this request breached the limit.
        self.breached = breached
        #: Whether the bucket is shared by routes.
        self.shared = shared
        #: What is left in the window after this request.
        self.remaining = remaining
        #: The Unix time (seconds) when the window frees an entry.
        self.reset_at = reset_at


class RateLimitExceeded(TooManyRequests):
    """A 429 for a breached limit, with ``Retry-After``; Flask-Limiter's exception name.

    :param limit: the breached limit (its ``.limit`` is the :class:`limits.RateLimitItem`);
        the ``description`` is its error message, or the limit's text.
    :param response: a response to send instead of the error page.
    :param retry_after: seconds until a retry can succeed.

    .. versionadded:: 0.1
    """

    def __init__(
        self, limit: t.Any, response: Response | None = None, retry_after: int | None = None
    ) -> None:
        self.limit = limit
        message = getattr(limit, "error_message", None)
        if callable(message):
            message = message()
        description = message or str(getattr(limit, "limit", limit))
        super().__init__(description=description, response=response, retry_after=retry_after)


class _Check(t.NamedTuple):
    """One limit to check for a request."""

    limit: _RuntimeLimit
    args: tuple[str, ...]
    key: str
    cost: int
    hit: bool


class _State:
    """What the before hook leaves for the after hook, on the request object."""

    __slots__ = ("deferred", "limits", "shown")

    def __init__(self) -> None:
        self.limits: list[RequestLimit] = []
        self.shown: RequestLimit | None = None
        self.deferred: list[_Check] = []


class _MemoryEngine:
    """limits' strategies over one limits storage (memory, memcached, ...)."""

    def __init__(self, storage: Storage, strategy: str) -> None:
        self.storage = storage
        self.strategy: RateLimiter = STRATEGIES[strategy](storage)

    def check(self, calls: t.Sequence[_Check], stop: bool) -> list[tuple[int, int, float]]:
        out: list[tuple[int, int, float]] = []
        breached = False
        strategy = self.strategy
        for call in calls:
            if breached and stop:
                out.append((-1, 0, 0.0))
                continue
            item = call.limit.item
            step = strategy.hit if call.hit else strategy.test
            ok = step(item, *call.args, cost=call.cost)
            reset, remaining = strategy.get_window_stats(item, *call.args)
            out.append((1 if ok else 0, remaining, max(0.0, reset - time.time())))
            breached = breached or not ok
        return out


class Limiter:
    """Rate limits with Flask-Limiter's API, shared across workers and hosts on Redis.

    :param key_func: who a limit counts (e.g. :func:`get_remote_address`).
    :param app: the app to register with now, or ``None`` to call :meth:`init_app` later.
    :param default_limits: limits for every route without its own (``RATELIMIT_DEFAULT``).
    :param application_limits: limits shared by all routes (``RATELIMIT_APPLICATION``).
    :param headers_enabled: add ``X-RateLimit-*`` and ``Retry-After`` headers
        (``RATELIMIT_HEADERS_ENABLED``).
    :param strategy: ``fixed-window``, ``moving-window`` or ``sliding-window-counter``
        (``RATELIMIT_STRATEGY``).
    :param storage_uri: where counts live (``RATELIMIT_STORAGE_URI``; see the module docs).
    :param storage_outage: ``"local"``, ``"open"`` or ``"closed"``
        (``RATELIMIT_STORAGE_OUTAGE``; see the module docs).
    :param async_checks: check with coroutine hooks and the asyncio client
        (``RATELIMIT_ASYNC``).
    :param key_prefix: prepended to every bucket's key (``RATELIMIT_KEY_PREFIX``).

    The other keyword arguments are Flask-Limiter's, with the same meaning
    (``default_limits_per_method``, ``default_limits_exempt_when``, ``default_limits_deduct_when``,
    ``default_limits_cost``, ``application_limits_per_method``, ``application_limits_exempt_when``,
    ``application_limits_deduct_when``, ``application_limits_cost``, ``header_name_mapping``,
    ``storage_options``, ``swallow_errors``, ``fail_on_first_breach``, ``on_breach``,
    ``in_memory_fallback``, ``in_memory_fallback_enabled``, ``retry_after``,
    ``request_identifier``, ``enabled``). Meta limits are not supported.

    :raises ValueError: an unknown strategy or outage policy, or a bad limit string.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        key_func: t.Callable[[], str],
        *,
        app: Carboy | None = None,
        default_limits: t.Sequence[str | t.Callable[[], str] | Limit] | None = None,
        default_limits_per_method: bool | None = None,
        default_limits_exempt_when: t.Callable[[], bool] | None = None,
        default_limits_deduct_when: t.Callable[[Response], bool] | None = None,
        default_limits_cost: int | t.Callable[[], int] | None = None,
        application_limits: t.Sequence[str | t.Callable[[], str] | Limit] | None = None,
        application_limits_per_method: bool | None = None,
        application_limits_exempt_when: t.Callable[[], bool] | None = None,
        application_limits_deduct_when: t.Callable[[Response], bool] | None = None,
        application_limits_cost: int | t.Callable[[], int] | None = None,
        headers_enabled: bool | None = None,
        header_name_mapping: dict[HeaderNames, str] | None = None,
        strategy: str | None = None,
        storage_uri: str | None = None,
        storage_options: dict[str, t.Any] | None = None,
        swallow_errors: bool | None = None,
        fail_on_first_breach: bool | None = None,
        on_breach: t.Callable[[RequestLimit], Response | None] | None = None,
        meta_limits: t.Sequence[t.Any] | None = None,
        in_memory_fallback: t.Sequence[str] | None = None,
        in_memory_fallback_enabled: bool | None = None,
        retry_after: str | None = None,
        key_prefix: str = "",
        request_identifier: t.Callable[[], str] | None = None,
        enabled: bool = True,
        storage_outage: str | None = None,
        async_checks: bool | None = None,
    ) -> None:
        if meta_limits:
            raise ValueError("carboy's Limiter does not support meta limits.")
        self._key_func = key_func
        self._options: dict[str, t.Any] = {
            "default_limits_per_method": default_limits_per_method,
            "default_limits_exempt_when": default_limits_exempt_when,
            "default_limits_deduct_when": default_limits_deduct_when,
            "default_limits_cost": default_limits_cost,
            "application_limits_per_method": application_limits_per_method,
            "application_limits_exempt_when": application_limits_exempt_when,
            "application_limits_deduct_when": application_limits_deduct_when,
            "application_limits_cost": application_limits_cost,
        }
        self._default_given = list(default_limits or ())
        self._application_given = list(application_limits or ())
        self._headers_enabled = headers_enabled
        self._header_given = dict(header_name_mapping or {})
        self._strategy_name = strategy
        self._storage_uri = storage_uri
        self._storage_options = dict(storage_options or {})
        self._swallow_errors = swallow_errors
        self._fail_on_first_breach = fail_on_first_breach
        self._on_breach = on_breach
        self._fallback_given = list(in_memory_fallback or ())
        self._fallback_enabled = in_memory_fallback_enabled
        self._retry_after = retry_after
        self._key_prefix = key_prefix
        self._request_identifier = request_identifier
        self.enabled = enabled
        self._outage = storage_outage
        self._async = async_checks
        self.initialized = False
        self._default_limits: list[Limit] = []
        self._application_limits: list[Limit] = []
        self._fallback_limits: list[Limit] = []
        self._route_limits: dict[str, list[Limit]] = {}
        self._blueprint_limits: dict[str, list[Limit]] = {}
        self._route_exemptions: dict[str, ExemptionScope] = {}
        self._blueprint_exemptions: dict[str, ExemptionScope] = {}
        self._request_filters: list[t.Callable[[], bool]] = []
        self._resolved: dict[str, tuple[tuple[Limit, ...], tuple[Limit, ...]]] = {}
        self._script: LimitScript | None = None
        self._engine: _MemoryEngine | None = None
        self._local: _MemoryEngine | None = None
        self._storage: Storage | None = None
        self._down_until = 0.0
        self._attr = f"_carboy_limits_{id(self):x}"
        self._header_names: dict[HeaderNames, str] = {}
        if app is not None:
            self.init_app(app)

    # -- set-up ---------------------------------------------------------------------------

    def init_app(self, app: Carboy) -> None:
        """Read the app's ``RATELIMIT_*`` config, open the storage and add the hooks.

        :raises ValueError: an unknown strategy or outage policy, or a bad limit string.
        """
        config = app.config
        self.enabled = bool(config.setdefault("RATELIMIT_ENABLED", self.enabled))
        if not self.enabled:
            return
        opt = self._options

        def setting(name: str, key: str, default: t.Any) -> t.Any:
            value = opt[name]
            return config.get(key, default) if value is None else value

        strategy = self._strategy_name or config.setdefault("RATELIMIT_STRATEGY", "fixed-window")
        if strategy not in STRATEGIES:
            raise ValueError(
                f"Unknown rate-limit strategy {strategy!r}: use one of {list(STRATEGIES)}."
            )
        self._strategy_name = strategy
        if self._headers_enabled is None:
            self._headers_enabled = bool(config.get("RATELIMIT_HEADERS_ENABLED", False))
        if self._fail_on_first_breach is None:
            self._fail_on_first_breach = bool(config.get("RATELIMIT_FAIL_ON_FIRST_BREACH", True))
        if self._swallow_errors is None:
            self._swallow_errors = bool(config.get("RATELIMIT_SWALLOW_ERRORS", False))
        self._key_prefix = self._key_prefix or config.get("RATELIMIT_KEY_PREFIX", "")
        self._retry_after = self._retry_after or config.get("RATELIMIT_HEADER_RETRY_AFTER_VALUE")
        self._on_breach = self._on_breach or config.get("RATELIMIT_ON_BREACH_CALLBACK")
        if self._request_identifier is None:
            self._request_identifier = config.get("RATELIMIT_REQUEST_IDENTIFIER")
        config_keys = {
            HeaderNames.RESET: "RATELIMIT_HEADER_RESET",
            HeaderNames.REMAINING: "RATELIMIT_HEADER_REMAINING",
            HeaderNames.LIMIT: "RATELIMIT_HEADER_LIMIT",
            HeaderNames.RETRY_AFTER: "RATELIMIT_HEADER_RETRY_AFTER",
        }
        self._header_names = {
            name: self._header_given.get(name, config.get(key, name.value))
            for name, key in config_keys.items()
        }

        def group(
            given: list[t.Any], config_key: str, option: str, keys: str, shared: str | None
        ) -> list[Limit]:
            """Limits from the constructor, else from *config_key*; those given as strings
            take the group's options (argument ``<option>_*``, else config ``<keys>_*``)."""
            if not given and config.get(config_key):
                given = [config[config_key]]
            out = []
            for spec in given:
                if not isinstance(spec, Limit):
                    spec = Limit(
                        spec,
                        scope=shared,
                        shared=shared is not None,
                        per_method=bool(
                            setting(f"{option}_per_method", f"{keys}_PER_METHOD", False)
                        ),
                        exempt_when=setting(f"{option}_exempt_when", f"{keys}_EXEMPT_WHEN", None),
                        deduct_when=setting(f"{option}_deduct_when", f"{keys}_DEDUCT_WHEN", None),
                        cost=setting(f"{option}_cost", f"{keys}_COST", 1),
                    )
                spec.limiter = self
                out.append(spec)
            return out

        # Flask-Limiter's spellings: RATELIMIT_DEFAULTS_* and RATELIMIT_APPLICATION_*.
        self._default_limits = group(
            self._default_given, "RATELIMIT_DEFAULT", "default_limits", "RATELIMIT_DEFAULTS", None
        )
        self._application_limits = group(
            self._application_given,
            "RATELIMIT_APPLICATION",
            "application_limits",
            "RATELIMIT_APPLICATION",
            "global",
        )
        fallback = self._fallback_given or (
            [config["RATELIMIT_IN_MEMORY_FALLBACK"]]
            if config.get("RATELIMIT_IN_MEMORY_FALLBACK")
            else []
        )
        self._fallback_limits = [Limit(s, limiter=self) for s in fallback]

        outage = self._outage or config.get("RATELIMIT_STORAGE_OUTAGE")
        if outage is None:
            fallback_on = self._fallback_enabled or config.get(
                "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", False
            )
            if fallback_on or self._fallback_limits:
                outage = "local"
            elif self._swallow_errors:
                outage = "open"
            else:
                outage = "local"
        if outage not in OUTAGE_POLICIES:
            raise ValueError(
                f"RATELIMIT_STORAGE_OUTAGE must be one of {OUTAGE_POLICIES}, not {outage!r}."
            )
        self._outage = outage
        if self._async is None:
            self._async = bool(config.get("RATELIMIT_ASYNC", False))

        self._open_storage(app)
        self._local = _MemoryEngine(MemoryStorage(), strategy)
        if self not in app.extensions.setdefault("limiter", set()):
            if self._async:
                app.before_request(self._acheck_request)
                app.after_request(self._aafter_request)
            else:
                app.before_request(self._check_request)
                app.after_request(self._after_request)
        app.extensions["limiter"].add(self)
        self.initialized = True

    def _open_storage(self, app: Carboy) -> None:
        config = app.config
        uri = self._storage_uri or config.get("RATELIMIT_STORAGE_URI")
        # Flask-Limiter's order: the constructor's storage_options, updated by the config's.
        options = {**self._storage_options, **(config.get("RATELIMIT_STORAGE_OPTIONS") or {})}
        connection: RedisConnection | None = None
        # The Redis layer (and so redis-py) is imported only for a Redis storage: memory://,
        # the embedded default, works with redis-py not installed.
        if uri is None:
            if _CONNECTION_KEY in app.extensions or config.get("REDIS_URL"):
                from .connection import RedisConnection

                connection = app.extensions.get(_CONNECTION_KEY) or RedisConnection(app)
        elif uri.partition("://")[0].lower() in _REDIS_SCHEMES:
            from .connection import RedisConnection

            if uri.startswith("redis+unix://"):
                uri = "unix://" + uri[len("redis+unix://") :]
            # A connection of the limiter's own, with the layer's timeouts, not the app's.
            connection = RedisConnection(url=uri)
            connection._options = {
                "socket_connect_timeout": float(config.get("REDIS_CONNECT_TIMEOUT", 0.5)),
                "socket_timeout": float(config.get("REDIS_SOCKET_TIMEOUT", 1.0)),
                "health_check_interval": config.get("REDIS_HEALTH_CHECK_INTERVAL", 15),
                "max_connections": config.get("REDIS_MAX_CONNECTIONS"),
                **options,  # redis-py client keyword arguments
            }
            if options and not connection.is_cluster:
                # A misspelt option raises TypeError here, at start, not in a request: redis-py
                # takes any keyword until it makes a connection (making one does no I/O; a
                # cluster client would connect, so it is not checked).
                pool = connection.sync.connection_pool
                pool.connection_class(**pool.connection_kwargs)
        strategy = t.cast(str, self._strategy_name)
        if connection is not None:
            from .limit_storage import LimitScript, ServerClockRedisStorage

            storage = ServerClockRedisStorage(connection)
            self._storage = storage
            self._script = LimitScript(connection, strategy, storage.key_prefix)
            self._engine = _MemoryEngine(storage, strategy)  # limits' API on the same keys
        else:
            generic = t.cast(Storage, storage_from_string(uri or "memory://", **options))
            self._storage = generic
            self._engine = _MemoryEngine(generic, strategy)

    # -- the decorators ---------------------------------------------------------------------

    def limit(
        self,
        limit_value: str | t.Callable[[], str],
        *,
        key_func: t.Callable[[], str] | None = None,
        per_method: bool = False,
        methods: t.Sequence[str] | None = None,
        error_message: str | t.Callable[[], str] | None = None,
        exempt_when: t.Callable[[], bool] | None = None,
        override_defaults: bool = True,
        deduct_when: t.Callable[[Response], bool] | None = None,
        on_breach: t.Callable[[RequestLimit], Response | None] | None = None,
        cost: int | t.Callable[[], int] = 1,
        scope: str | t.Callable[[str], str] | None = None,
        meta_limits: t.Sequence[t.Any] | None = None,
    ) -> Limit:
        """A decorator limiting a view (returned unchanged, sync or async) or a blueprint;
        Flask-Limiter's :meth:`~flask_limiter.Limiter.limit`.

        :raises ValueError: a bad limit string, or meta limits.
        """
        if meta_limits:
            raise ValueError("carboy's Limiter does not support meta limits.")
        return Limit(
            limit_value,
            key_function=key_func,
            scope=scope,
            cost=cost,
            methods=methods,
            per_method=per_method,
            error_message=error_message,
            exempt_when=exempt_when,
            deduct_when=deduct_when,
            on_breach=on_breach,
            override_defaults=override_defaults,
            limiter=self,
        )

    def shared_limit(
        self,
        limit_value: str | t.Callable[[], str],
        scope: str | t.Callable[[str], str],
        **options: t.Any,
    ) -> Limit:
        """:meth:`limit` with one bucket per *scope* shared by every route it decorates."""
        decorator = self.limit(limit_value, scope=scope, **options)
        decorator.shared = True
        return decorator

    def exempt(self, obj: t.Any = None, *, flags: ExemptionScope = _ALL_EXEMPT) -> t.Any:
        """Exempt a view or a blueprint from the default and application limits (its own
        decorated limits still apply); usable as ``@limiter.exempt`` or
        ``@limiter.exempt(flags=...)``."""
        from ..blueprints import Blueprint

        if obj is None:
            return partial(self.exempt, flags=flags)
        if isinstance(obj, Blueprint):
            self._blueprint_exemptions[obj.name] = flags
        else:
            self._route_exemptions[get_qualified_name(obj)] = flags
        self._resolved.clear()
        return obj

    def request_filter(self, fn: t.Callable[[], bool]) -> t.Callable[[], bool]:
        """Register a callable; a request for which one returns true is not limited."""
        self._request_filters.append(fn)
        return fn

    # -- state --------------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """The limits storage (on Redis, a
        :class:`~carboy.scale.limit_storage.ServerClockRedisStorage`)."""
        if self._storage is None:
            raise RuntimeError("The Limiter is not initialised: call init_app(app) first.")
        return self._storage

    @property
    def limiter(self) -> RateLimiter:
        """The limits strategy over :attr:`storage` (the in-memory one while it is down)."""
        if self._engine is None or self._local is None:
            raise RuntimeError("The Limiter is not initialised: call init_app(app) first.")
        return (self._local if self._down_until else self._engine).strategy

    def reset(self) -> None:
        """Clear every count in the storage (and the in-memory fallback's)."""
        try:
            self.storage.reset()
        except NotImplementedError:
            logger.warning("This rate-limit storage cannot be reset.")
        if self._local is not None:
            self._local.storage.reset()

    @property
    def current_limit(self) -> RequestLimit | None:
        """The limit shown in this request's headers: the breached one, else the narrowest."""
        state = getattr(_req(), self._attr, None)
        return state.shown if state is not None else None

    @property
    def current_limits(self) -> list[RequestLimit]:
        """Every limit this request was checked against, narrowest window first."""
        state = getattr(_req(), self._attr, None)
        return list(state.limits) if state is not None else []

    def identify_request(self) -> str:
        """The request's identity for limits: its endpoint, or ``request_identifier()``."""
        if self._request_identifier is not None:
            return self._request_identifier()
        return _req().endpoint or ""

    # -- per request ----------------------------------------------------------------------------

    def _resolve(self, endpoint: str) -> tuple[tuple[Limit, ...], tuple[Limit, ...]]:
        """``(shared-bucket definitions, per-route definitions)`` for *endpoint*, once."""
        view = current_app.view_functions.get(endpoint)
        name = get_qualified_name(view) if view is not None else ""
        blueprints = _req().blueprints
        decorated = list(self._route_limits.get(name, ()))
        if not decorated:
            for bp in blueprints:
                if bp in self._blueprint_limits:
                    decorated = list(self._blueprint_limits[bp])
                    break
        flags = self._route_exemptions.get(name, ExemptionScope.NONE)
        for depth, bp in enumerate(blueprints):
            bp_flags = self._blueprint_exemptions.get(bp)
            if bp_flags is not None and (depth == 0 or ExemptionScope.DESCENDENTS & bp_flags):
                flags |= bp_flags
        chosen: list[Limit] = []
        if not ExemptionScope.APPLICATION & flags:
            chosen.extend(self._application_limits)
        if not ExemptionScope.DEFAULT & flags and not any(d.override_defaults for d in decorated):
            chosen.extend(self._default_limits)
        chosen.extend(decorated)
        resolved = (tuple(chosen), ())
        self._resolved[endpoint] = resolved
        return resolved

    def _collect(self) -> list[_Check] | None:
        """The limits this request is checked against (no I/O), or ``None``."""
        endpoint = self.identify_request()
        if not endpoint or endpoint.rpartition(".")[2] == "static":
            return None
        if self._request_filters and any(f() for f in self._request_filters):
            return None
        definitions = self._resolved.get(endpoint) or self._resolve(endpoint)
        if not definitions[0]:
            return None
        if (
            self._down_until
            and self._outage == "local"
            and self._fallback_limits
            and time.monotonic() < self._down_until
        ):
            definitions = (tuple(self._fallback_limits), ())
        method = _req().method
        checks: list[_Check] = []
        for definition in definitions[0]:
            if definition.methods is not None and method.lower() not in definition.methods:
                continue
            if definition.exempt_when is not None and definition.exempt_when():
                continue
            scope = definition.scope
            if callable(scope):
                scope = scope(_req().endpoint or "")
            bucket = endpoint
            if scope:
                bucket = scope if definition.shared else f"{endpoint}:{scope}"
            if definition.per_method:
                bucket = f"{bucket}:{method.upper()}"
            who = (definition.key_function or self._key_func)()
            if not who:
                logger.error(
                    "Skipping limit %s: its key function returned nothing.",
                    definition.limit_provider,
                )
                continue
            args = (self._key_prefix, who, bucket) if self._key_prefix else (who, bucket)
            cost = definition.cost
            cost = 1 if cost is None else (cost() if callable(cost) else cost)
            hit = definition.deduct_when is None
            for runtime in definition.runtime():
                checks.append(_Check(runtime, args, runtime.item.key_for(*args), cost, hit))
        checks.sort(key=lambda c: c.limit.item)
        return checks

    def _storage_failed(self, error: BaseException) -> None:
        if not self._down_until:
            logger.warning(
                "Rate-limit storage unreachable (%s): policy %r until it answers again.",
                error,
                self._outage,
            )
        self._down_until = time.monotonic() + RETRY_INTERVAL

    def _storage_resting(self) -> bool:
        """During an outage: whether this request skips the storage. One request per
        :data:`RETRY_INTERVAL` tries it again; it claims the attempt by moving the next one on
        first, so requests that arrive while it waits (a server that drops packets costs the
        connect timeout) keep to the outage policy instead of all waiting too."""
        now = time.monotonic()
        if now < self._down_until:
            return True
        self._down_until = now + RETRY_INTERVAL
        return False

    def _storage_back(self) -> None:
        self._down_until = 0.0
        logger.warning("Rate-limit storage reachable again.")

    def _outage_results(
        self, checks: list[_Check], stop: bool
    ) -> list[tuple[int, int, float]] | None:
        if self._outage == "closed":
            raise ServiceUnavailable(
                "Rate limits cannot be checked: their storage is unavailable. Try again shortly.",
                retry_after=1,
            )
        if self._outage == "open":
            return None
        return t.cast(_MemoryEngine, self._local).check(checks, stop)

    def _run(self, checks: list[_Check]) -> list[tuple[int, int, float]] | None:
        stop = bool(self._fail_on_first_breach)
        if self._down_until and self._storage_resting():
            return self._outage_results(checks, stop)
        try:
            if self._script is not None:
                calls = [(c.limit.item, c.key, c.cost, c.hit) for c in checks]
                results = self._script.check(calls, stop, _prefetches())
            else:
                results = t.cast(_MemoryEngine, self._engine).check(checks, stop)
        except (OSError, StorageError, _redis_error()) as e:
            self._storage_failed(e)
            return self._outage_results(checks, stop)
        if self._down_until:
            self._storage_back()
        return results

    async def _arun(
        self, checks: list[_Check], sessions: t.Sequence[t.Any] = ()
    ) -> list[tuple[int, int, float]] | None:
        stop = bool(self._fail_on_first_breach)
        if self._down_until and self._storage_resting():
            return self._outage_results(checks, stop)
        try:
            if self._script is not None:
                calls = [(c.limit.item, c.key, c.cost, c.hit) for c in checks]
                results = await self._script.acheck(calls, stop, sessions)
            elif isinstance(t.cast(_MemoryEngine, self._engine).storage, MemoryStorage):
                results = t.cast(_MemoryEngine, self._engine).check(checks, stop)
            else:  # another limits storage: its client blocks, so in the thread pool
                from ..concurrency import run_sync

                engine = t.cast(_MemoryEngine, self._engine)
                results = await run_sync(
                    t.cast(t.Any, current_app)._get_current_object(), engine.check, checks, stop
                )
        except (OSError, StorageError, _redis_error()) as e:
            self._storage_failed(e)
            return self._outage_results(checks, stop)
        if self._down_until:
            self._storage_back()
        return results

    def _decide(self, checks: list[_Check], results: list[tuple[int, int, float]] | None) -> None:
        """Record what the checks found on the request; raise the 429 for a breach."""
        req = _req()
        state = _State()
        setattr(req, self._attr, state)
        if results is None:  # open during an outage: nothing known, nothing limited
            return
        now = time.time()
        breached: tuple[_Check, RequestLimit] | None = None
        for check, (status, remaining, reset_in) in zip(checks, results, strict=True):
            if status < 0:
                continue
            shown = RequestLimit(
                check.limit.item,
                check.key,
                status == 0,
                check.limit.definition.shared,
                remaining,
                int(now + reset_in + 1),
            )
            state.limits.append(shown)
            if not check.hit:
                state.deferred.append(check)
            if status == 0 and breached is None:
                breached = (check, shown)
        if breached is not None:
            state.shown = breached[1]
        elif state.limits:
            own = [limit for limit in state.limits if not limit.shared]
            state.shown = own[0] if own else state.limits[0]
        if breached is None:
            return
        check, shown = breached
        logger.info(
            "ratelimit %s (%s) exceeded at endpoint: %s",
            shown.limit,
            check.args[-2],
            check.args[-1],
        )
        response = None
        definition = check.limit.definition
        for callback in dict.fromkeys((self._on_breach, definition.on_breach)):
            if callback is not None:
                answer = callback(shown)
                if answer is not None:
                    response = answer
        retry = max(1, math.ceil(shown.reset_at - 1 - now))
        raise RateLimitExceeded(check.limit, response=response, retry_after=retry)

    def _check_request(self) -> None:
        checks = self._collect()
        if checks:
            self._decide(checks, self._run(checks))

    async def _acheck_request(self) -> None:
        sessions = _prefetches()
        try:
            checks = self._collect()
            if checks:
                self._decide(checks, await self._arun(checks, sessions))
        finally:
            # An async view's session left to this hook (see RedisSessionInterface.
            # open_session) is loaded now on the asyncio client if the limits' round trip
            # did not bring it (no limits here, outage, cluster, NOSCRIPT, another client).
            for session in sessions:
                await session._aload_ahead()

    # Read by carboy.scale.sessions: as the app's first before-request function, this hook
    # loads async views' sessions ahead on the asyncio client, so they skip the pool preload.
    _acheck_request._carboy_loads_sessions = True  # type: ignore[attr-defined]

    def _deductions(self, response: Response) -> list[_Check]:
        state: _State | None = getattr(_req(), self._attr, None)
        if state is None or not state.deferred:
            return []
        return [
            c._replace(hit=True)
            for c in state.deferred
            if c.limit.definition.deduct_when is not None
            and c.limit.definition.deduct_when(response)
        ]

    def _after_request(self, response: Response) -> Response:
        deduct = self._deductions(response)
        if deduct:
            self._run(deduct)
        return self._headers(response)

    async def _aafter_request(self, response: Response) -> Response:
        deduct = self._deductions(response)
        if deduct:
            await self._arun(deduct)
        return self._headers(response)

    def _headers(self, response: Response) -> Response:
        if not self._headers_enabled:
            return response
        state: _State | None = getattr(_req(), self._attr, None)
        if state is None or state.shown is None:
            return response
        shown = state.shown
        names = self._header_names
        headers = response.headers
        headers.add(names[HeaderNames.LIMIT], str(shown.limit.amount))
        headers.add(names[HeaderNames.REMAINING], str(shown.remaining))
        headers.add(names[HeaderNames.RESET], str(shown.reset_at))
        reset_at = shown.reset_at
        if self._retry_after == "http-date":
            headers.set(names[HeaderNames.RETRY_AFTER], http_date(reset_at))
        else:
            headers.set(names[HeaderNames.RETRY_AFTER], str(max(0, int(reset_at - time.time()))))
        return response


def _req() -> t.Any:
    """The request object itself, not its proxy (attributes are kept on it).

    :raises RuntimeError: outside a request.
    """
    # PERF: the context variable, not the ``request`` proxy (a proxy lookup costs several
    # calls; the hooks run on every request of the app).
    try:
        return _cv_request_get().request
    except LookupError:
        raise RuntimeError("Working outside of request context.") from None


def _prefetches() -> list[t.Any]:
    """The request's server-side session, if its interface lets it be loaded ahead
    (``redis_prefetch``, as ``carboy.scale.sessions``' does), so the limits' round trip also
    loads it; else nothing. The session is opened, not accessed (no ``Vary: Cookie``). It has
    ``_prefetch``/``_aprefetch``, ``_prefetched_reply`` and ``_aload_ahead``."""
    ctx = _cv_request_get()
    # PERF: one attribute read for apps whose sessions cannot be loaded ahead (cookies).
    if not getattr(ctx.app.session_interface, "redis_prefetch", False):
        return []
    session = ctx._open_session()
    return [session] if hasattr(session, "_prefetch") else []


def _redis_error() -> type[Exception]:
    """redis-py's base error (the Redis client is imported only by apps that use it)."""
    import redis

    return redis.RedisError
