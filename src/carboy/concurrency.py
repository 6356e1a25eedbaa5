"""Running sync code from async code and async code from sync code, with the contexts carried.

Three places call across the sync/async line:

* Under ASGI, a sync callable (a view, a hook, a blocking generator step) runs in the app's
  bounded thread pool, inside a copy of the caller's :mod:`contextvars` context, so ``request``,
  ``g``, ``session`` and ``current_app`` stay correct there. The pool's size is the
  ``MAX_SYNC_THREADS`` config value.
* Under ASGI, a coroutine met by sync code running in that pool (``ensure_sync`` in a
  sync-wrapped hook, an async error handler, an async context processor) is sent back to the
  server's event loop, and the pool thread waits for it.
* Under WSGI, a coroutine runs on an event loop that belongs to the worker thread and lives as
  long as the thread; under gevent, on a real OS thread's loop, so greenlets never share one.

A coroutine met by sync code running *on* the event loop itself cannot be awaited there without
blocking it; it runs to completion on a helper thread with its own loop (documented in
``docs/asgi.md``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import sys
import threading
import typing as t
from functools import partial, wraps

if t.TYPE_CHECKING:
    from .app import Carboy

T = t.TypeVar("T")

#: The server's event loop, set in the contexts handed to pool threads.
_cv_server_loop: contextvars.ContextVar[asyncio.AbstractEventLoop] = contextvars.ContextVar(
    "carboy.server_loop"
)
_thread_loops = threading.local()
_executor_lock = threading.Lock()


def executor(app: Carboy) -> concurrent.futures.ThreadPoolExecutor:
    """The app's pool for sync callables under ASGI, made on first use.

    :param app: the application; ``app.config["MAX_SYNC_THREADS"]`` (int) sizes the pool.
    :raises ValueError: when ``MAX_SYNC_THREADS`` is not a positive integer.
    """
    pool: concurrent.futures.ThreadPoolExecutor | None = app._sync_pool
    if pool is None:
        with _executor_lock:
            pool = app._sync_pool
            if pool is None:
                size = app.config.get("MAX_SYNC_THREADS", 40)
                if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                    raise ValueError(f"MAX_SYNC_THREADS must be a positive integer, not {size!r}.")
                pool = app._sync_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=size, thread_name_prefix=f"carboy-sync-{app.name}"
                )
    return pool


def _enter(loop: asyncio.AbstractEventLoop, func: t.Callable[..., T], args: tuple[t.Any, ...]) -> T:
    _cv_server_loop.set(loop)
    return func(*args)


async def run_sync_in(
    context: contextvars.Context, app: Carboy, func: t.Callable[..., T], *args: t.Any
) -> T:
    """Run ``func(*args)`` in *app*'s thread pool inside *context* and await the result.

    *context* is used as is, so the same context can be entered again by later calls (a
    generator stepped across several calls keeps its context); it must not be entered
    elsewhere at the same time.

    :raises Exception: whatever *func* raises.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor(app), context.run, _enter, loop, func, args)


async def run_sync(app: Carboy, func: t.Callable[..., T], *args: t.Any) -> T:
    """Run ``func(*args)`` in *app*'s thread pool inside a copy of the current context."""
    return await run_sync_in(contextvars.copy_context(), app, func, *args)


def ensure_async(app: Carboy, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Awaitable[t.Any]]:
    """Return *func* if it is a coroutine function, else a coroutine function that runs it in
    *app*'s thread pool. The counterpart of :meth:`carboy.Carboy.ensure_sync`.

    .. versionadded:: 0.1
    """
    if asyncio.iscoroutinefunction(func):
        return func

    @wraps(func)
    async def in_thread(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if kwargs:
            return await run_sync(app, partial(func, **kwargs), *args)
        return await run_sync(app, func, *args)

    return in_thread


def run_coroutine(coro: t.Coroutine[t.Any, t.Any, T]) -> T:
    """Run *coro* to completion from sync code and return its result.

    In a pool thread serving an ASGI request, the coroutine runs on the server's loop. Called on
    a thread with a running loop, it runs on a helper thread's loop (blocking the caller). Else
    it runs on this thread's long-lived loop (under gevent, a real OS thread's).

    :raises Exception: whatever the coroutine raises.
    """
    if asyncio._get_running_loop() is not None:
        return _on_helper_thread(coro)
    server = _cv_server_loop.get(None)
    if server is not None and not server.is_closed():
        context = contextvars.copy_context()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def start() -> None:
            task = server.create_task(coro, context=context)
            asyncio.futures._chain_future(task, done)  # type: ignore[attr-defined]

        server.call_soon_threadsafe(start)
        return done.result()
    if _gevent_patched():
        return _on_helper_thread(coro)
    return _thread_loop().run_until_complete(coro)


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_loops.loop = asyncio.new_event_loop()
    return loop


def _gevent_patched() -> bool:
    gevent_monkey = sys.modules.get("gevent.monkey")
    return gevent_monkey is not None and bool(gevent_monkey.is_module_patched("threading"))


_helper_pool: list[concurrent.futures.ThreadPoolExecutor] = []


def _on_helper_thread(coro: t.Coroutine[t.Any, t.Any, T]) -> T:
    """Run *coro* on a real OS thread's long-lived loop; the caller waits for it."""
    context = contextvars.copy_context()
    if _gevent_patched():
        # Under gevent, ``threading`` makes greenlets, which share one OS thread and so would
        # share asyncio's running loop; the hub's pool is made of real threads, and waiting
        # on it lets the other greenlets run.
        import gevent  # type: ignore[import-untyped]

        _buffer_body_for_other_thread()
        return gevent.get_hub().threadpool.apply(context.run, (_run_here, coro))  # type: ignore[no-any-return]
    if not _helper_pool:
        with _executor_lock:
            if not _helper_pool:
                _helper_pool.append(
                    concurrent.futures.ThreadPoolExecutor(thread_name_prefix="carboy-async")
                )
    return _helper_pool[0].submit(context.run, _run_here, coro).result()


def _buffer_body_for_other_thread() -> None:
    """Under gevent, read the active request's body on this greenlet before its coroutine
    moves to a native thread.

    FIX (test_servers): ``wsgi.input`` is a socket of this thread's gevent hub; reading it
    from the helper thread (``request.get_json()`` in an ``async def`` view under
    ``gunicorn -k gevent``) fails with "greenlet.error: Cannot switch to a different thread"
    whenever the body was not already buffered with the headers. Reading it here first gives
    async views the ASGI behaviour (body received in full before the view runs). Views marked
    ``stream_request_body`` are left alone, so they still read the socket from that thread.
    """
    from .globals import _cv_request_get

    ctx = _cv_request_get(None)
    if ctx is None:
        return
    environ = ctx.environ
    length = environ.get("CONTENT_LENGTH")
    has_body = (
        length.strip() not in ("", "0")
        if length is not None
        else ("HTTP_TRANSFER_ENCODING" in environ)
    )
    if not has_body or "asgi.scope" in environ:
        return
    rule = ctx._request.url_rule if ctx._request is not None else ctx._rule
    view = ctx.app.view_functions.get(rule.endpoint) if rule is not None else None
    if getattr(view, "stream_request_body", False):
        return
    ctx.request.get_data(cache=True)


def _run_here(coro: t.Coroutine[t.Any, t.Any, T]) -> T:
    return _thread_loop().run_until_complete(coro)
