"""One Redis connection layer per app: a sync client and an asyncio client, made per process.

Configured by one URL (``REDIS_URL``, or ``CARBOY_REDIS_URL`` in the environment through
:meth:`~carboy.Config.from_prefixed_env`):

===========================================================  =================================
``redis://[:password@]host[:port][/db]``                     one server (``rediss://`` for TLS,
                                                             ``unix:///path.sock`` for a socket)
``redis+sentinel://[:password@]host:port[,host:port]/name``  the primary of Sentinel service
``[/db]``                                                    *name*
``redis+cluster://[:password@]host:port[,host:port]``        a Redis Cluster, from its seeds
===========================================================  =================================

Every client is redis-py's own (:class:`redis.Redis`, :class:`redis.cluster.RedisCluster`,
:class:`redis.sentinel.Sentinel`, and their :mod:`redis.asyncio` twins). Sessions, the cache,
rate limits and pub/sub share the clients of one :class:`RedisConnection`.

Processes: a client is made on first use in each process (a pool made before a fork is never
used by the child), so ``gunicorn --preload`` is safe. Event loops: asyncio connections belong
to the loop that made them, so each running loop gets its own asyncio client (the ASGI
server's loop, and under WSGI each worker thread's loop for ``async def`` views).

Timeouts: connecting waits at most ``REDIS_CONNECT_TIMEOUT`` seconds (0.5) and a reply at most
``REDIS_SOCKET_TIMEOUT`` seconds (1.0); a failed command is retried once at once. So an
outage costs a caller about a second at most, and raises :class:`redis.exceptions.RedisError`
(``ConnectionError`` or ``TimeoutError``), which each module turns into its documented
outage behaviour. Idle connections are checked (``PING``) after ``REDIS_HEALTH_CHECK_INTERVAL``
seconds (15), so a connection the server closed is replaced instead of failing a command.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import os
import threading
import typing as t
import weakref
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

if t.TYPE_CHECKING:
    from ..app import Carboy

__all__ = ["RedisConnection", "execute", "get_redis"]

#: The key of the layer in ``app.extensions``.
EXTENSION_KEY = "carboy.redis"

_DEFAULTS: dict[str, t.Any] = {
    "REDIS_URL": None,
    "REDIS_CONNECT_TIMEOUT": 0.5,
    "REDIS_SOCKET_TIMEOUT": 1.0,
    "REDIS_HEALTH_CHECK_INTERVAL": 15,
    "REDIS_MAX_CONNECTIONS": None,
}


class RedisConnection:
    """The app's Redis clients, sync and asyncio, from one URL.

    :param app: the app to register with now, or ``None`` to call :meth:`init_app` later.
    :param url: the Redis URL (see the module docs); ``None`` reads ``REDIS_URL`` from the
        app's config at :meth:`init_app`.

    The layer is kept in ``app.extensions["carboy.redis"]``; :func:`get_redis` finds it.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Carboy | None = None, url: str | None = None) -> None:
        #: The URL the clients connect to; set by the constructor or :meth:`init_app`.
        self.url = url
        self._options: dict[str, t.Any] = {}
        self._lock = threading.Lock()
        self._pid = 0
        self._sync: t.Any = None
        self._aio: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, t.Any] = (
            weakref.WeakKeyDictionary()
        )
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Carboy) -> None:
        """Read the app's ``REDIS_*`` config and register in ``app.extensions``.

        :raises ValueError: no URL was given and ``REDIS_URL`` is not set, or the URL's scheme
            is not one of those in the module docs.
        """
        for key, value in _DEFAULTS.items():
            app.config.setdefault(key, value)
        url = self.url or app.config["REDIS_URL"]
        if not url:
            raise ValueError("RedisConnection needs a URL: set REDIS_URL (or CARBOY_REDIS_URL).")
        _parse(url)  # fail at start-up, not on the first request
        self.url = url
        config = app.config
        self._options = {
            "socket_connect_timeout": float(config["REDIS_CONNECT_TIMEOUT"]),
            "socket_timeout": float(config["REDIS_SOCKET_TIMEOUT"]),
            "health_check_interval": config["REDIS_HEALTH_CHECK_INTERVAL"],
            "max_connections": config["REDIS_MAX_CONNECTIONS"],
        }
        app.extensions[EXTENSION_KEY] = self

    @property
    def is_cluster(self) -> bool:
        """Whether the URL names a Redis Cluster (keys of one operation must share a hash
        slot: the modules put ``{...}`` hash tags in their keys)."""
        return _parse(self._url())[0] == "cluster"

    def _url(self) -> str:
        if self.url is None:
            raise RuntimeError("RedisConnection is not initialised: call init_app(app) first.")
        return self.url

    @property
    def sync(self) -> redis.Redis:
        """The sync client of this process (a :class:`redis.Redis`, or a
        :class:`redis.cluster.RedisCluster` for a cluster URL), made on first use."""
        pid = os.getpid()
        client = self._sync
        if client is None or self._pid != pid:
            with self._lock:
                if self._sync is None or self._pid != pid:
                    self._sync = _make(self._url(), self._options, asyncio_client=False)
                    self._aio = weakref.WeakKeyDictionary()
                    self._pid = pid
                client = self._sync
        return t.cast(redis.Redis, client)

    @property
    def aio(self) -> redis.asyncio.Redis:
        """The asyncio client of this process for the running event loop, made on first use.

        :raises RuntimeError: no event loop is running in this thread.
        """
        loop = asyncio.get_running_loop()
        if self._pid != os.getpid():
            self.sync  # noqa: B018 (resets the per-process state after a fork)
        client = self._aio.get(loop)
        if client is None:
            client = self._aio[loop] = _make(self._url(), self._options, asyncio_client=True)
        return t.cast(redis.asyncio.Redis, client)

    def ping(self) -> bool:
        """``PING`` the server with the sync client; ``False`` on any Redis error."""
        try:
            return bool(self.sync.ping())
        except redis.RedisError:
            return False


