"""Server-side sessions on Redis that lose no concurrent update: Flask-Session's names and keys.

``Session(app)`` with ``SESSION_TYPE = "redis"`` stores each session as a Redis hash, one field
per top-level key, each value in carboy's tagged JSON (never pickle), under
``{SESSION_KEY_PREFIX}{<sid>}`` (the ``{...}`` hash tag keeps a session and its lock in one
Cluster slot). With ``SESSION_TYPE`` unset or ``"null"`` the app keeps carboy's signed-cookie
session. Moving from Flask-Session is one import line::

    from carboy.scale.sessions import Session   # was: from flask_session import Session

What the store guarantees, unlike a whole-blob store:

* **Per-key merge.** A request writes only the keys whose serialized value it changed (set,
  deleted, or mutated in place: ``session["cart"].append(x)`` is seen by comparing each read
  key's serialized form with the one loaded), in one Lua script. Two requests writing
  different keys both keep their writes; a read-only request reverts nothing.
* **No write for reads.** A request that only reads writes nothing, except a TTL refresh at
  most once per ``SESSION_REFRESH_INTERVAL`` seconds. A session never written creates no key
  and sends no cookie; a request without a session cookie never calls Redis.
* **Atomic helpers.** :meth:`RedisSession.increment` and :meth:`RedisSession.append_to` run on
  the server (a Lua script), so 1000 concurrent increments count 1000.
* **Locks.** ``SESSION_LOCK = True`` (every request) or :func:`session_lock` (one view) takes a
  per-session lock before loading, for read-modify-write views (``session["n"] += 1``). Its
  wait is bounded (``SESSION_LOCK_WAIT`` seconds), a timeout answers 503, and the lock expires
  after ``SESSION_LOCK_TIMEOUT`` seconds if the worker dies.
* **Lifecycle.** :meth:`RedisSession.regenerate` gives a new id and deletes the old one;
  :func:`revoke_user_sessions` ends every session bound to a user (``session["_user_id"]``,
  Flask-Login's key, or :meth:`RedisSession.bind_user`).
* **Expiry.** Sliding (``PERMANENT_SESSION_LIFETIME``, on Redis's clock) and absolute
  (``SESSION_ABSOLUTE_LIFETIME``, from the session's creation).

Outage: a session is loaded lazily, on first access, so routes that do not touch the session
never call Redis and keep working. A route that reads or writes the session while Redis is
unreachable answers 503 ``Service Unavailable`` with a message saying so (an empty session is
not served in its place: that would log users out silently or mix anonymous writes into their
session). Nothing answers 500 and nothing waits longer than the connection layer's timeouts;
the first request after Redis returns is served.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
import typing as t
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from itsdangerous import BadSignature, Signer
from werkzeug.exceptions import ServiceUnavailable

from ..json.tag import TaggedJSONSerializer
from ..sessions import SessionInterface, SessionMixin
from ..signals import request_started
from .connection import EXTENSION_KEY, RedisConnection

if t.TYPE_CHECKING:
    from werkzeug.sansio.request import Request
    from werkzeug.sansio.response import Response

    from ..app import Carboy

__all__ = [
    "RedisSession",
    "RedisSessionInterface",
    "Session",
    "arevoke_user_sessions",
    "revoke_user_sessions",
    "session_lock",
]

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

_DEFAULTS: dict[str, t.Any] = {
    "SESSION_TYPE": "null",
    "SESSION_KEY_PREFIX": "session:",
    "SESSION_USE_SIGNER": False,
    "SESSION_PERMANENT": True,
    "SESSION_ID_LENGTH": 32,
    "SESSION_REDIS": None,
    "SESSION_LOCK": False,
    "SESSION_LOCK_WAIT": 5.0,
    "SESSION_LOCK_TIMEOUT": 30.0,
    "SESSION_REFRESH_INTERVAL": 60.0,
    "SESSION_ABSOLUTE_LIFETIME": None,
    "SESSION_REGENERATE_ON_LOGIN": False,
}

#: The hash field holding the session's creation time (ms, Redis's clock). A NUL first
#: character keeps it apart from any session key (keys starting with NUL are refused).
CREATED_FIELD = "\x00created"
#: The session key binding a session to a user: Flask-Login's.
USER_KEY = "_user_id"

_SID = re.compile(r"[A-Za-z0-9_-]{16,256}")
_LUA = Path(__file__).with_name("lua")
_UNREACHABLE = (
    "The session store (Redis) is unreachable, so this request cannot use its session."
    " Please try again shortly."
)


def _script(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text(encoding="utf-8")


#: ``session_load.lua`` and its SHA1, for the calls made without a registered script (sent
#: ahead in another module's round trip, or on the asyncio client).
_LOAD_SOURCE = _script("session_load")
_LOAD_SHA = hashlib.sha1(_LOAD_SOURCE.encode("utf-8")).hexdigest()


def _seconds(value: t.Any, name: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name} must be a number of seconds or a timedelta, not {value!r}.")


class SessionUnavailable(ServiceUnavailable):
    """503: the session store cannot be used now (unreachable, or its lock is busy).

    .. versionadded:: 0.1
    """

    def __init__(self, description: str, retry_after: int = 1) -> None:
        # Werkzeug's ServiceUnavailable sends the one Retry-After header itself.
        super().__init__(description, retry_after=retry_after)


class RedisSession(SessionMixin):
    """One request's view of a server-side session; loaded from Redis on first access.

    Flask-compatible: a mutable mapping like ``flask_session``'s ``ServerSideSession``, with
    :attr:`sid`, :attr:`~carboy.sessions.SessionMixin.modified`,
    :attr:`~carboy.sessions.SessionMixin.accessed` and :attr:`permanent`. Keys are strings
    (not starting with NUL); values anything carboy's tagged JSON serializes.

    :raises SessionUnavailable: (a 503) from any access when Redis is unreachable or the
        session lock could not be taken in time.

    .. versionadded:: 0.1
    """

    modified = False
    accessed = False

    def __init__(
        self, interface: RedisSessionInterface, app: Carboy, sid: str | None, locked: bool
    ) -> None:
        #: The session id; ``None`` until the session is first written (a new session).
        self.sid = sid
        self._interface = interface
        self._app = app
        self._want_lock = locked
        self._data: dict[str, t.Any] | None = None
        self._raw: dict[str, str] = {}
        self._touched: set[str] = set()
        self._deleted: set[str] = set()
        self._cleared = False
        self._exists = False  # loaded from an existing Redis key
        self._pttl = -1
        self._created = 0
        self._lock: tuple[str, str] | None = None  # (lock key, token)
        self._error: SessionUnavailable | None = None
        self._cookie_sid = sid
        self._regenerated = False
        #: ``session_load``'s reply, read ahead in another module's round trip (see
        #: :meth:`_prefetch`); ``None`` when there is none.
        self._prefetched: t.Any = None
        #: An async view's session whose load an async before-request step owes, on the
        #: asyncio client (:meth:`_aload_ahead`), instead of the thread pool's preload.
        self._aload_due = False

    # -- loading ---------------------------------------------------------------------------

    @property
    def new(self) -> bool:  # type: ignore[override]
        """Whether the session has no Redis key yet (no cookie, or an unknown id)."""
        self._load()
        return not self._exists

    def _load(self) -> dict[str, t.Any]:
        data = self._data
        if data is not None:
            return data
        if self._error is not None:
            raise self._error
        if self.sid is None:
            self._data = {}
            return self._data
        interface = self._interface
        reply = self._prefetched
        try:
            if reply is not None:
                self._prefetched = None
            else:
                if self._want_lock:
                    self._lock = interface._acquire(self._app, self.sid)
                reply = interface._run(
                    "session_load",
                    self._app,
                    [interface.key(self.sid)],
                    [interface._absolute_ms(self._app), CREATED_FIELD],
                )
        except redis.RedisError:
            self._error = SessionUnavailable(_UNREACHABLE)
            raise self._error from None
        except SessionUnavailable as e:
            self._error = e
            raise
        data = {}
        if not reply:
            # Unknown, expired or revoked: a new, empty session with an id of our own (a
            # client-chosen id is never adopted), made when it is first written.
            self.sid = None
        else:
            self._exists = True
            self._pttl = int(reply[0])
            loads = interface.serializer.loads
            for i in range(1, len(reply) - 1, 2):
                field = reply[i].decode("utf-8", "replace")
                raw = reply[i + 1].decode("utf-8", "replace")
                if field == CREATED_FIELD:
                    self._created = int(raw) if raw.isdigit() else 0
                    continue
                try:
                    data[field] = loads(raw)
                except ValueError:
                    continue  # a value this serializer cannot read is dropped, not a 500
                self._raw[field] = raw
        self._data = data
        return data

    def _prefetch(self, client: t.Any) -> tuple[str, list[str], list[t.Any]] | None:
        """The ``session_load`` call another module may send ahead on *client*, in its own
        round trip (the limiter does: one round trip for the limits and the session), as
        ``(script sha, keys, args)``; ``None`` if the session needs no load (no id, already
        loaded, or locked: a lock must be taken before the load) or lives on another client.
        The reply goes to :meth:`_prefetched`; without one the session loads itself on use.
        """
        if not self._loads_ahead() or self._interface.redis_client(self._app) is not client:
            return None
        return self._load_call()

    def _aprefetch(self, client: t.Any) -> tuple[str, list[str], list[t.Any]] | None:
        """:meth:`_prefetch` for an asyncio *client* (the limiter's asynchronous hook)."""
        if not self._loads_ahead() or self._interface._aio_client(self._app) is not client:
            return None
        return self._load_call()

    def _loads_ahead(self) -> bool:
        """Whether the session's load may be sent ahead (see :meth:`_prefetch`)."""
        return (
            self.sid is not None
            and self._data is None
            and self._error is None
            and not self._want_lock
            and self._prefetched is None
        )

    def _load_call(self) -> tuple[str, list[str], list[t.Any]]:
        interface = self._interface
        return (
            _LOAD_SHA,
            [interface.key(t.cast(str, self.sid))],
            [interface._absolute_ms(self._app), CREATED_FIELD],
        )

    def _prefetched_reply(self, reply: t.Any) -> None:
        """Keep *reply* (of the call :meth:`_prefetch` gave) for the first use."""
        if self._data is None:
            self._prefetched = reply

    def _preload(self) -> None:
        """Load now, keeping any error for the first access (ASGI: in the thread pool)."""
        try:
            self._load()
        except SessionUnavailable:
            pass

    async def _aload_ahead(self) -> None:
        """Load now on the asyncio client, if :meth:`RedisSessionInterface.open_session` left
        this session's load to an async before-request step (:attr:`_aload_due`) and no
        round trip brought it (a ``NOSCRIPT`` or error reply, a cluster, an outage); keep any
        error for the first access, like the thread pool's preload.
        """
        if not self._aload_due:
            return
        self._aload_due = False
        if not self._loads_ahead():
            return
        client = self._interface._aio_client(self._app)
        sha, keys, args = self._load_call()
        try:
            try:
                reply = await client.evalsha(sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                await client.script_load(_LOAD_SOURCE)
                reply = await client.evalsha(sha, len(keys), *keys, *args)
        except redis.RedisError:
            self._error = SessionUnavailable(_UNREACHABLE)
            return
        self._prefetched_reply(reply)

    # -- the mapping -----------------------------------------------------------------------

    def __getitem__(self, key: str) -> t.Any:
        value = self._load()[key]
        self._touched.add(key)
        return value

    def __setitem__(self, key: str, value: t.Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"Session keys must be strings, not {type(key).__name__}.")
        if key.startswith("\x00"):
            raise ValueError("Session keys starting with NUL are reserved.")
        self._load()[key] = value
        self._touched.add(key)
        self._deleted.discard(key)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._load()[key]
        self._deleted.add(key)
        self._touched.discard(key)
        self.modified = True

    def __iter__(self) -> t.Iterator[str]:
        return iter(list(self._load()))

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, key: object) -> bool:
        return key in self._load()

    def __repr__(self) -> str:
        shown = self._data if self._data is not None else "<not loaded>"
        return f"<{type(self).__name__} {self.sid!r} {shown!r}>"

    def clear(self) -> None:
        """Empty the session: at save, the whole Redis key goes (and its cookie)."""
        self._load().clear()
        self._touched.clear()
        self._deleted.clear()
        self._cleared = True
        self.modified = True

    # -- atomic helpers --------------------------------------------------------------------

    def increment(self, key: str, n: int = 1) -> int:
        """Add *n* to the integer under *key* on the server, atomically (a missing key counts
        from 0), and return the new value, which the session also holds.

        :param key: a session key. :param n: the integer to add (may be negative).
        :raises TypeError: *n* is not an int, or the key holds something else than an int.
        :raises SessionUnavailable: Redis is unreachable, or the session was revoked.

        .. versionadded:: 0.1
        """
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"increment() needs an int, not {type(n).__name__}.")
        return t.cast(int, self._update("incr", key, str(n)))

    def append_to(self, key: str, value: t.Any) -> list[t.Any]:
        """Append *value* to the list under *key* on the server, atomically (a missing key
        starts a list), and return the new list, which the session also holds.

        :raises TypeError: the key holds something else than a list.
        :raises SessionUnavailable: Redis is unreachable, or the session was revoked.

        .. versionadded:: 0.1
        """
        item = self._interface.serializer.dumps(value)
        return t.cast("list[t.Any]", self._update("append", key, item))

    async def aincrement(self, key: str, n: int = 1) -> int:
        """:meth:`increment` for async views: the Redis call runs in a worker thread."""
        return await asyncio.to_thread(self.increment, key, n)

    async def aappend_to(self, key: str, value: t.Any) -> list[t.Any]:
        """:meth:`append_to` for async views: the Redis call runs in a worker thread."""
        return await asyncio.to_thread(self.append_to, key, value)

    def _update(self, op: str, key: str, arg: str) -> t.Any:
        if not isinstance(key, str) or key.startswith("\x00"):
            raise TypeError("Session keys must be strings not starting with NUL.")
        data = self._load()
        interface = self._interface
        app = self._app
        if self.sid is None:
            self.sid = interface.new_sid(app)
        try:
            reply = interface._run(
                "session_update",
                app,
                [interface.key(self.sid)],
                [
                    op,
                    key,
                    arg,
                    interface._lifetime_ms(app),
                    interface._absolute_ms(app),
                    "1" if self._exists else "0",
                    CREATED_FIELD,
                ],
            )
        except redis.ResponseError as e:
            kind = "an int" if op == "incr" else "a list"
            raise TypeError(f"The session key {key!r} does not hold {kind}: {e}") from None
        except redis.RedisError:
            raise SessionUnavailable(_UNREACHABLE) from None
        if int(reply[0]) != 1:
            raise SessionUnavailable("This session has ended; sign in again.")
        self._exists = True
        self._pttl = interface._lifetime_ms(app)
        raw = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        value = interface.serializer.loads(raw)
        data[key] = value
        self._raw[key] = raw
        self._touched.add(key)
        self._deleted.discard(key)
        self.modified = True
        return value

    # -- lifecycle -------------------------------------------------------------------------

    def regenerate(self) -> None:
        """Give the session a new id now, deleting the old one from Redis at once: the old id
        never authenticates again. Call it on login and privilege changes.

        :raises SessionUnavailable: Redis is unreachable.

        .. versionadded:: 0.1
        """
        data = self._load()
        interface = self._interface
        if self._exists and self.sid is not None:
            try:
                interface.redis_client(self._app).delete(interface.key(self.sid))
            except redis.RedisError:
                raise SessionUnavailable(_UNREACHABLE) from None
        self.sid = interface.new_sid(self._app)
        self._exists = False
        self._raw = {}
        self._touched = set(data)
        self._deleted = set()
        self._regenerated = True
        self.modified = True

    async def aregenerate(self) -> None:
        """:meth:`regenerate` for async views: the old id's deletion runs in a worker thread,
        so the event loop never waits on Redis.

        :raises SessionUnavailable: Redis is unreachable.

        .. versionadded:: 0.1
        """
        await asyncio.to_thread(self.regenerate)

    def bind_user(self, user_id: t.Any) -> None:
        """Bind the session to *user_id* (stored as ``session["_user_id"]``, Flask-Login's
        key), so that :func:`revoke_user_sessions` ends it. ``None`` unbinds.

        .. versionadded:: 0.1
        """
        if user_id is None:
            self.pop(USER_KEY, None)
        else:
            self[USER_KEY] = str(user_id)

    @property
    def user_id(self) -> str | None:
        """The user the session is bound to (``session["_user_id"]``), or ``None``; setting
        it calls :meth:`bind_user`."""
        return t.cast("str | None", self.get(USER_KEY))

    @user_id.setter
    def user_id(self, value: t.Any) -> None:
        self.bind_user(value)

    # -- saving ----------------------------------------------------------------------------

    def _changes(self) -> tuple[list[str], list[str]]:
        """The ``[field, value, ...]`` to set and the fields to delete."""
        data = self._data
        if data is None:
            return [], []
        dumps = self._interface.serializer.dumps
        raw = self._raw
        sets: list[str] = []
        for key in self._touched:
            if key in data:
                value = dumps(data[key])
                if raw.get(key) != value:
                    sets += (key, value)
        deleted = [key for key in self._deleted if key not in data]
        return sets, deleted


