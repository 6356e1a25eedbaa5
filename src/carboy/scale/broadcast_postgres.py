"""The PostgreSQL ``LISTEN``/``NOTIFY`` backend of :mod:`carboy.scale.broadcast`, on psycopg 3.

``BROADCAST_BACKEND = "postgres"``, with ``BROADCAST_POSTGRES_URL`` (or, without it, the app's
``SQLALCHEMY_DATABASE_URI``): for apps that run PostgreSQL and no Redis. Delivery is at most
once, as Redis pub/sub: nothing is kept, a message published while a reader reconnects is
lost, and every lost message is reported as a :class:`~carboy.scale.broadcast.Gap` with the
exact numbers missed.

**Channels.** A channel ``c`` is the ``NOTIFY`` channel ``carboy_<hash>``: 40 hex digits of
BLAKE2b over ``<BROADCAST_KEY_PREFIX>c``. Any string is a channel (quotes, spaces, upper case,
any length) and none ever reaches SQL as text: PostgreSQL identifiers are folded, cut at 63
bytes and would need quoting, so the hash is what the server sees, and it is passed as a
parameter (``pg_notify(%s, ...)``) or as a quoted identifier (``LISTEN "carboy_..."``).

**Sequence numbers.** Each channel has a row in the table ``BROADCAST_POSTGRES_TABLE``
(``carboy_broadcast``, made on first publish; :meth:`PostgresBackend.ensure_table` makes it
ahead, or see the DDL in ``docs/scale/realtime.md``). Publishing is one statement, so one
transaction: the row's ``seq`` is incremented (``INSERT ... ON CONFLICT DO UPDATE``) and
``pg_notify(channel, '<seq>:<kind><data>')`` is called with the new number. The row lock
orders the publishers of a channel, and PostgreSQL delivers notifications in commit order, so
each reader sees ``1, 2, 3...``: a jump is a message lost (``Gap`` ``"sequence"``), and after
a reconnect the row says exactly what was published meanwhile (``"reconnect"``).

**Payloads.** ``NOTIFY`` takes at most 8000 bytes. A message's data may be
:data:`PAYLOAD_LIMIT` bytes (7,900) once encoded: text as UTF-8, ``bytes`` (and text holding
a NUL character, which PostgreSQL text cannot hold) in base64, 4/3 of their size, so 5,925
bytes of binary data. :meth:`~carboy.scale.broadcast.Broadcast.publish` raises ``ValueError``
beyond it, before anything is sent.

**Connections.** Each process (each event loop of it) has **one** listening connection,
whatever the number of channels and subscribers (``application_name``
``carboy-broadcast:postgres:<pid>`` in ``pg_stat_activity``): it ``LISTEN``\\ s to every
channel that loop reads, and fans each notification out to that channel's subscribers. It is
a plain :class:`psycopg.AsyncConnection` in autocommit mode, never borrowed from a pool.
Publishing borrows from ``psycopg_pool`` pools of ``BROADCAST_POSTGRES_POOL_SIZE`` connections
at most: a :class:`psycopg_pool.ConnectionPool` for
:meth:`~carboy.scale.broadcast.Broadcast.publish` (threads) and an
:class:`psycopg_pool.AsyncConnectionPool` per event loop for
:meth:`~carboy.scale.broadcast.Broadcast.apublish`, so nothing waits on the event loop. Both
open their connections on first use. The URL must reach PostgreSQL itself or a PgBouncer in
session mode: ``LISTEN`` does not work through transaction pooling.

**Failures.** A listener whose connection fails (``pg_terminate_backend``, a restart, a cut)
reconnects at once, then after 0.05, 0.1, 0.2 s ... at most ``BROADCAST_RECONNECT_MAX``
(0.5 s) apart, ``LISTEN``\\ s again, reads each channel's row and reports what it missed.
After ``BROADCAST_BLOCK`` seconds without a notification it runs ``SELECT 1`` (which must
answer within ``BROADCAST_BLOCK`` + 1 seconds), so a dead peer is found and a server's
``idle_session_timeout`` longer than ``BROADCAST_BLOCK`` never closes it. A publish whose
pooled connection turns out dead is retried once on another connection; as for the other
backends, a message whose commit succeeded but whose answer was lost is then published twice,
with two numbers.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import threading
import typing as t
import weakref

import psycopg
import psycopg_pool
from psycopg import sql

from .broadcast import Gap, Message, parse_id
from .broadcast_backends import Backend
from .broadcast_redis import backoff

if t.TYPE_CHECKING:
    from ..app import Carboy
    from .broadcast import _Channel

__all__ = ["PAYLOAD_LIMIT", "PostgresBackend", "make_backend", "notify_channel", "postgres_url"]

logger = logging.getLogger("carboy.scale.broadcast")

#: The most bytes a message's encoded data may have (text as UTF-8, bytes in base64): what
#: fits in ``NOTIFY``'s 8000 bytes with the sequence number in front.
PAYLOAD_LIMIT = 7900
#: PostgreSQL's own limit on a ``NOTIFY`` payload (bytes).
NOTIFY_LIMIT = 8000

#: The errors after which a listener reconnects and a publish is tried once more.
_LOST = (psycopg.Error, OSError)


def make_backend(app: Carboy) -> PostgresBackend:
    """The PostgreSQL backend for *app*: ``BROADCAST_POSTGRES_URL``, else
    ``SQLALCHEMY_DATABASE_URI`` (Flask-SQLAlchemy's primary).

    :raises ValueError: neither is set, or the URL is not a PostgreSQL one.

    .. versionadded:: 0.1
    """
    config = app.config
    url = config["BROADCAST_POSTGRES_URL"] or config.get("SQLALCHEMY_DATABASE_URI")
    if not url:
        raise ValueError(
            "The postgres broadcast backend needs BROADCAST_POSTGRES_URL"
            " (or SQLALCHEMY_DATABASE_URI)."
        )
    return PostgresBackend(
        postgres_url(url),
        table=str(config["BROADCAST_POSTGRES_TABLE"]),
        prefix=str(config["BROADCAST_KEY_PREFIX"]),
        block=float(config["BROADCAST_BLOCK"]),
        reconnect_max=float(config["BROADCAST_RECONNECT_MAX"]),
        pool_size=int(config["BROADCAST_POSTGRES_POOL_SIZE"]),
    )


def postgres_url(url: t.Any) -> str:
    """The libpq URL of *url*: a ``postgresql://`` URL as is, a SQLAlchemy URL (a string or a
    ``sqlalchemy.engine.URL``) without its ``+driver``, so ``postgresql+psycopg://app@db/app``
    gives ``postgresql://app@db/app``.

    :raises ValueError: it is not a PostgreSQL URL.

    .. versionadded:: 0.1
    """
    render = getattr(url, "render_as_string", None)
    text = render(hide_password=False) if render is not None else str(url)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.partition("+")[0] not in ("postgresql", "postgres"):
        shown = scheme + sep if sep else "no scheme"
        raise ValueError(f"Not a PostgreSQL URL for the broadcast ({shown}).")
    return "postgresql://" + rest


def notify_channel(prefix: str, channel: str) -> str:
    """The ``NOTIFY`` channel of broadcast *channel*: ``carboy_`` and 40 hex digits of
    BLAKE2b over *prefix* + *channel* (47 characters, a valid identifier whatever *channel*
    holds).

    .. versionadded:: 0.1
    """
    raw = (prefix + channel).encode("utf-8", "surrogatepass")
    return "carboy_" + hashlib.blake2b(raw, digest_size=20).hexdigest()


def _encode(kind: str, data: bytes) -> str:
    """The payload text after the sequence number: ``s<text>``, or ``b``/``t`` and base64 of
    bytes, or of text that holds a NUL (PostgreSQL text cannot)."""
    if kind == "s":
        text = data.decode("utf-8")
        if "\x00" not in text:
            return "s" + text
        kind = "t"
    return kind + base64.b64encode(data).decode("ascii")


def _decode(channel: str, payload: str) -> tuple[int, Message]:
    """``(sequence number, message)`` of a notification's payload ``<n>:<kind><data>``."""
    head, _, rest = payload.partition(":")
    seq = int(head)
    kind, body = rest[:1], rest[1:]
    data: str | bytes
    if kind == "b":
        data = base64.b64decode(body)
    elif kind == "t":
        data = base64.b64decode(body).decode("utf-8")
    else:
        data = body
    return seq, Message(channel, str(seq), data)


