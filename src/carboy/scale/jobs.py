"""Jobs sent only after the database transaction commits: RQ on the app's Redis.

A view that inserts a row and enqueues a job to process it has a race: the job can run before
the transaction commits and find no row, and a rolled-back request still sends its job.
:meth:`Jobs.enqueue_on_commit` holds the job on the SQLAlchemy session until the transaction
commits, then sends it; a rollback drops it::

    jobs = Jobs(app)

    @app.post("/notes")
    def create():
        note = Note(title=request.form["title"])
        db.session.add(note)
        db.session.flush()
        jobs.enqueue_on_commit(db.session, index_note, note.id)  # sent after the commit
        db.session.commit()
        return "", 201

The queue is `RQ <https://python-rq.org>`_ on the app's
:class:`~carboy.scale.connection.RedisConnection` (``REDIS_URL``): Redis-native, the same
redis-py client the other modules use, plain functions as jobs and no broker to run besides
Redis. (Celery would do too; it brings its own broker layer, configuration and worker model,
which this one job does not need.)

Jobs run in ``carboy --app APP jobs worker``, each in a new app context of that app; the
request id of the request that sent it (the ``X-Request-ID`` header, or ``g.request_id`` when
the app sets one) is on every log record the job writes (``record.request_id``), so the
worker's log lines name the request that caused them.

Delivery: a job is sent once its transaction has committed, from the committing process, in one
Redis round trip for all of a transaction's jobs. If Redis cannot be reached at that moment the
commit stands, the jobs are not sent, and an ERROR names each one (there is no outbox table:
that is at most once, in an outage).

Without Redis (development, tests, a single small process), ``JOBS_INLINE = True`` runs each
job in the committing process instead, right after the commit, on the committing thread, in a
new app context of the app, with the same request id: the same ordering guarantee (after the
commit, never after a rollback), no queue and no worker. A job that raises is logged (ERROR,
with its traceback) and does not undo or fail the commit, as a failed RQ job would not. The
request that committed waits for its jobs, so keep inline jobs short. redis-py and RQ are not
imported in this mode.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import typing as t

import click
from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction, scoped_session

if t.TYPE_CHECKING:
    from rq import Queue

    from ..app import Carboy

# PERF: redis-py, RQ and the connection layer are imported where the queue is used, so an app
# that runs its jobs inline (JOBS_INLINE) imports none of them.

__all__ = ["Jobs", "current_request_id"]

logger = logging.getLogger("carboy.scale.jobs")

#: The key of the extension in ``app.extensions``.
EXTENSION_KEY = "carboy.jobs"
#: Where a session keeps the jobs waiting for its commit (``Session.info``).
_PENDING = "carboy.jobs.pending"
#: Where it keeps the inline jobs of a committed transaction until its connections are back.
_INLINE = "carboy.jobs.inline"

_DEFAULTS: dict[str, t.Any] = {
    "JOBS_QUEUE": "default",
    "JOBS_REQUEST_ID_HEADER": "X-Request-ID",
    "JOBS_INLINE": False,
}

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "carboy_job_request_id", default=None
)
#: The app the worker serves (set by ``carboy jobs worker`` in its process).
_worker_app: Carboy | None = None


class _Pending(t.NamedTuple):
    jobs: Jobs
    app: Carboy
    target: str
    args: tuple[t.Any, ...]
    kwargs: dict[str, t.Any]
    request_id: str | None


def current_request_id() -> str | None:
    """The request id the running job was sent with (``None`` outside a job, or when its
    request had none).

    .. versionadded:: 0.1
    """
    return _request_id.get()


class _RequestIdFilter(logging.Filter):
    """Puts the running job's request id on every record (``record.request_id``, ``"-"``
    outside a job), so a handler's format can show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get() or "-"
        return True