def get_redis(app: Carboy | None = None) -> RedisConnection:
    """The :class:`RedisConnection` registered on *app* (default: the current app).

    :raises RuntimeError: none was registered.

    .. versionadded:: 0.1
    """
    if app is None:
        from ..globals import current_app

        app = current_app
    layer = app.extensions.get(EXTENSION_KEY)
    if layer is None:
        raise RuntimeError("No RedisConnection on this app: call RedisConnection(app) first.")
    return t.cast(RedisConnection, layer)


def execute(client: t.Any, commands: t.Sequence[tuple[t.Any, ...]]) -> list[t.Any]:
    """Send *commands* (each ``("NAME", *args)``) in one round trip on *client*, a sync
    redis-py client; return one reply per command, or the :class:`redis.ResponseError`
    (``NoScriptError``...) the server answered for it, as redis-py's ``pipeline(transaction=
    False).execute(raise_on_error=False)`` does. No reply callbacks are applied (raw replies:
    use it for ``EVALSHA``, ``GET``, ``PTTL`` and the like).

    A :class:`redis.Redis` (one server, or Sentinel's primary) uses a connection of its own
    pool that the calling thread keeps (see :func:`_held_connection`), sends the packed
    commands and reads the replies with redis-py's connection and parser; a connection or
    timeout error is retried once on a new connection, as the layer's clients retry. Another
    client (a cluster) runs one command itself, or several in a plain pipeline.

    :raises redis.ConnectionError: the server could not be reached (twice).
    :raises redis.TimeoutError: the server did not answer within the socket timeout (twice).

    .. versionadded:: 0.1
    """
    pool = getattr(client, "connection_pool", None)
    if pool is None or type(client) is not redis.Redis:
        if len(commands) == 1:
            try:
                return [client.execute_command(*commands[0])]
            except redis.ResponseError as e:
                return [e]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return t.cast(list[t.Any], pipe.execute(raise_on_error=False))
    # PERF: redis-py's client layer (reply callbacks, retry wrapper, per-command events, the
    # pool's check-out and check-in) costs about 35 us of a 70 us round trip here; the
    # commands sent here need none of it, so they go straight to a connection this thread
    # keeps (redis-py's own packing, socket, health check and parser).
    conn = _held_connection(pool)
    for attempt in (0, 1):
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[t.Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as e:
                    replies.append(e)
            return replies
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()  # the next send connects again
            if attempt:
                raise
        except BaseException:
            conn.disconnect()  # a reply may be left unread: never reuse the socket
            raise
    raise AssertionError("unreachable")


class _Held:
    """The connections one thread keeps, one per pool (weakly: a pool that goes away takes
    its entry with it); handed back to their pools when the thread ends."""

    __slots__ = ("conns",)

    def __init__(self) -> None:
        self.conns: weakref.WeakKeyDictionary[t.Any, t.Any] = weakref.WeakKeyDictionary()

    def __del__(self) -> None:
        for pool, conn in list(self.conns.items()):
            try:
                pool.release(conn)
            except Exception:  # interpreter shutdown: nothing left to hand back to
                pass


# A thread-local, not a contextvar: a connection is a resource of the thread that uses it (one
# socket, never shared between threads), not request state; a contextvar's value would be
# copied into every task and context that the thread runs.
_thread = threading.local()


def _held_connection(pool: t.Any) -> t.Any:
    """The connection of *pool* that this thread keeps, taken from the pool on first use (and
    again in a forked child). Kept for the thread's life: a request's round trips skip the
    pool's check-out and check-in; the pool still counts it (``max_connections``), and
    :meth:`redis.ConnectionPool.disconnect` closes it (it connects again on its next use)."""
    held: _Held | None = getattr(_thread, "held", None)
    if held is None:
        held = _thread.held = _Held()
    conn = held.conns.get(pool)
    if conn is None or conn.pid != os.getpid():
        conn = held.conns[pool] = pool.get_connection()
    return conn


def _parse(url: str) -> tuple[str, dict[str, t.Any]]:
    """``(kind, parts)`` of a Redis URL: kind ``"single"``, ``"sentinel"`` or ``"cluster"``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("redis", "rediss", "unix"):
        return "single", {}
    if scheme not in ("redis+sentinel", "redis+cluster"):
        raise ValueError(
            f"Unsupported Redis URL scheme {parts.scheme!r}: use redis://, rediss://, unix://,"
            " redis+sentinel:// or redis+cluster://."
        )
    netloc = parts.netloc.rpartition("@")[2]
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        if item.startswith("["):  # [IPv6]:port
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = item.partition(":")
        if not host:
            raise ValueError(f"A host is missing in the Redis URL {url!r}.")
        hosts.append((host, int(port) if port else default_port))
    password = unquote(parts.password) if parts.password else None
    path = [p for p in parts.path.split("/") if p]
    if scheme == "redis+cluster":
        return "cluster", {"hosts": hosts, "password": password}
    if not path:
        raise ValueError("A redis+sentinel:// URL needs the service name as its path.")
    db = int(path[1]) if len(path) > 1 else 0
    return "sentinel", {"hosts": hosts, "password": password, "service": path[0], "db": db}


def _make(url: str, options: dict[str, t.Any], *, asyncio_client: bool) -> t.Any:
    """A new client for *url* with the layer's timeouts (sync or asyncio)."""
    kind, parts = _parse(url)
    options = {k: v for k, v in options.items() if v is not None}
    if asyncio_client:
        from redis.asyncio.retry import Retry as AsyncRetry

        options["retry"] = AsyncRetry(NoBackoff(), 1)
    else:
        options["retry"] = Retry(NoBackoff(), 1)
    if kind == "single":
        module: t.Any = redis.asyncio if asyncio_client else redis
        return module.Redis.from_url(url, **options)
    if kind == "cluster":
        from redis.asyncio.cluster import ClusterNode as AsyncNode
        from redis.asyncio.cluster import RedisCluster as AsyncCluster
        from redis.cluster import ClusterNode, RedisCluster

        options.pop("health_check_interval", None)
        if asyncio_client:
            options.pop("max_connections", None)
            seeds = [AsyncNode(h, p) for h, p in parts["hosts"]]
            return AsyncCluster(startup_nodes=seeds, password=parts["password"], **options)
        nodes = [ClusterNode(h, p) for h, p in parts["hosts"]]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, password=parts["password"], **options)
    sentinel_options = {
        "socket_connect_timeout": options["socket_connect_timeout"],
        "socket_timeout": options["socket_timeout"],
    }
    if asyncio_client:
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        sentinel: t.Any = AsyncSentinel(  # type: ignore[no-untyped-call]
            parts["hosts"], sentinel_kwargs=sentinel_options
        )
    else:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            parts["hosts"], sentinel_kwargs=sentinel_options
        )
    options.pop("max_connections", None)
    return sentinel.master_for(
        parts["service"], db=parts["db"], password=parts["password"], **options
    )