async def _each(conn: psycopg.AsyncConnection[t.Any], command: str, keys: list[str]) -> None:
    """``LISTEN`` (or ``UNLISTEN``) each of *keys* (quoted identifiers)."""
    verb = sql.SQL(command)
    for start in range(0, len(keys), 200):
        # PERF: 200 statements in one round trip (no parameters: one simple query), so a
        # listener that comes back to thousands of channels is not slowed by as many trips.
        chunk = keys[start : start + 200]
        await conn.execute(
            sql.SQL("; ").join(verb + sql.SQL(" ") + sql.Identifier(k) for k in chunk)
        )


class _Follow:
    """One channel a listener reads: its hub channel and the last number it delivered."""

    __slots__ = ("channel", "failed", "key", "last")

    def __init__(self, key: str, channel: _Channel) -> None:
        self.key = key
        self.channel = channel
        self.last: int | None = None  # None until the listener read the channel's row
        #: Set with the listener's exception if it fails (a bug): the channel's reader ends.
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Listener:
    """The one listening connection of an event loop, for every channel that loop reads."""

    def __init__(self, backend: PostgresBackend, loop: asyncio.AbstractEventLoop) -> None:
        self.backend = backend
        self.loop = loop
        self.follows: dict[str, _Follow] = {}
        self.listening: set[str] = set()
        self.changed = asyncio.Event()
        self.reading = False  # inside conn.notifies(): safe to interrupt
        self.barrier = f"carboy_barrier_{os.getpid()}_{id(self):x}"
        self.task: asyncio.Task[None] | None = None
        #: The server pid of the current connection (``None`` while disconnected).
        self.server_pid: int | None = None

    def add(self, follow: _Follow) -> None:
        self.follows[follow.key] = follow
        self.changed.set()
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="broadcast postgres listener")
            self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        for follow in self.follows.values():
            if not follow.failed.done():
                follow.failed.set_exception(t.cast(BaseException, task.exception()))

    def remove(self, follow: _Follow) -> None:
        if self.follows.get(follow.key) is follow:
            del self.follows[follow.key]
        if not self.follows and self.task is not None:
            self.task.cancel()  # the last channel left: close the connection
            self.task = None
        else:
            self.changed.set()

    async def _run(self) -> None:
        conn: psycopg.AsyncConnection[t.Any] | None = None
        failures = 0
        try:
            while True:
                try:
                    if conn is None:
                        conn = await self.backend._connect()
                        self.server_pid = conn.info.backend_pid
                        barrier = sql.SQL("LISTEN {}").format(sql.Identifier(self.barrier))
                        await conn.execute(barrier)
                        self.listening = set()
                        await self._sync(conn, reconnected=True)
                    else:
                        await self._sync(conn, reconnected=False)
                    if failures:
                        logger.warning("Broadcast postgres listener is back.")
                        failures = 0
                    await self._read(conn)
                except _LOST as e:  # and any refusal (a missing schema, a right): try again
                    failures += 1
                    self.server_pid = None
                    if conn is not None:
                        await conn.close()
                        conn = None
                    if failures == 1:
                        logger.warning(
                            "Broadcast postgres listener lost its connection (%s); reconnecting.",
                            str(e).strip(),
                        )
                    await asyncio.sleep(backoff(failures, self.backend.reconnect_max))
        finally:
            self.server_pid = None
            if conn is not None:
                await conn.close()

    async def _sync(self, conn: psycopg.AsyncConnection[t.Any], *, reconnected: bool) -> None:
        """``LISTEN``/``UNLISTEN`` what changed; read the rows of the channels (re)joined, and
        set them ready or report what they missed."""
        self.changed.clear()
        wanted = set(self.follows)
        # Only channels LISTENed to below: one that joins meanwhile waits for the next pass
        # (set ready before its LISTEN, it could miss a message without a gap).
        joined = [f for k, f in self.follows.items() if reconnected or f.last is None]
        await _each(conn, "UNLISTEN", sorted(self.listening - wanted))
        await _each(conn, "LISTEN", sorted(wanted - self.listening))
        self.listening = wanted
        if not joined:
            return
        current = await self.backend._read_seqs(conn, [f.key for f in joined])
        # What was committed before that read is on this connection before the barrier's
        # notification (notifications arrive in commit order): it was not missed.
        token = os.urandom(8).hex()
        await conn.execute("SELECT pg_notify(%s, %s)", [self.barrier, token])
        early: dict[str, list[tuple[int, Message]]] = {f.key: [] for f in joined}
        later = await self._until_barrier(conn, token, early)
        for follow in joined:
            name = follow.channel.name
            now = current.get(follow.key, 0)
            seqs = [seq for seq, _ in early[follow.key]]
            if follow.last is None:
                follow.last = now
                follow.channel.set_ready(str(now))
            elif now < follow.last:  # the row was deleted: the channel starts again
                logger.info("Broadcast channel %r started its sequence again.", name)
                follow.last = now
            else:
                missed_until = min(min(seqs, default=now + 1) - 1, now)
                if missed_until > follow.last:
                    missed = missed_until - follow.last
                    gap = Gap(name, "reconnect", str(follow.last), str(missed_until), missed)
                    follow.last = missed_until
                    follow.channel.gap(gap)
            for seq, message in early[follow.key]:
                if seq > follow.last:
                    self._deliver(follow, seq, Message(name, message.id, message.data))
        for notify in later:  # what came after the barrier, in the same packet
            self._handle(notify.channel, notify.payload)

    async def _until_barrier(
        self,
        conn: psycopg.AsyncConnection[t.Any],
        token: str,
        early: dict[str, list[tuple[int, Message]]],
    ) -> list[psycopg.Notify]:
        """Read notifications until the barrier *token*: those of the channels in *early* are
        kept there, the others delivered; returns what followed the barrier in its packet."""
        deadline = self.loop.time() + self.backend.read_timeout
        while True:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise TimeoutError("The listener's barrier notification did not come back.")
            # Whole packets (stop_after=1 ends after the packet that holds one): leaving
            # the generator in the middle of one would drop the rest of it.
            batch = [n async for n in conn.notifies(timeout=remaining, stop_after=1)]
            for i, notify in enumerate(batch):
                if notify.channel == self.barrier:
                    if notify.payload == token:
                        return batch[i + 1 :]
                elif notify.channel in early:
                    early[notify.channel].append(_decode("", notify.payload))
                else:
                    self._handle(notify.channel, notify.payload)

    async def _read(self, conn: psycopg.AsyncConnection[t.Any]) -> None:
        """Deliver notifications until a channel joins or leaves; after ``block`` seconds of
        silence, check the connection."""
        if self.changed.is_set():
            return
        self.reading = True  # from now until the notifies() loop ends: safe to cancel
        reader = asyncio.ensure_future(self._notifies(conn))
        waker = asyncio.ensure_future(self.changed.wait())
        try:
            await asyncio.wait((reader, waker), return_when=asyncio.FIRST_COMPLETED)
            if not reader.done() and self.reading:
                # PERF: interrupting the wait on the socket leaves the idle connection
                # usable (no query runs); the next pass LISTENs to the new channel at once.
                reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # this task itself was cancelled
                    raise
        finally:
            waker.cancel()
            if not reader.done():
                reader.cancel()

    async def _notifies(self, conn: psycopg.AsyncConnection[t.Any]) -> None:
        got = False
        try:
            async for notify in conn.notifies(timeout=self.backend.block):
                got = True
                self._handle(notify.channel, notify.payload)
        finally:
            self.reading = False
        if not got and not self.changed.is_set():
            await asyncio.wait_for(conn.execute("SELECT 1"), self.backend.read_timeout)

    def _handle(self, key: str, payload: str) -> None:
        follow = self.follows.get(key)
        if follow is None or follow.last is None:
            return  # a channel left, or not joined yet (its row is read after LISTEN)
        seq, message = _decode(follow.channel.name, payload)
        self._deliver(follow, seq, message)

    def _deliver(self, follow: _Follow, seq: int, message: Message) -> None:
        last = follow.last
        if last is not None:
            if seq > last + 1:
                name = follow.channel.name
                follow.channel.gap(Gap(name, "sequence", str(last), str(seq - 1), seq - last - 1))
            elif seq <= last:  # the row was deleted and made again
                logger.info("Broadcast channel %r started its sequence again.", message.channel)
        follow.last = seq
        follow.channel.dispatch((message,))