class RedisSessionInterface(SessionInterface):
    """Store sessions in Redis hashes, merging each request's changes key by key.

    Flask-compatible: ``flask_session.redis.RedisSessionInterface``'s constructor arguments
    (*app*, *client*, *key_prefix*, *use_signer*, *permanent*, *sid_length*,
    *serialization_format*). Made by :class:`Session` from the ``SESSION_*`` config; see the
    module docs for the behaviour.

    :param app: accepted for Flask-Session's signature; not needed.
    :param client: a sync ``redis.Redis`` (``SESSION_REDIS``), or ``None`` to use the app's
        :class:`~carboy.scale.connection.RedisConnection`.
    :param serialization_format: accepted for Flask-Session's signature and ignored: values are
        always carboy's tagged JSON, so that the server-side helpers can work on them.
    :raises ValueError: *sid_length* is not an int from 16 to 128.

    .. versionadded:: 0.1
    """

    serializer = TaggedJSONSerializer()
    session_class = RedisSession
    #: Its sessions can be loaded ahead in another module's round trip (``_prefetch``).
    redis_prefetch = True

    def __init__(
        self,
        app: Carboy | None = None,
        client: t.Any = None,
        key_prefix: str = "session:",
        use_signer: bool = False,
        permanent: bool = True,
        sid_length: int = 32,
        serialization_format: str = "json",
    ) -> None:
        if not isinstance(sid_length, int) or not 16 <= sid_length <= 128:
            raise ValueError("SESSION_ID_LENGTH must be an int from 16 to 128 (bytes).")
        #: The ``redis.Redis`` given as ``SESSION_REDIS``, or ``None`` (the app's layer).
        self.client = client
        self.key_prefix = key_prefix
        self.use_signer = use_signer
        self.permanent = permanent
        self.sid_length = sid_length
        self._scripts: dict[int, dict[str, t.Any]] = {}

    # -- Redis -----------------------------------------------------------------------------

    def redis_client(self, app: Carboy) -> redis.Redis:
        """The sync client: ``SESSION_REDIS`` or the app's connection layer's."""
        if self.client is not None:
            return t.cast(redis.Redis, self.client)
        layer = app.extensions.get(EXTENSION_KEY)
        if layer is None:
            layer = RedisConnection(app, url=app.config.get("REDIS_URL") or "redis://127.0.0.1")
        return t.cast(redis.Redis, layer.sync)

    def _aio_client(self, app: Carboy) -> t.Any:
        """The asyncio client of the running loop (the app's connection layer's), or ``None``
        with ``SESSION_REDIS`` (a sync client, which has no asyncio twin here).

        :raises RuntimeError: no event loop is running in this thread.
        """
        if self.client is not None:
            return None
        layer = app.extensions.get(EXTENSION_KEY)
        if layer is None:
            layer = RedisConnection(app, url=app.config.get("REDIS_URL") or "redis://127.0.0.1")
        return layer.aio

    def _scripts_of(self, client: t.Any) -> dict[str, t.Any]:
        scripts = self._scripts.get(id(client))
        if scripts is None:
            scripts = {
                name: client.register_script(_script(name))
                for name in ("session_load", "session_save", "session_update", "session_unlock")
            }
            self._scripts = {id(client): scripts}
        return scripts

    def _run(self, name: str, app: Carboy, keys: list[str], args: list[t.Any]) -> t.Any:
        client = self.redis_client(app)
        return self._scripts_of(client)[name](keys=keys, args=args, client=client)

    def key(self, sid: str) -> str:
        """The Redis key of session *sid*: ``{prefix}{<sid>}`` (a Cluster hash tag)."""
        return f"{self.key_prefix}{{{sid}}}"

    def user_key(self, user_id: str) -> str:
        """The Redis set of the session ids bound to *user_id*."""
        return f"{self.key_prefix}user:{{{user_id}}}"

    def new_sid(self, app: Carboy) -> str:
        """A new session id: ``secrets.token_urlsafe(SESSION_ID_LENGTH)``."""
        return secrets.token_urlsafe(self.sid_length)

    def _lifetime_ms(self, app: Carboy) -> int:
        return max(1, int(app.permanent_session_lifetime.total_seconds() * 1000))

    def _absolute_ms(self, app: Carboy) -> int:
        value = app.config.get("SESSION_ABSOLUTE_LIFETIME")
        if value is None:
            return 0
        return max(1, int(_seconds(value, "SESSION_ABSOLUTE_LIFETIME") * 1000))

    # -- locks -----------------------------------------------------------------------------

    def _acquire(self, app: Carboy, sid: str) -> tuple[str, str]:
        """Take the lock of session *sid*, waiting at most ``SESSION_LOCK_WAIT`` seconds.

        :raises SessionUnavailable: the wait ran out.
        :raises redis.RedisError: Redis is unreachable.
        """
        config = app.config
        wait = _seconds(config["SESSION_LOCK_WAIT"], "SESSION_LOCK_WAIT")
        expiry = max(
            1, int(_seconds(config["SESSION_LOCK_TIMEOUT"], "SESSION_LOCK_TIMEOUT") * 1000)
        )
        key = self.key(sid) + ":lock"
        token = secrets.token_hex(16)
        client = self.redis_client(app)
        deadline = time.monotonic() + wait
        pause = 0.002
        while not client.set(key, token, nx=True, px=expiry):
            if time.monotonic() >= deadline:
                raise SessionUnavailable(
                    "This session is busy with another request (its lock was not released"
                    f" within {wait:g} s). Please try again."
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        return key, token

    def _release(self, app: Carboy, session: RedisSession) -> None:
        lock, session._lock = session._lock, None
        if lock is not None:
            try:
                self._run("session_unlock", app, [lock[0]], [lock[1]])
            except redis.RedisError:
                pass  # the lock's TTL releases it

    # -- cookies ---------------------------------------------------------------------------

    def _signer(self, app: Carboy) -> Signer:
        if not app.secret_key:
            raise RuntimeError("SESSION_USE_SIGNER needs the app's SECRET_KEY.")
        return Signer(app.secret_key, salt="flask-session", key_derivation="hmac")

    def _sid_from_cookie(self, app: Carboy, value: str | None) -> str | None:
        if not value:
            return None
        if self.use_signer:
            try:
                value = self._signer(app).unsign(value).decode("ascii")
            except (BadSignature, UnicodeDecodeError):
                return None
        return value if _SID.fullmatch(value) else None

    def _cookie_value(self, app: Carboy, sid: str) -> str:
        if self.use_signer:
            return self._signer(app).sign(sid.encode()).decode("ascii")
        return sid

    # -- the interface ---------------------------------------------------------------------

    def open_session(self, app: Carboy, request: Request) -> RedisSession:
        """A lazily loaded session for the request's cookie: no Redis call until the session
        is used, except for an async view under ASGI, whose session must be loaded before the
        view so that the view never waits on Redis on the event loop: on the asyncio client by
        the async limiter's hook when it will (:meth:`_loaded_by_hook`, in the round trip of
        its limits), else here (in the thread pool)."""
        # PERF: no Redis call here: a request that never touches its session (or has no
        # session cookie) costs Redis nothing, and keeps working while Redis is down.
        sid = self._sid_from_cookie(app, request.cookies.get(self.get_cookie_name(app)))
        view = None
        endpoint = getattr(request, "endpoint", None)
        if endpoint is not None:
            view = app.view_functions.get(endpoint)
        locked = bool(app.config["SESSION_LOCK"]) or bool(
            getattr(view, "_carboy_session_lock", False)
        )
        session = self.session_class(self, app, sid, locked)
        if (
            sid is not None
            and "asgi.scope" in request.environ  # type: ignore[attr-defined]
            and view is not None
            and asyncio.iscoroutinefunction(view)
        ):
            if not locked and self._loaded_by_hook(app):
                session._aload_due = True
            else:
                session._preload()
        return session

    def _loaded_by_hook(self, app: Carboy) -> bool:
        """Whether an async view's session can be left to the app's first before-request
        function, when it is one that loads sessions ahead (``_carboy_loads_sessions``: the
        limiter's with ``RATELIMIT_ASYNC``) and nothing else of the request can run on the
        event loop before it (no URL value preprocessor, no ``request_started`` receiver):
        on the session's own asyncio client (not ``SESSION_REDIS``)."""
        if self.client is not None or request_started.receivers:
            return False
        hooks = app.before_request_funcs.get(None)
        if not hooks or not getattr(hooks[0], "_carboy_loads_sessions", False):
            return False
        return not any(app.url_value_preprocessors.values())

    def regenerate(self, session: RedisSession) -> None:
        """Flask-Session 0.8's ``app.session_interface.regenerate(session)``."""
        session.regenerate()

    def save_session(self, app: Carboy, session: SessionMixin, response: Response) -> None:
        """Write the request's changes (see the module docs), release the lock, set the
        cookie. A Redis outage turns the response into a 503 instead of losing the writes."""
        if not isinstance(session, RedisSession):
            return
        if session.accessed:
            response.vary.add("Cookie")
        try:
            self._save(app, session, response)
        except redis.RedisError:
            _as_503(response, _UNREACHABLE)
        finally:
            self._release(app, session)

    def _save(self, app: Carboy, session: RedisSession, response: Response) -> None:
        data = session._data
        if data is None:
            return  # never loaded: nothing read, nothing written
        sets, deleted = session._changes()
        cookie_name = self.get_cookie_name(app)
        attrs = self._cookie_attributes(app)
        lifetime = self._lifetime_ms(app)
        if not sets and not deleted and not session._cleared and not session._regenerated:
            # Read only: refresh the TTL at most once per SESSION_REFRESH_INTERVAL.
            interval = _seconds(app.config["SESSION_REFRESH_INTERVAL"], "SESSION_REFRESH_INTERVAL")
            if session._exists and session.sid != session._cookie_sid:
                # Created by increment()/append_to() on the server: only the cookie is due.
                self._set_cookie(app, session, data, response, attrs)
                return
            if not session._exists or session._pttl < 0:
                return
            if session._pttl > lifetime - interval * 1000:
                return
        if not data:
            # Emptied (or a new session never filled): the key and its cookie go.
            if session._exists and session.sid is not None:
                self.redis_client(app).delete(self.key(session.sid))
            if session._cookie_sid is not None:
                response.delete_cookie(cookie_name, **attrs)
                response.vary.add("Cookie")
            return
        if session.sid is None:
            session.sid = self.new_sid(app)
        args: list[t.Any] = [
            lifetime,
            self._absolute_ms(app),
            "1" if session._exists else "0",
            "1" if session._cleared else "0",
            CREATED_FIELD,
            session._created,
            len(sets) // 2,
            *sets,
            *deleted,
        ]
        status = int(self._run("session_save", app, [self.key(session.sid)], args))
        if status != 1:
            # Deleted (emptied) or gone (revoked, regenerated elsewhere, expired): no cookie.
            response.delete_cookie(cookie_name, **attrs)
            response.vary.add("Cookie")
            return
        user = data.get(USER_KEY)
        if user is not None and (not session._exists or USER_KEY in sets[::2]):
            members = self.user_key(str(user))
            pipe = self.redis_client(app).pipeline(transaction=False)
            pipe.sadd(members, session.sid)
            pipe.pexpire(members, lifetime + self._absolute_ms(app))
            pipe.execute()
        session._exists = True
        self._set_cookie(app, session, data, response, attrs)

    def _set_cookie(
        self,
        app: Carboy,
        session: RedisSession,
        data: dict[str, t.Any],
        response: Response,
        attrs: dict[str, t.Any],
    ) -> None:
        """Send the cookie when the id is new, or to slide a permanent cookie's expiry."""
        permanent = self.permanent or bool(data.get("_permanent"))
        if session.sid is not None and (session.sid != session._cookie_sid or permanent):
            expires = None
            if permanent:
                expires = datetime.now(UTC) + app.permanent_session_lifetime
            response.set_cookie(
                self.get_cookie_name(app),
                self._cookie_value(app, session.sid),
                expires=expires,
                **attrs,
            )
            response.vary.add("Cookie")


def _as_503(response: Response, message: str) -> None:
    """Turn *response* into a 503 saying *message* (the session could not be saved)."""
    response.status_code = 503
    response.headers["Retry-After"] = "1"
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers.pop("ETag", None)
    response.set_data(message)  # type: ignore[attr-defined]
    # A cookie set for this session would point at data that was not saved.
    response.headers.remove("Set-Cookie")


def session_lock(view: F) -> F:
    """Mark *view* as read-modify-write: its session is locked before it is loaded and
    released after it is saved (see ``SESSION_LOCK``). Works on sync and async views.

    .. versionadded:: 0.1
    """
    view._carboy_session_lock = True  # type: ignore[attr-defined]
    return view


def revoke_user_sessions(user_id: t.Any, app: Carboy | None = None) -> int:
    """End every session bound to *user_id* (on every device); return how many were ended.

    :raises RuntimeError: the app's sessions are not Redis sessions.
    :raises redis.RedisError: Redis is unreachable.

    .. versionadded:: 0.1
    """
    if app is None:
        from ..globals import current_app

        app = t.cast("Carboy", current_app._get_current_object())  # type: ignore[attr-defined]
    interface = app.session_interface
    if not isinstance(interface, RedisSessionInterface):
        raise RuntimeError("revoke_user_sessions() needs SESSION_TYPE = 'redis'.")
    client = interface.redis_client(app)
    members_key = interface.user_key(str(user_id))
    sids = [m.decode() for m in client.smembers(members_key)]  # type: ignore[union-attr]
    ended = 0
    for sid in sids:
        ended += int(client.delete(interface.key(sid)))  # type: ignore[arg-type]
    client.delete(members_key)
    return ended


class Session:
    """Server-side sessions for an app: Flask-Session 0.8's extension, on Redis.

    ``SESSION_TYPE = "redis"`` installs a :class:`RedisSessionInterface` (on ``SESSION_REDIS``
    if given, else the app's :class:`~carboy.scale.connection.RedisConnection`, made from
    ``REDIS_URL`` if absent); ``"null"`` or unset leaves the signed-cookie session. Other
    Flask-Session types raise.

    :raises ValueError: an unsupported ``SESSION_TYPE``.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Carboy | None = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Carboy) -> None:
        """Read the ``SESSION_*`` config and install the session interface."""
        for key, value in _DEFAULTS.items():
            app.config.setdefault(key, value)
        config = app.config
        kind = str(config["SESSION_TYPE"] or "null").lower()
        app.extensions["session"] = self
        if kind == "null":
            return
        if kind != "redis":
            raise ValueError(
                f"carboy's Session supports SESSION_TYPE 'redis' or 'null', not {kind!r}."
            )
        for name in ("SESSION_LOCK_WAIT", "SESSION_LOCK_TIMEOUT", "SESSION_REFRESH_INTERVAL"):
            _seconds(config[name], name)
        if config["SESSION_ABSOLUTE_LIFETIME"] is not None:
            _seconds(config["SESSION_ABSOLUTE_LIFETIME"], "SESSION_ABSOLUTE_LIFETIME")
        client = config["SESSION_REDIS"]
        if client is None and EXTENSION_KEY not in app.extensions and config.get("REDIS_URL"):
            RedisConnection(app)
        app.session_interface = RedisSessionInterface(
            app,
            client=client,
            key_prefix=config["SESSION_KEY_PREFIX"],
            use_signer=bool(config["SESSION_USE_SIGNER"]),
            permanent=bool(config["SESSION_PERMANENT"]),
            sid_length=config["SESSION_ID_LENGTH"],
        )
        if config["SESSION_REGENERATE_ON_LOGIN"]:
            _regenerate_on_login(app)

    def revoke_user_sessions(self, user_id: t.Any) -> int:
        """:func:`revoke_user_sessions` for this extension's app."""
        if self.app is None:
            return revoke_user_sessions(user_id)
        return revoke_user_sessions(user_id, self.app)


async def arevoke_user_sessions(user_id: t.Any, app: Carboy | None = None) -> int:
    """:func:`revoke_user_sessions` for async code: the Redis calls run in a worker thread.

    :raises RuntimeError: the app's sessions are not Redis sessions.
    :raises redis.RedisError: Redis is unreachable.

    .. versionadded:: 0.1
    """
    if app is None:
        from ..globals import current_app

        app = t.cast("Carboy", current_app._get_current_object())  # type: ignore[attr-defined]
    return await asyncio.to_thread(revoke_user_sessions, user_id, app)


def _regenerate_on_login(app: Carboy) -> None:
    """Connect Flask-Login's ``user_logged_in`` signal, when Flask-Login is installed."""
    try:
        from flask_login.signals import user_logged_in  # type: ignore[import-untyped]
    except ImportError:
        return

    def regenerate(sender: t.Any, **extra: t.Any) -> None:
        from ..globals import session

        current = session._get_current_object()  # type: ignore[attr-defined]
        if isinstance(current, RedisSession):
            current.regenerate()

    user_logged_in.connect(regenerate, app, weak=False)
