"""The bare path: requests that nothing but their view watches, answered in one frame.

Most requests of an API reach a view that has no hook around it: no before, after or teardown
function, no URL value preprocessor, no signal receiver, no session cookie. For those, every
check the general path makes (which hooks apply, whether a receiver listens, whether the
session must be saved, whether teardown functions run) has the same answer, decided here once
per request, before anything happens:

* the app's set-up is checked once, when it freezes (``app._bare``: nothing overridden, a
  :class:`~carboy.routing.Map`, no host or subdomain matching; ``app._bare_asgi`` adds the
  cookie session interface and no wrapped ``wsgi_app`` or ``asgi_app``);
* :func:`route` checks what may change while the app serves (one flag, ``signals._quiet``,
  stands for the six request signals' receivers) and finds the rule and plan;
* :func:`serve_wsgi` (called by :meth:`Carboy.wsgi_app`) and :func:`serve_asgi` (called by
  :meth:`Carboy.__call__` instead of :meth:`Carboy.asgi_app`, so that a bare ASGI request
  runs in one coroutine frame) push the contexts (:func:`push`), call the view, write a
  ``str``, ``dict`` or ``list`` return value directly (:func:`short_body`: no Response
  object) and pop the contexts (:func:`pop`).

Anything the view does that the general path would notice still gets Flask's behaviour: if it
reads ``request`` or ``session``, registers an ``after_this_request`` function, returns another
type or raises, the rest of the request is finished by the app's own methods
(``finalize_request``, ``handle_user_exception``, ``handle_exception``, ``RequestContext.pop``),
exactly as on the general path. Only what cannot run on a bare request is skipped: the
``do_teardown_*`` calls (there is no teardown function or receiver) and the signal sends (there
is no receiver).

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextvars
import sys
import typing as t

from . import signals
from .asgi import ScopeRequestContext, send_response, short_start
from .concurrency import run_sync
from .ctx import AppContext, RequestContext, hand_over_contexts
from .globals import (
    _cv_app_get,
    _cv_app_reset,
    _cv_app_set,
    _cv_request_get,
    _cv_request_reset,
    _cv_request_set,
)
from .wrappers import GOOD_HOSTS, Response, host_is_valid

if t.TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from werkzeug.routing import Rule

    from .app import Carboy
    from .asgi import Receive, Scope, Send
    from .json.provider import DefaultJSONProvider
    from .plan import Plan

__all__ = ["pop", "push", "route", "serve_asgi", "serve_wsgi", "short_body"]


def route(app: Carboy, path: str, method: str) -> tuple[Rule, dict[str, t.Any], Plan] | None:
    """The rule, view arguments and plan of a request that may take the bare path, else
    ``None``. Reads the app-wide state that may change while the app serves; the caller has
    checked ``app._bare`` (the set-up: nothing overridden, a :class:`~carboy.routing.Map`, no
    host or subdomain matching) and the request's own headers (no ``Cookie``, no ``Upgrade``).

    :param path: the decoded path below the script root. One without a leading ``/`` (an
        empty WSGI ``PATH_INFO``) matches no rule of the router, so it goes to the general
        path, which answers it as Werkzeug does.
    :param method: the request method, upper case.
    """
    router = app._router
    if (
        method == "OPTIONS"  # the automatic OPTIONS answer
        or method == "HEAD"  # a body that must not be sent
        or router is None
        or router._version != app.url_map.version
        or not signals._quiet
        or _cv_app_get(None) is not None  # inside another app context: nested pushes
        or app.teardown_appcontext_funcs
        or app.response_class is not Response
        or app.config["TRUSTED_HOSTS"] is not None
    ):
        return None
    hit = router.match(path, method)
    if hit is None:
        return None
    rule, view_args = hit
    endpoint = rule.endpoint
    plan = app._plans.get(endpoint) or app._plan(endpoint)
    if not plan.bare:
        return None
    return rule, view_args, plan


def short_body(app: Carboy, ctx: RequestContext, plan: Plan, rv: t.Any) -> tuple[bytes, str] | None:
    """``(body, content_type)`` for the view's *rv* when, after the view ran, nothing could
    inspect a Response: the session was not opened, no ``after_this_request`` function or
    ``request_finished`` receiver
    was added, no hook was registered, and *rv* is a ``str`` (HTML) or, with the default JSON
    provider, a ``dict`` or ``list``; else ``None``.

    The caller has checked what it knew before the view ran (no after hooks, not ``HEAD``,
    the default response class).
    """
    # PERF: a plain tuple, written by the caller: a Response with its Headers costs ~4 µs,
    # and even a callable tuple subclass costs ~3.5k instructions more per hello.
    if (
        ctx._session is None
        and not ctx._after_request_functions
        # A hook added to the registries during this request (Flask-Caching does) dropped
        # the plans; Flask would run it on this very response.
        and app._plans.get(plan.endpoint) is plan
        and not signals.request_finished.receivers
    ):
        cls = rv.__class__
        if cls is str:
            return rv.encode(), "text/html; charset=utf-8"
        if (cls is dict or cls is list) and app._json_fast:
            provider: DefaultJSONProvider = app.json  # type: ignore[assignment]
            return provider._response_text(rv).encode(), provider.mimetype
    return None


def push(app: Carboy, ctx: RequestContext) -> AppContext:
    """Push a new app context and *ctx*, both marked torn down: :func:`route` found nothing
    that a teardown would run."""
    app_ctx = AppContext(app)
    app_ctx._cv_tokens.append(_cv_app_set(app_ctx))
    ctx._cv_tokens.append((_cv_request_set(ctx), app_ctx))
    ctx._torn_down = app_ctx._torn_down = True
    return app_ctx


def pop(ctx: RequestContext, app_ctx: AppContext, error: BaseException | None) -> None:
    """Pop *ctx* and *app_ctx*, pushed by :func:`push`. :meth:`RequestContext.pop` does it
    when the view left something to close (a request object) or pushed and did not pop."""
    tokens = ctx._cv_tokens
    app_tokens = app_ctx._cv_tokens
    if (
        ctx._request is None
        and len(tokens) == 1
        and len(app_tokens) == 1
        and _cv_request_get() is ctx
        and _cv_app_get() is app_ctx
        and not signals.appcontext_popped.receivers
    ):
        _cv_request_reset(tokens.pop()[0])
        _cv_app_reset(app_tokens.pop())
    else:
        ctx.pop(error)


def serve_wsgi(
    app: Carboy, environ: WSGIEnvironment, start_response: StartResponse
) -> t.Iterable[bytes] | None:
    """Answer a WSGI request on the bare path, or return ``None`` (having done nothing) when
    it may not take it. Called by :meth:`Carboy.wsgi_app`; errors are handled as
    :meth:`Carboy.wsgi_app` handles them."""
    if "HTTP_COOKIE" in environ or "HTTP_UPGRADE" in environ:
        return None
    host = environ.get("HTTP_HOST")
    # PERF: a host seen before (or none) is one set lookup (wrappers.GOOD_HOSTS): a hello
    # 29.8k -> 30.3k instructions (callgrind); validating it each time would add ~1 µs.
    if host not in GOOD_HOSTS and not host_is_valid(host):
        return None  # the general path answers it (400)
    path = environ.get("PATH_INFO", "")
    if not path.isascii():
        return None
    found = route(app, path, environ.get("REQUEST_METHOD", "GET").upper())
    if found is None:
        return None
    rule, view_args, plan = found
    ctx = RequestContext(app, environ)
    ctx._rule = rule
    ctx._view_args = view_args
    app_ctx = push(app, ctx)
    error: BaseException | None = None
    short = None
    try:
        try:
            app._got_first_request = True
            try:
                # PERF: without ``**`` for no arguments, as in serve_asgi (here -0.25k).
                rv = plan.view(**view_args) if view_args else plan.view()  # type: ignore[misc]
            except Exception as e:
                response = app.finalize_request(app.handle_user_exception(e))
            else:
                short = short_body(app, ctx, plan, rv)
                if short is None:
                    response = app.finalize_request(rv)
        except Exception as e:
            error = e
            response = app.handle_exception(e)
        except BaseException:
            error = sys.exc_info()[1]
            raise
        # Written while the contexts are still pushed, as Flask does.
        if short is not None:
            body, content_type = short
            start_response(
                "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
            )
            return [body]
        return response(environ, start_response)
    finally:
        if "werkzeug.debug.preserve_context" in environ:
            hand_over_contexts(environ)
        if error is not None and app.should_ignore_error(error):
            error = None
        pop(ctx, app_ctx, error)


async def serve_asgi(app: Carboy, scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry of an app whose set-up allows the bare path (``app._bare_asgi``, checked
    by :meth:`Carboy.__call__`): an ``http`` request that may take it is answered here; any
    other request or scope goes on to :meth:`Carboy.asgi_app`.

    A request may take the bare path when it has no body, no cookie and no ``Upgrade``
    header, :func:`route` allows it, and its view is ``async def``. Errors are handled as
    :meth:`Carboy.asgi_app` handles them.
    """
    if scope["type"] != "http":
        return await app.asgi_app(scope, receive, send)
    # PERF: the request context is made once the request is known to take the bare path, as
    # one made for a request that then goes on to asgi_app (which makes its own) is wasted:
    # a GET with a cookie 77.6k -> 73.5k instructions in process (a hello +0.3k). The four
    # headers are those ScopeRequestContext reads into has_body, has_cookie and upgrade.
    raw_headers = scope["headers"]
    headers = dict(raw_headers)
    host = headers.get(b"host")
    found = None
    if not (
        b"content-length" in headers  # a body, read through receive
        or b"transfer-encoding" in headers
        or b"cookie" in headers  # the session
        or b"upgrade" in headers  # Werkzeug matches WebSocket rules
        # A repeated header (maybe Host) or a Host header that names no host: the general
        # path looks at them all (and answers a bad host with 400). PERF: a host seen before
        # is one set lookup (wrappers.GOOD_HOSTS); with the length test, a hello 37.3k ->
        # 38.4k instructions (callgrind).
        or len(headers) != len(raw_headers)
        or (host not in GOOD_HOSTS and not host_is_valid(host))
    ):
        path: str = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):
            path = path[len(root) :]
        found = route(app, path, scope.get("method", "GET"))
    if found is None or found[2].aview is None:
        return await app.asgi_app(scope, receive, send)
    rule, view_args, plan = found
    ctx = ScopeRequestContext(app, scope, True)
    ctx._rule = rule
    ctx._view_args = view_args
    view: t.Callable[..., t.Awaitable[t.Any]] = plan.aview  # type: ignore[assignment]
    app_ctx = push(app, ctx)
    error: BaseException | None = None
    short = None
    try:
        try:
            app._got_first_request = True
            try:
                # PERF: CPython 3.11 sends ``view(**{})`` through its C call protocol, which
                # for an ``async def`` view adds an interpreter entry and a frame copy; called
                # as ``view()`` it runs in this eval loop (-0.4k instructions per hello).
                rv = await (view(**view_args) if view_args else view())
            except Exception as e:
                rv = await app._handle_user_exception_async(ctx, e)
                response = await app._finalize_async(ctx, plan, rv)
            else:
                short = short_body(app, ctx, plan, rv)
                if short is None:
                    response = await app._finalize_async(ctx, plan, rv)
        except Exception as e:
            error = e
            response = await run_sync(app, app.handle_exception, e)
        except BaseException:
            error = sys.exc_info()[1]
            raise
    finally:
        # An environ nobody built holds no test client's wish to keep it.
        environ = ctx._environ
        if environ is not None and "werkzeug.debug.preserve_context" in environ:
            hand_over_contexts(environ)
        if error is not None and app.should_ignore_error(error):
            error = None
        pop(ctx, app_ctx, error)
    if short is not None:
        body, content_type = short
        await send(short_start(body, content_type))
        await send({"type": "http.response.body", "body": body})
    else:
        # Copied after the pop: what a streamed body may see (Flask's rule).
        context = contextvars.copy_context()
        await send_response(app, response, ctx.environ, context, receive, send)