class PostgresBackend(Backend):
    """PostgreSQL ``LISTEN``/``NOTIFY``: at most once, nothing kept; every lost message is
    reported as a gap. The module's docs say how.

    :param url: a libpq URL (``postgresql://...``; see :func:`postgres_url`).
    :param table: the sequence numbers' table (may be ``schema.table``).
    :param prefix: ``BROADCAST_KEY_PREFIX``, hashed into each ``NOTIFY`` channel.
    :param block: seconds of silence after which a listener checks its connection.
    :param reconnect_max: the longest pause between reconnect attempts (seconds).
    :param pool_size: the most publishing connections per pool (one sync pool per process,
        one asyncio pool per event loop).

    .. versionadded:: 0.1
    """

    name = "postgres"
    keeps_history = False

    def __init__(
        self,
        url: str,
        *,
        table: str = "carboy_broadcast",
        prefix: str = "carboy:broadcast:",
        block: float = 1.0,
        reconnect_max: float = 0.5,
        pool_size: int = 4,
    ) -> None:
        self.url = url
        self.table = sql.Identifier(*table.split("."))
        self.table_name = table
        self.prefix = prefix
        self.block = block
        self.reconnect_max = reconnect_max
        #: Seconds a connect, a check or the listener's barrier may take.
        self.read_timeout = block + 1.0
        self.pool_size = pool_size
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[t.Any] | None = None
        self._apools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, psycopg_pool.AsyncConnectionPool[t.Any]
        ] = weakref.WeakKeyDictionary()
        self._listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Listener] = (
            weakref.WeakKeyDictionary()
        )
        self._publish_sql = sql.SQL(
            "WITH n AS (INSERT INTO {t} AS c (channel, name, seq) VALUES (%s, %s, 1)"
            " ON CONFLICT (channel) DO UPDATE SET seq = c.seq + 1, updated = now()"
            " RETURNING c.seq)"
            " SELECT seq, pg_notify(%s, seq::text || ':' || %s) FROM n"
        ).format(t=self.table)
        self._create_sql = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} (channel text PRIMARY KEY, name text NOT NULL,"
            " seq bigint NOT NULL, updated timestamptz NOT NULL DEFAULT now())"
        ).format(t=self.table)
        self._seqs_sql = sql.SQL("SELECT channel, seq FROM {t} WHERE channel = ANY(%s)").format(
            t=self.table
        )

    # -- publishing ----------------------------------------------------------------------------

    def _args(self, channel: str, kind: str, data: bytes) -> list[str]:
        payload = _encode(kind, data)
        size = len(payload.encode("utf-8")) - 1
        if size > PAYLOAD_LIMIT:
            raise ValueError(
                f"A message of {size} bytes (encoded) is over the postgres broadcast backend's"
                f" limit of {PAYLOAD_LIMIT} bytes (PostgreSQL's NOTIFY takes {NOTIFY_LIMIT}"
                " bytes; bytes data counts base64-encoded). Publish an id and load the data,"
                " or use the streams backend."
            )
        key = notify_channel(self.prefix, channel)
        name = (self.prefix + channel).encode("utf-8", "replace").decode().replace("\x00", "?")
        return [key, name, key, payload]

    def _sync_pool(self) -> psycopg_pool.ConnectionPool[t.Any]:
        pool = self._pool
        if pool is None or self.pid != os.getpid():
            with self._lock:
                pool = self._pool
                if pool is None or self.pid != os.getpid():
                    self.pid = os.getpid()  # a forked child never uses its parent's pool
                    pool = self._pool = psycopg_pool.ConnectionPool(
                        self.url,
                        min_size=0,
                        max_size=self.pool_size,
                        kwargs=self._connect_kwargs("publish"),
                        timeout=self.read_timeout,
                        name="carboy-broadcast-publish",
                        open=True,
                    )
        return pool

    def _connect_kwargs(self, role: str) -> dict[str, t.Any]:
        return {"autocommit": True, "application_name": f"carboy-broadcast:{role}:{os.getpid()}"}

    def publish(self, channel: str, kind: str, data: bytes) -> str:
        args = self._args(channel, kind, data)
        for attempt in (1, 2, 3):
            try:
                with self._sync_pool().connection() as conn:
                    row = conn.execute(self._publish_sql, args).fetchone()
                    assert row is not None
                    return str(row[0])
            except psycopg.errors.UndefinedTable:
                if attempt == 3:
                    raise
                self.ensure_table()
            except psycopg_pool.PoolTimeout:
                raise
            except psycopg.OperationalError:
                if attempt >= 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _async_pool(self) -> psycopg_pool.AsyncConnectionPool[t.Any]:
        loop = asyncio.get_running_loop()
        pool = self._apools.get(loop)
        if pool is None:
            pool = psycopg_pool.AsyncConnectionPool(
                self.url,
                min_size=0,
                max_size=self.pool_size,
                kwargs=self._connect_kwargs("publish"),
                timeout=self.read_timeout,
                name="carboy-broadcast-apublish",
                open=False,
            )
            await pool.open()
            made = self._apools.setdefault(loop, pool)
            if made is not pool:  # another task of this loop made one meanwhile
                await pool.close()
            return made
        return pool

    async def apublish(self, channel: str, kind: str, data: bytes) -> str:
        args = self._args(channel, kind, data)
        for attempt in (1, 2, 3):
            try:
                async with (await self._async_pool()).connection() as conn:
                    cursor = await conn.execute(self._publish_sql, args)
                    row = await cursor.fetchone()
                    assert row is not None
                    return str(row[0])
            except psycopg.errors.UndefinedTable:
                if attempt == 3:
                    raise
                await self.aensure_table()
            except psycopg_pool.PoolTimeout:
                raise
            except psycopg.OperationalError:
                if attempt >= 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def ensure_table(self) -> None:
        """Make the sequence numbers' table if it is missing (safe to run from several
        processes at once: they take an advisory lock).

        :raises psycopg.Error: PostgreSQL refused (no ``CREATE`` right: run the DDL of
            ``docs/scale/realtime.md`` once, as the table's owner).
        """
        with self._sync_pool().connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self._lock_name])
            conn.execute(self._create_sql)

    async def aensure_table(self) -> None:
        """:meth:`ensure_table` without blocking the event loop."""
        async with (await self._async_pool()).connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self._lock_name])
            await conn.execute(self._create_sql)

    @property
    def _lock_name(self) -> str:
        return "carboy.broadcast.table:" + self.table_name

    # -- reading -------------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[t.Any]:
        # tcp_user_timeout: a check sent to a peer that vanished fails in that time (ms),
        # instead of TCP's retransmissions (minutes).
        options = self._connect_kwargs("postgres")
        options["tcp_user_timeout"] = int(self.read_timeout * 1000)
        return await asyncio.wait_for(
            psycopg.AsyncConnection.connect(self.url, **options), self.read_timeout
        )

    async def _read_seqs(
        self, conn: psycopg.AsyncConnection[t.Any], keys: list[str]
    ) -> dict[str, int]:
        try:
            cursor = await conn.execute(self._seqs_sql, [keys])
        except psycopg.errors.UndefinedTable:  # nothing published yet: every channel at 0
            return {}
        return {key: int(seq) for key, seq in await cursor.fetchall()}

    def listener(self) -> _Listener | None:
        """The running event loop's listener, if it has one (tests read its ``server_pid``)."""
        return self._listeners.get(asyncio.get_running_loop())

    async def run(self, channel: _Channel) -> None:
        loop = asyncio.get_running_loop()
        listener = self._listeners.get(loop)
        if listener is None:
            listener = self._listeners[loop] = _Listener(self, loop)
        follow = _Follow(notify_channel(self.prefix, channel.name), channel)
        listener.add(follow)
        try:
            await follow.failed  # deliveries come through the listener
        finally:
            listener.remove(follow)

    async def check_resume(self, channel: str, after: str, upto: str) -> Gap | None:
        try:
            missed: int | None = parse_id(upto)[0] - parse_id(after)[0]
        except ValueError:  # pragma: no cover (ids are checked before)
            missed = None
        return Gap(channel, "no_history", after, upto, missed)

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        listener = self._listeners.pop(loop, None)
        if listener is not None and listener.task is not None:
            listener.task.cancel()
            await asyncio.gather(listener.task, return_exceptions=True)
        pool = self._apools.pop(loop, None)
        if pool is not None:
            await pool.close()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self.pid == os.getpid():
            pool.close()