class Jobs:
    """Jobs sent after their transaction commits, and the worker that runs them.

    :param app: the app to register with now, or ``None`` to call :meth:`init_app` later.

    Config keys: ``JOBS_QUEUE`` (the RQ queue's name, ``"default"``), ``JOBS_REQUEST_ID_HEADER``
    (the header a request's id is read from, ``"X-Request-ID"``), ``JOBS_INLINE`` (``False``;
    ``True`` runs each job in the committing process right after the commit, without Redis:
    see the module's docs), and the connection layer's ``REDIS_URL``.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Carboy | None = None) -> None:
        self.app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Carboy) -> None:
        """Read the config, share the app's Redis connection layer (making one from
        ``REDIS_URL`` if the app has none; not with ``JOBS_INLINE``), and add the ``jobs
        worker`` command.

        :raises ValueError: ``REDIS_URL`` is not set (and ``JOBS_INLINE`` is not true).
        """
        for key, value in _DEFAULTS.items():
            app.config.setdefault(key, value)
        if not app.config["JOBS_INLINE"] and "carboy.redis" not in app.extensions:
            from .connection import RedisConnection

            RedisConnection(app)
        app.extensions[EXTENSION_KEY] = self
        app.cli.add_command(_jobs_group)
        _listen()

    def queue(self, app: Carboy | None = None) -> Queue:
        """The RQ queue (``JOBS_QUEUE``) on the app's Redis (this process's client)."""
        from rq import Queue

        from .connection import get_redis

        app = app or self._app()
        return Queue(app.config["JOBS_QUEUE"], connection=get_redis(app).sync)

    def enqueue_on_commit(
        self, session: t.Any, func: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any
    ) -> None:
        """Send ``func(*args, **kwargs)`` to the queue once *session*'s transaction commits;
        drop it if the transaction rolls back. With no transaction in progress it is sent
        at once (there is nothing to wait for).

        :param session: a SQLAlchemy :class:`~sqlalchemy.orm.Session`, or a
            :class:`~sqlalchemy.orm.scoped_session` such as Flask-SQLAlchemy's ``db.session``.
        :param func: a module-level function (the worker imports it by name); its arguments
            must be picklable.
        :raises TypeError: *func* cannot be imported by name (a lambda or a nested function).
        :raises redis.RedisError: sent at once and Redis is unreachable.

        With ``JOBS_INLINE`` the job runs in this process instead of being sent, at the same
        moment (after the commit, or at once), and what it raises is logged, not raised.

        Mirrors Django's ``transaction.on_commit`` for a job queue.
        """
        target = _import_name(func)
        app = self._app()
        pending = _Pending(self, app, target, args, kwargs, _request_id_now(app))
        real = session() if isinstance(session, scoped_session) else session
        if not isinstance(real, OrmSession):
            raise TypeError(f"Expected a SQLAlchemy session, got {type(session).__name__}.")
        if not real.in_transaction():
            _send([pending], committed=False)
            return
        real.info.setdefault(_PENDING, []).append(pending)

    def _app(self) -> Carboy:
        if self.app is not None:
            return self.app
        from ..globals import current_app

        return t.cast("Carboy", current_app._get_current_object())  # type: ignore[attr-defined]

    def work(self, app: Carboy, *, burst: bool = False) -> bool:
        """Run jobs from the queue in this process, each in a new app context of *app*, until
        stopped (or, with *burst*, until the queue is empty). What ``carboy jobs worker``
        runs; returns whether any job ran.

        Jobs run one after another in this process (RQ's ``SimpleWorker``: no fork per job);
        run more worker processes for more at once.
        """
        from rq import SimpleWorker

        from .connection import get_redis

        global _worker_app
        _worker_app = app
        _install_log_filter()
        worker = SimpleWorker([self.queue(app)], connection=get_redis(app).sync)
        return bool(worker.work(burst=burst, logging_level="WARNING"))


def run(
    target: str, request_id: str | None, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
) -> t.Any:
    """What the queue holds for each job: call *target* (``module:qualname``) in a new app
    context of the worker's app, with the sending request's id set for the logs."""
    app = _worker_app
    if app is None:
        raise RuntimeError("Jobs run in `carboy --app APP jobs worker`, which sets their app.")
    return _call(app, target, request_id, args, kwargs)


def _call(
    app: Carboy,
    target: str,
    request_id: str | None,
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
) -> t.Any:
    func = _resolve(target)
    token = _request_id.set(request_id)
    try:
        with app.app_context():
            return func(*args, **kwargs)
    finally:
        _request_id.reset(token)


def _run_inline(jobs: list[_Pending]) -> None:
    """Run *jobs* here and now, one after another (``JOBS_INLINE``); log what they raise."""
    for job in jobs:
        try:
            _call(job.app, job.target, job.request_id, job.args, job.kwargs)
        except Exception:
            logger.exception("Inline job %s failed.", job.target)


# -- the transaction hooks ----------------------------------------------------------------------

_listening = False


def _listen() -> None:
    """Listen on every SQLAlchemy session, once per process."""
    global _listening
    if _listening:
        return
    event.listen(OrmSession, "after_commit", _after_commit)
    event.listen(OrmSession, "after_transaction_end", _after_transaction_end)
    _listening = True


def _after_commit(session: OrmSession) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending:
        inline = [job for job in pending if job.app.config["JOBS_INLINE"]]
        if inline:
            session.info.setdefault(_INLINE, []).extend(inline)
        queued = [job for job in pending if not job.app.config["JOBS_INLINE"]]
        if queued:
            _send(queued, committed=True)


def _after_transaction_end(session: OrmSession, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    # The outermost transaction ended without a commit (after_commit emptied the list when it
    # committed): a rollback, so its jobs are dropped.
    dropped = session.info.pop(_PENDING, None)
    if dropped:
        logger.debug("Dropped %d job(s) of a rolled-back transaction.", len(dropped))
    # PERF: inline jobs run here, once the committed transaction has given its connections
    # back to the pool, not in after_commit: a job's own session needs a connection, and with
    # every pooled connection held by a thread waiting for a second one, the pool deadlocks.
    ready = session.info.pop(_INLINE, None)
    if ready:
        _run_inline(ready)


def _send(pending: list[_Pending], *, committed: bool) -> None:
    """Send *pending* jobs, one round trip per queue (``enqueue_many``).

    :param committed: sent after a commit: a Redis error is logged, not raised (the
        transaction has committed; raising would report a failure that did not happen).
    :raises redis.RedisError: not *committed* and Redis is unreachable.
    """
    inline = [job for job in pending if job.app.config["JOBS_INLINE"]]
    if inline:
        _run_inline(inline)
    queued = [job for job in pending if not job.app.config["JOBS_INLINE"]]
    if not queued:
        return
    import redis
    from rq import Queue

    by_queue: dict[tuple[int, int], list[_Pending]] = {}
    for job in queued:
        by_queue.setdefault((id(job.jobs), id(job.app)), []).append(job)
    for jobs in by_queue.values():
        queue = jobs[0].jobs.queue(jobs[0].app)
        datas = [
            Queue.prepare_data(run, (job.target, job.request_id, job.args, job.kwargs))
            for job in jobs
        ]
        try:
            queue.enqueue_many(datas)
        except redis.RedisError as e:
            if not committed:
                raise
            for job in jobs:
                logger.error("Job %s was not sent after its commit: Redis: %s", job.target, e)


def _request_id_now(app: Carboy) -> str | None:
    from ..globals import g, request

    if not request:
        return _request_id.get()  # a job enqueued from a job keeps its request's id
    rid = getattr(g, "request_id", None) or request.headers.get(
        app.config["JOBS_REQUEST_ID_HEADER"]
    )
    return str(rid) if rid else None


def _import_name(func: t.Callable[..., t.Any]) -> str:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        raise TypeError(f"{func!r} cannot be sent as a job: use a module-level function.")
    return f"{module}:{qualname}"


def _resolve(target: str) -> t.Callable[..., t.Any]:
    module, _, qualname = target.partition(":")
    obj: t.Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return t.cast(t.Callable[..., t.Any], obj)


def _install_log_filter() -> None:
    """Give every handler of the root logger the request-id filter (once), and one handler
    showing it if there is none."""
    root = logging.getLogger()
    if not root.handlers:
        shown = logging.StreamHandler()
        shown.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s [request_id=%(request_id)s] %(name)s: %(message)s"
            )
        )
        root.addHandler(shown)
        root.setLevel(logging.INFO)
    for handler in root.handlers:
        if not any(isinstance(f, _RequestIdFilter) for f in handler.filters):
            handler.addFilter(_RequestIdFilter())


# -- the command ----------------------------------------------------------------------------------


@click.group("jobs", help="Jobs sent after their transaction commits (RQ).")
def _jobs_group() -> None:
    pass


@_jobs_group.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.pass_context
def _worker_command(ctx: click.Context, burst: bool) -> None:
    """Run the app's jobs, each in a new app context."""
    from ..cli import ScriptInfo

    app = ctx.ensure_object(ScriptInfo).load_app()
    extension = app.extensions.get(EXTENSION_KEY)
    if extension is None:
        raise click.UsageError("This app has no Jobs extension: call Jobs(app) in it.")
    if app.config["JOBS_INLINE"]:
        raise click.UsageError("JOBS_INLINE is set: this app runs its jobs itself, after commit.")
    t.cast(Jobs, extension).work(app, burst=burst)
