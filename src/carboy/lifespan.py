"""Worker lifespan: the app's ``before_serving`` and ``after_serving`` functions, once per worker.

Under ASGI they run through the lifespan protocol: startup before the server accepts
connections, shutdown after it stops. WSGI has no such protocol; its equivalent here is:

* startup runs on the worker's first request, before that request is handled, under a lock so
  a threaded worker runs it once (``carboy run`` and ``app.run`` run it before serving);
* shutdown runs when the worker process exits (an :mod:`atexit` function).

A startup function that raises stops the worker: under ASGI the server gets
``lifespan.startup.failed`` and exits; under a WSGI server the process ends with status 3
(which gunicorn reports as "Worker failed to boot" and stops on), since WSGI servers catch every
exception around the app; with no server (the test client), :class:`WorkerStartupError` is
raised. Either way the message names the function and the error, and the traceback is logged.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import typing as t

from .concurrency import ensure_async

if t.TYPE_CHECKING:
    from .app import Carboy
    from .asgi import Receive, Scope, Send

_wsgi_lock = threading.Lock()


class WorkerStartupError(SystemExit):
    """A ``before_serving`` function failed, so this worker stops (exit status 3).

    .. versionadded:: 0.1
    """

    def __init__(self, message: str) -> None:
        super().__init__(3)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _describe(func: t.Callable[..., t.Any], error: BaseException) -> str:
    name = getattr(func, "__qualname__", repr(func))
    return f"carboy: startup function {name!r} failed, so this worker stops: {error!r}"


async def serve_lifespan(app: Carboy, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol for *app*."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            with app.app_context():
                for func in app.before_serving_funcs:
                    try:
                        await ensure_async(app, func)()
                    except Exception as e:
                        text = _describe(func, e)
                        app.logger.critical(text, exc_info=e)
                        app._lifespan = "failed"
                        await send({"type": "lifespan.startup.failed", "message": text})
                        return
            app._lifespan = "asgi"
            app._wsgi_ready = True  # a wrapped wsgi_app must not run startup again
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            failure = None
            with app.app_context():
                for func in app.after_serving_funcs:
                    try:
                        await ensure_async(app, func)()
                    except Exception as e:
                        name = getattr(func, "__qualname__", repr(func))
                        failure = f"carboy: shutdown function {name!r} failed: {e!r}"
                        app.logger.error(failure, exc_info=e)
            pool = app._sync_pool
            if pool is not None:
                pool.shutdown(wait=False)
                app._sync_pool = None
            if failure is not None:
                await send({"type": "lifespan.shutdown.failed", "message": failure})
            else:
                await send({"type": "lifespan.shutdown.complete"})
            return


def start_wsgi_worker(app: Carboy, environ: t.Mapping[str, t.Any] | None = None) -> None:
    """Run *app*'s startup functions once in this process (the WSGI equivalent of lifespan
    startup) and register its shutdown functions to run at process exit.

    :param environ: the first request's WSGI environ. When a server made it
        (``SERVER_SOFTWARE`` is set), a failed startup ends the process with status 3:
        servers catch every exception around the app, so raising could not stop the worker.
    :raises WorkerStartupError: when a startup function raises, for callers without a server
        (the test client), on this and later calls.
    """
    with _wsgi_lock:
        state = app._lifespan
        if state == "failed":
            raise WorkerStartupError("carboy: this worker's startup failed; see the log.")
        if state is not None:
            app._wsgi_ready = True
            return
        if not app.before_serving_funcs:
            app._lifespan = "wsgi"
            app._wsgi_ready = True
            if app.after_serving_funcs:
                atexit.register(stop_wsgi_worker, app)
            return
        with app.app_context():
            for func in app.before_serving_funcs:
                try:
                    app.ensure_sync(func)()
                except Exception as e:
                    text = _describe(func, e)
                    app.logger.critical(text, exc_info=e)
                    app._lifespan = "failed"
                    if environ is not None and environ.get("SERVER_SOFTWARE"):
                        _exit_worker(text)
                    raise WorkerStartupError(text) from e
        app._lifespan = "wsgi"
        app._wsgi_ready = True
        if app.after_serving_funcs:
            atexit.register(stop_wsgi_worker, app)


def _exit_worker(text: str) -> t.NoReturn:
    """End this worker process now with status 3 (gunicorn: "Worker failed to boot", then it
    stops). Shutdown functions do not run: startup did not finish."""
    print(text, file=sys.stderr, flush=True)
    for handler in logging.getLogger().handlers + logging.getLogger("carboy").handlers:
        handler.flush()
    os._exit(3)


def stop_wsgi_worker(app: Carboy) -> None:
    """Run *app*'s shutdown functions (at process exit under WSGI); errors are logged."""
    if app._lifespan != "wsgi":
        return
    app._lifespan = "stopped"
    with app.app_context():
        for func in app.after_serving_funcs:
            try:
                app.ensure_sync(func)()
            except Exception as e:
                name = getattr(func, "__qualname__", repr(func))
                app.logger.error(f"carboy: shutdown function {name!r} failed: {e!r}", exc_info=e)
