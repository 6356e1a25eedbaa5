"""The application object: configuration, registries, and the request path.

Flask-compatible: ``flask.Flask``. The request path, top to bottom::

    __call__ → wsgi_app
        bare.serve_wsgi              a view no hook, receiver or cookie watches: all in one
                                     frame (carboy.bare); otherwise:
        RequestContext.push          one contextvar set; the URL is matched by ``_match``
        _respond (or full_dispatch_request when a subclass overrides a step)
            plan = _plan(endpoint)   hooks for this endpoint, gathered once and cached
            before hooks → view      → handle_user_exception on error
            finalize_request         make_response → process_response (after hooks, session)
        RequestContext.pop           teardown functions, contextvar reset

A *plan* is everything about an endpoint that Flask recomputes on every request (which hooks of
which blueprints apply, in which order, wrapped for sync calling) computed on its first request.
"""

from __future__ import annotations

import asyncio
import collections.abc as cabc
import contextvars
import inspect
import sys
import typing as t
from functools import partial, wraps
from itertools import chain
from types import TracebackType

from werkzeug.datastructures import Headers
from werkzeug.exceptions import (
    BadRequestKeyError,
    HTTPException,
    InternalServerError,
    NotFound,
)
from werkzeug.routing import MapAdapter, RequestRedirect, RoutingException, Rule
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from . import typing as ft
from .asgi import (
    EMPTY_INPUT,
    FORM_IN_POOL_SIZE,
    AsgiCall,
    ReceiveStream,
    ScopeRequestContext,
    call_wsgi,
    parse_ahead,
    read_body,
    request_facts,
    scope_environ,
    send_response,
    short_start,
)
from .bare import serve_asgi, serve_wsgi, short_body
from .concurrency import ensure_async, run_coroutine, run_sync, run_sync_in
from .ctx import AppContext, RequestContext, hand_over_contexts
from .globals import _cv_request_get
from .json.provider import DefaultJSONProvider
from .logging import loggable
from .plan import Plan as _Plan
from .plan import make_plan
from .routing import Router
from .sansio.app import App
from .sessions import SecureCookieSessionInterface
from .wrappers import (
    GOOD_HOSTS,
    Request,
    Response,
    _AsyncBody,
    _Body,
    _not_found_page,
    _Page,
    bad_host,
    host_is_valid,
)

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from click import Group

    from .asgi import Receive, Scope, Send


T_shell = t.TypeVar("T_shell", bound=ft.ShellContextProcessorCallable)
T_teardown = t.TypeVar("T_teardown", bound=ft.TeardownCallable)
T_filter = t.TypeVar("T_filter", bound=ft.TemplateFilterCallable)
T_global = t.TypeVar("T_global", bound=ft.TemplateGlobalCallable)
T_test = t.TypeVar("T_test", bound=ft.TemplateTestCallable)

_sentinel: t.Any = object()
#: The instance state of an HTTPException made without a description or a response.
_DEFAULT_ERROR = {"response": None}

#: Methods whose override sends requests through the plain Flask method chain.
_DISPATCH_STEPS = (
    "full_dispatch_request",
    "preprocess_request",
    "dispatch_request",
    "make_response",
    "process_response",
    "finalize_request",
)


class Carboy(App):
    """The application: a WSGI application with Flask's API.

    Flask-compatible: ``flask.Flask``; constructor arguments are those of
    :class:`carboy.sansio.app.App`. This class adds the request path.
    """

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        if type(self).__call__ is Carboy.__call__:
            # Servers that pick ASGI 3 by inspecting ``app.__call__`` must see an async def.
            self.__dict__["__call__"] = AsgiCall(self)

    # -- contexts ----------------------------------------------------------------------------

    def app_context(self) -> AppContext:
        """A new app context. Flask-compatible: ``flask.Flask.app_context``."""
        return AppContext(self)

    def request_context(self, environ: WSGIEnvironment) -> RequestContext:
        """A new request context for *environ*.

        Flask-compatible: ``flask.Flask.request_context``.
        """
        return RequestContext(self, environ)

    def test_request_context(self, *args: t.Any, **kwargs: t.Any) -> RequestContext:
        """A request context for a request built from :class:`carboy.testing.EnvironBuilder`
        arguments (path, method, data, json, headers, ...)."""
        from .testing import EnvironBuilder

        builder = EnvironBuilder(self, *args, **kwargs)
        try:
            return self.request_context(builder.get_environ())
        finally:
            builder.close()

    def update_template_context(self, context: dict[str, t.Any]) -> None:
        """Add the context processors' values to *context*; explicit values win."""
        names: t.Iterable[str | None] = (None,)
        ctx = _cv_request_get(None)
        if ctx is not None:
            names = chain(names, reversed(ctx.request.blueprints))
        explicit = context.copy()
        for name in names:
            for func in self.template_context_processors.get(name, ()):
                context.update(self.ensure_sync(func)())
        context.update(explicit)

    # -- async -------------------------------------------------------------------------------

    def ensure_sync(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        """Return *func*, or a sync wrapper of it when it is a coroutine function.

        Flask-compatible: ``flask.Flask.ensure_sync``.
        """
        if inspect.iscoroutinefunction(func):
            return self.async_to_sync(func)
        return func

    def async_to_sync(
        self, func: t.Callable[..., t.Coroutine[t.Any, t.Any, t.Any]]
    ) -> t.Callable[..., t.Any]:
        """Wrap coroutine function *func* to run to completion when called.

        Flask-compatible: ``flask.Flask.async_to_sync``. The coroutine sees the caller's
        context, so ``request``, ``g`` and the rest stay available. Where it runs is decided
        by ``carboy.concurrency.run_coroutine``: on the server's loop when called from a
        pool thread under ASGI, else on the calling thread's long-lived loop (WSGI).
        """

        @wraps(func)
        def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
            return run_coroutine(func(*args, **kwargs))

        return run

    # -- URL matching -----------------------------------------------------------

    def _match(self, ctx: RequestContext) -> None:
        """Match *ctx*'s URL, recording the rule and arguments or the routing exception
        (:class:`~werkzeug.exceptions.BadHost`, 400, for a ``Host`` header that names no
        host)."""
        scope = ctx._scope
        host = ctx.environ.get("HTTP_HOST") if scope is None else ctx.host_header  # type: ignore[attr-defined]
        # PERF: a host seen before (or none) is one set lookup; host_is_valid costs ~1 µs.
        if host not in GOOD_HOSTS and not host_is_valid(host):
            ctx._set_routing_exception(bad_host())
            return
        router = self._router
        # PERF: Router.is_stale inlined (one call less per request).
        if router is None or router._version != getattr(self.url_map, "version", 0):
            router = self._router = Router(self.url_map)
            # An app (or extension) that supplies its own URL adapter gets it on every request.
            self._own_adapter = self._overrides("create_url_adapter")
        if not (
            self._own_adapter
            or self.url_map.host_matching
            or self.subdomain_matching
            or self.config["TRUSTED_HOSTS"] is not None
        ):
            if scope is None:
                environ = ctx.environ
                # A WebSocket handshake: Werkzeug checks the rule kind.
                upgrade = "HTTP_UPGRADE" in environ
                path = environ.get("PATH_INFO", "")
                if not path.isascii():
                    path = path.encode("latin-1").decode("utf-8", "replace")
                method = environ.get("REQUEST_METHOD", "GET").upper()
            else:
                upgrade = ctx.upgrade  # type: ignore[attr-defined]
                path = scope["path"]
                root = scope.get("root_path")
                if root and path.startswith(root):
                    path = path[len(root) :]  # PERF: scope_path inlined
                method = ctx.method  # type: ignore[attr-defined]
            if path[:1] == "/" and not upgrade:
                hit = router.match(path, method)
                if hit is not None:
                    if ctx._request is None:
                        ctx._rule, ctx._view_args = hit  # PERF: _set_match inlined
                    else:
                        ctx._set_match(*hit)
                    return
                if router.surely_missing(path):
                    ctx._set_routing_exception(NotFound())
                    return
        adapter = ctx.url_adapter
        if adapter is None:
            return
        try:
            rule, args = adapter.match(return_rule=True)
        except HTTPException as e:
            ctx._set_routing_exception(e)
        else:
            ctx._set_match(rule, t.cast(dict[str, t.Any], args))

    # -- the request path --------------------------------------------------------------------

    def __call__(
        self, environ_or_scope: t.Any, start_response_or_receive: t.Any, send: t.Any = None
    ) -> t.Any:
        """The entry point for both protocols.

        WSGI: ``app(environ, start_response)`` calls :meth:`wsgi_app`, so WSGI middleware can
        wrap that. ASGI 3: ``await app(scope, receive, send)`` runs :meth:`asgi_app`; once the
        app serves, and if its set-up allows the bare path, it runs
        :func:`carboy.bare.serve_asgi`, which answers the requests that may take it and hands
        every other one to :meth:`asgi_app` (always called when replaced on the instance).
        Flask-compatible: ``flask.Flask.__call__`` (WSGI); ASGI is new in carboy.
        """
        if send is None:
            return self.wsgi_app(environ_or_scope, start_response_or_receive)
        if self._bare_asgi and "asgi_app" not in self.__dict__:
            # PERF: requests no hook, signal or session watches are answered in one coroutine
            # frame, without asgi_app's (carboy.bare); a wrapped asgi_app, even wrapped after
            # the first request, still sees every request.
            return serve_asgi(self, environ_or_scope, start_response_or_receive, send)
        return self.asgi_app(environ_or_scope, start_response_or_receive, send)

    def wsgi_app(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> cabc.Iterable[bytes]:
        """Handle one WSGI request. Flask-compatible: ``flask.Flask.wsgi_app``.

        Wrap it (``app.wsgi_app = Middleware(app.wsgi_app)``) to add WSGI middleware; the
        wrapped app is also what ASGI requests go through then.
        """
        if not self._wsgi_ready:
            from .lifespan import start_wsgi_worker

            start_wsgi_worker(self, environ)
        if self._bare:
            # PERF: a request no hook, signal or session watches is answered in one frame
            # (carboy.bare): 44.6k -> 35.7k instructions per hello (callgrind).
            answer = serve_wsgi(self, environ, start_response)
            if answer is not None:
                return answer
        # PERF: request_context() called only when overridden (one call less per request).
        ctx = (
            RequestContext(self, environ)
            if self._plain_request_context
            else self.request_context(environ)
        )
        return self._handle(ctx, start_response)  # type: ignore[no-any-return]

    def _handle(self, ctx: RequestContext, start_response: StartResponse | None = None) -> t.Any:
        """Push *ctx*, answer it, pop it: the response object, or with *start_response* the
        WSGI iterable (written while the context is still pushed, as Flask does)."""
        environ = ctx.environ
        error: BaseException | None = None
        try:
            try:
                ctx.push()
                fast = self._fast
                if fast is None:
                    fast = self._freeze()
                response = self._respond(ctx) if fast else self.full_dispatch_request()
            except Exception as e:
                error = e
                response = self.handle_exception(e)
            except:
                error = sys.exc_info()[1]
                raise
            if start_response is None:
                return response
            return response(environ, start_response)
        finally:
            if "werkzeug.debug.preserve_context" in environ:
                hand_over_contexts(environ)
            if error is not None and self.should_ignore_error(error):
                error = None
            ctx.pop(error)

    async def asgi_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI 3 connection: ``http``, ``websocket`` or ``lifespan``.

        HTTP requests whose endpoint has an ``async def`` view or hook run on the event loop;
        the rest run Flask's sync path in the app's thread pool (``MAX_SYNC_THREADS``), as do
        all requests of an app that overrides a dispatch step or wraps :meth:`wsgi_app`.

        :raises ValueError: for an unknown scope type.

        .. versionadded:: 0.1
        """
        kind = scope["type"]
        if kind == "http":
            # PERF: the common case inlined (one coroutine frame less per request).
            fast = self._fast
            if fast is None:
                fast = self._freeze()
            if fast and self._asgi_native:
                ctx: RequestContext = (
                    ScopeRequestContext(self, scope)
                    if self._plain_request_context
                    else self.request_context(scope_environ(scope))
                )
                self._match(ctx)
                rule = ctx._rule
                endpoint = rule.endpoint if rule is not None else None
                plan = self._plans.get(endpoint) or self._plan(endpoint)
                if plan.is_async:
                    # PERF: _handle's push, answer and pop for the event loop and the short
                    # body's two sends are written out here: each coroutine frame less saves
                    # ~1.1k instructions (2% of a hello).
                    error: BaseException | None = None
                    try:
                        try:
                            try:
                                ctx.push()
                                response = await self._dispatch_async(ctx, plan, receive)
                            except Exception as e:
                                error = e
                                response = await run_sync(self, self.handle_exception, e)
                            except BaseException:
                                error = sys.exc_info()[1]
                                raise
                        finally:
                            # An environ nobody built holds no test client's wish to keep it.
                            environ = (
                                ctx._environ
                                if ctx.__class__ is ScopeRequestContext
                                else ctx.environ
                            )
                            if environ is not None and "werkzeug.debug.preserve_context" in environ:
                                hand_over_contexts(environ)
                            if error is not None and self.should_ignore_error(error):
                                error = None
                            try:
                                if not self._skip_teardown(ctx, plan):
                                    await run_sync(self, ctx._teardown, error)
                            finally:
                                ctx.pop(error)
                        if isinstance(response, tuple):  # a short body (a _Body)
                            body, content_type = response
                            await send(short_start(body, content_type))
                            await send({"type": "http.response.body", "body": body})
                        else:
                            # Copied after the pop: what a streamed body may see (Flask's rule).
                            context = contextvars.copy_context()
                            await send_response(self, response, ctx.environ, context, receive, send)
                    finally:
                        # A received body (in memory or a temporary file past 1 MiB) is ours
                        # to close; Werkzeug's Request.close leaves wsgi.input alone.
                        environ = (
                            ctx._environ if ctx.__class__ is ScopeRequestContext else ctx.environ
                        )
                        if environ is not None and environ["wsgi.input"] is not EMPTY_INPUT:
                            environ["wsgi.input"].close()
                    return
                environ = ctx.environ
            else:
                environ = scope_environ(scope)
            await self._asgi_sync(environ, receive, send)
        elif kind == "websocket":
            from .websocket import serve_websocket

            await serve_websocket(self, scope, receive, send)
        elif kind == "lifespan":
            from .lifespan import serve_lifespan

            await serve_lifespan(self, scope, receive, send)
        else:
            raise ValueError(f"carboy cannot serve ASGI scope type {kind!r}.")

    async def _asgi_sync(self, environ: dict[str, t.Any], receive: Receive, send: Send) -> None:
        """Serve an HTTP request with Flask's sync path (or the app's wrapped ``wsgi_app``) in
        one pool thread, the body read as it arrives. The context it runs in is kept for
        stepping a streamed body."""
        environ["wsgi.input"] = ReceiveStream(
            receive, asyncio.get_running_loop(), self.config["MAX_CONTENT_LENGTH"]
        )
        environ["carboy.asgi.receive"] = receive
        context = contextvars.copy_context()
        if self._asgi_native:
            response = await run_sync_in(context, self, self._handle, self.request_context(environ))
            await send_response(self, response, environ, context, receive, send)
        else:
            await call_wsgi(self, self.wsgi_app, environ, context, receive, send)

    async def _dispatch_async(self, ctx: RequestContext, plan: _Plan, receive: Receive) -> t.Any:
        """:meth:`_respond` with the view and hooks awaited: async ones on the loop, sync ones
        in the pool. Shares the decisions (plan, short body, response conversion) with it.
        Called by :meth:`asgi_app` with *ctx* pushed."""
        self._got_first_request = True
        if ctx.__class__ is ScopeRequestContext:
            # PERF: request_facts inlined for the usual context (one call less).
            method, has_body, has_cookie = ctx.method, ctx.has_body, ctx.has_cookie
        else:
            method, has_body, has_cookie = request_facts(ctx)
        try:
            if not has_body:
                pass  # no body: ``wsgi.input`` is the shared empty stream
            elif plan.streams_body:
                environ = ctx.environ
                environ["wsgi.input"] = ReceiveStream(
                    receive, asyncio.get_running_loop(), self.config["MAX_CONTENT_LENGTH"]
                )
                environ["carboy.asgi.receive"] = receive
            else:
                size = await read_body(self, ctx.environ, receive)
                if size > FORM_IN_POOL_SIZE:  # the smaller of the two sizes parse_ahead uses
                    await parse_ahead(self, ctx, size)
            if not self._cookie_sessions:
                # A server-side session store does I/O on open: do it in the pool.
                await run_sync(self, ctx._open_session)
            if signals.request_started.receivers:
                await run_sync(self, self._send_request_started)
            rv = None
            if plan.url_value_preprocessors:
                view_args = ctx.request.view_args
                for func in plan.url_value_preprocessors:
                    func(self._endpoint(ctx), view_args)
            for before in plan.abefore:
                rv = await before()
                if rv is not None:
                    break
            if rv is None:
                if (
                    plan.aview is not None
                    and ctx._request is None
                    and ctx._routing_exception is None
                    and method != "OPTIONS"
                ):
                    # PERF: no ``**`` for no arguments (carboy.bare.serve_asgi says why).
                    args = ctx._view_args
                    rv = await (plan.aview(**args) if args else plan.aview())
                else:
                    req = ctx.request
                    if req.routing_exception is not None:
                        self.raise_routing_exception(req)
                    rule: Rule = req.url_rule  # type: ignore[assignment]
                    if (
                        getattr(rule, "provide_automatic_options", False)
                        and req.method == "OPTIONS"
                    ):
                        rv = self.make_default_options_response()
                    else:
                        view = self._plan(rule.endpoint).aview
                        if view is None:
                            view = ensure_async(self, self.view_functions[rule.endpoint])
                        rv = await view(**req.view_args)  # type: ignore[arg-type]
        except Exception as e:
            rv = await self._handle_user_exception_async(ctx, e)
            return await self._finalize_async(ctx, plan, rv, from_error_handler=False)
        short = self._short_body(ctx, plan, rv, method, has_cookie)
        if short is not None:
            return short
        return await self._finalize_async(ctx, plan, rv, from_error_handler=False)

    async def _handle_user_exception_async(self, ctx: RequestContext, e: Exception) -> t.Any:
        """:meth:`handle_user_exception` for an ASGI request: in the pool when a handler (maybe
        sync) will run, right here when none is registered."""
        if self._find_error_handler(e, ctx.request.blueprints) is None:
            return self.handle_user_exception(e)
        return await run_sync(self, self.handle_user_exception, e)

    def _send_request_started(self) -> None:
        signals.request_started.send(self, _async_wrapper=self.ensure_sync)

    async def _finalize_async(
        self, ctx: RequestContext, plan: _Plan, rv: t.Any, from_error_handler: bool = False
    ) -> Response:
        """:meth:`finalize_request` with the after hooks awaited; a default 404 that nothing
        would inspect is answered with its rendered page (:meth:`_page`)."""
        if rv.__class__ is NotFound:
            page = self._page(ctx, plan, rv)
            if page is not None:
                return page  # type: ignore[return-value]
        response = self.make_response(rv)
        for func in ctx._after_request_functions:
            response = await ensure_async(self, func)(response)
        # The registries may have changed during the request (see bare.short_body).
        for after in self._plan(plan.endpoint).aafter:
            response = await after(response)
        if ctx._session is not None or self._session_refresh_due(ctx):
            if type(self.session_interface) is SecureCookieSessionInterface:
                self._save_session(ctx, response)
            else:
                await run_sync(self, self._save_session, ctx, response)
        if signals.request_finished.receivers:
            await run_sync(
                self,
                partial(
                    signals.request_finished.send,
                    self,
                    _async_wrapper=self.ensure_sync,
                    response=response,
                ),
            )
        return response

    def _freeze(self) -> bool:
        """Decide once whether requests may take :meth:`_respond` (no dispatch step overridden),
        and whether ASGI requests may skip :meth:`wsgi_app` (not overridden or wrapped)."""
        self._fast = not any(map(self._overrides, _DISPATCH_STEPS))
        self._asgi_native = not self._overrides("wsgi_app")
        self._plain_request_context = not self._overrides("request_context")
        self._plain_app_context = not self._overrides("app_context")
        self._json_fast = type(self.json) is DefaultJSONProvider
        self._cookie_sessions = type(self.session_interface) is SecureCookieSessionInterface
        self._plain_teardown = not (
            self._overrides("do_teardown_request") or self._overrides("do_teardown_appcontext")
        )
        # What the bare path (carboy.bare) needs of the app's set-up; carboy.bare.route checks
        # per request what may change while the app serves.
        self._bare = (
            self._fast
            and self._plain_request_context
            and self._plain_app_context
            and self._plain_teardown
            and not self._overrides("create_url_adapter")
            and hasattr(self.url_map, "version")  # a carboy.routing.Map: bare.route reads it
            and not self.url_map.host_matching
            and not self.subdomain_matching
        )
        self._bare_asgi = (
            self._bare
            and self._asgi_native
            and self._cookie_sessions
            and not self._overrides("asgi_app")
        )
        return self._fast

    def _skip_teardown(self, ctx: RequestContext, plan: _Plan) -> bool:
        """When ending *ctx* (pushed) would run no teardown function or receiver, mark it and
        its app context torn down, so that popping skips the two ``do_teardown_*`` calls.

        :returns: whether it did.
        """
        # PERF: ~0.4 µs of a 3 µs hello; one call that checks and marks.
        if (
            plan.teardown
            or self.teardown_appcontext_funcs
            or signals.request_tearing_down.receivers
            or signals.appcontext_tearing_down.receivers
            or not self._plain_teardown
        ):
            return False
        ctx._torn_down = True
        tokens = ctx._cv_tokens
        app_ctx = tokens[-1][1] if tokens else None  # None too if the push itself failed
        if app_ctx is not None:
            app_ctx._torn_down = True
        return True

    def _overrides(self, name: str) -> bool:
        """Whether method *name* is overridden by a subclass or replaced on this instance."""
        return getattr(type(self), name) is not getattr(Carboy, name) or name in self.__dict__

    def _plan(self, endpoint: str | None) -> _Plan:
        plan = self._plans.get(endpoint)
        if plan is None:
            plan = self._plans[endpoint] = make_plan(self, endpoint)
        return plan

    @staticmethod
    def _endpoint(ctx: RequestContext) -> str | None:
        rule = ctx._request.url_rule if ctx._request is not None else ctx._rule
        return rule.endpoint if rule is not None else None

    def _respond(self, ctx: RequestContext) -> t.Any:
        """:meth:`full_dispatch_request` for an app that overrides none of its steps, writing
        plain text and JSON without a Response object when nothing would inspect one."""
        self._got_first_request = True
        environ = ctx.environ
        # PERF: _endpoint and _plan inlined (two calls less per request).
        request = ctx._request
        rule = request.url_rule if request is not None else ctx._rule
        endpoint = rule.endpoint if rule is not None else None
        plan = self._plans.get(endpoint) or self._plan(endpoint)
        self._skip_teardown(ctx, plan)
        try:
            if signals.request_started.receivers:
                signals.request_started.send(self, _async_wrapper=self.ensure_sync)
            rv = None
            if plan.before or plan.url_value_preprocessors:
                rv = self.preprocess_request()
            if rv is None:
                view = plan.view
                if (
                    view is None
                    or ctx._request is not None
                    or ctx._routing_exception is not None
                    or environ["REQUEST_METHOD"] == "OPTIONS"
                ):
                    rv = self.dispatch_request()
                else:
                    # PERF: no ``**`` for no arguments (carboy.bare.serve_asgi says why).
                    args = ctx._view_args
                    rv = view(**args) if args else view()
        except Exception as e:
            rv = self.handle_user_exception(e)
            if rv.__class__ is NotFound:
                page = self._page(ctx, plan, rv)
                if page is not None:
                    return page
            return self.finalize_request(rv)
        short = self._short_body(ctx, plan, rv, environ["REQUEST_METHOD"], "HTTP_COOKIE" in environ)
        if short is not None:
            return short
        return self.finalize_request(rv)

    def _short_body(
        self, ctx: RequestContext, plan: _Plan, rv: t.Any, method: str, has_cookie: bool
    ) -> _Body | None:
        """The view's *rv* as a finished body, when nothing could inspect a Response.

        :param method: the request method; :param has_cookie: whether a Cookie header came.
        """
        # PERF: a str or dict return with no after hooks, no session use and no request_finished
        # receivers is written directly: no Response, Headers or wrapper objects (~4 µs saved).
        if (
            not plan.after
            and method != "HEAD"
            and self.response_class is Response
            and (not has_cookie or not self._session_refresh_due(ctx))
        ):
            short = short_body(self, ctx, plan, rv)
            if short is not None:
                return _Body(short)
        return None

    def _page(self, ctx: RequestContext, plan: _Plan, rv: HTTPException) -> _Page | None:
        """The rendered page of *rv*, a :class:`NotFound` no handler took, when it is the
        default one (no description or response of its own) and nothing could inspect the
        Response that :meth:`finalize_request` would make of it: no after hooks or
        ``after_this_request`` functions, the session unopened and not due a refresh, no
        ``request_finished`` receivers, the default response class."""
        # PERF: no page rendering, Response or Headers per miss: the benchmark's 404 among 200
        # rules, in process, 38 -> 14 µs (WSGI) and 46 -> 19 µs (ASGI); Python calls 139 -> 52.
        if (
            rv.__dict__ == _DEFAULT_ERROR
            and not plan.after
            and not ctx._after_request_functions
            and self._plans.get(plan.endpoint) is plan
            and not signals.request_finished.receivers
            and self.response_class is Response
            and ctx._session is None
            and not self._session_refresh_due(ctx)
        ):
            return _not_found_page()
        return None

    def full_dispatch_request(self) -> Response:
        """Run the before hooks and the view, handle errors, and finalize the response.

        Flask-compatible: ``flask.Flask.full_dispatch_request``.
        """
        self._got_first_request = True
        try:
            if signals.request_started.receivers:
                signals.request_started.send(self, _async_wrapper=self.ensure_sync)
            rv = self.preprocess_request()
            if rv is None:
                rv = self.dispatch_request()
        except Exception as e:
            rv = self.handle_user_exception(e)
        return self.finalize_request(rv)

    def preprocess_request(self) -> ft.ResponseReturnValue | None:
        """Run the URL value preprocessors, then the before-request functions (app first, then
        enclosing blueprints outward-in); return the first non-``None`` value.

        Flask-compatible: ``flask.Flask.preprocess_request``.
        """
        ctx = _cv_request_get()
        endpoint = self._endpoint(ctx)
        plan = self._plan(endpoint)
        if plan.url_value_preprocessors:
            view_args = ctx.request.view_args
            for func in plan.url_value_preprocessors:
                func(endpoint, view_args)
        for before in plan.before:
            rv = before()
            if rv is not None:
                return rv  # type: ignore[no-any-return]
        return None

    def dispatch_request(self) -> ft.ResponseReturnValue:
        """Call the matched view with its arguments, or raise the routing exception.

        Flask-compatible: ``flask.Flask.dispatch_request``.
        """
        ctx = _cv_request_get()
        req = ctx.request
        if req.routing_exception is not None:
            self.raise_routing_exception(req)
        rule: Rule = req.url_rule  # type: ignore[assignment]
        if getattr(rule, "provide_automatic_options", False) and req.method == "OPTIONS":
            return self.make_default_options_response()
        view = self._plan(rule.endpoint).view
        if view is None:
            view = self.ensure_sync(self.view_functions[rule.endpoint])
        return view(**req.view_args)  # type: ignore[arg-type,no-any-return]

    def raise_routing_exception(self, request: Request) -> t.NoReturn:
        """Raise the request's routing exception; in debug mode, explain a redirect that
        would drop a form body. Flask-compatible: ``flask.Flask.raise_routing_exception``."""
        exc = t.cast(HTTPException, request.routing_exception)
        if (
            not self.debug
            or not isinstance(exc, RequestRedirect)
            or exc.code in {307, 308}
            or request.method in {"GET", "HEAD", "OPTIONS"}
        ):
            raise exc
        from .debughelpers import FormDataRoutingRedirect

        raise FormDataRoutingRedirect(request)

    def make_default_options_response(self) -> Response:
        """The automatic OPTIONS response, with an ``Allow`` header."""
        adapter = t.cast(MapAdapter, _cv_request_get().url_adapter)
        rv = self.response_class()
        rv.allow.update(adapter.allowed_methods())
        return rv

    def finalize_request(
        self, rv: ft.ResponseReturnValue | HTTPException, from_error_handler: bool = False
    ) -> Response:
        """Turn *rv* into a response and run :meth:`process_response` on it.

        Flask-compatible: ``flask.Flask.finalize_request``. Errors while finalizing an error
        response are logged, not raised.
        """
        response = self.make_response(rv)
        try:
            response = self.process_response(response)
            if signals.request_finished.receivers:
                signals.request_finished.send(
                    self, _async_wrapper=self.ensure_sync, response=response
                )
        except Exception:
            if not from_error_handler:
                raise
            self.logger.exception("Finalizing the response failed while handling an error")
        return response

    def _session_refresh_due(self, ctx: RequestContext) -> bool:
        # An unopened session still needs saving when its cookie must be refreshed on every
        # request; open it then, as Flask (which opens every session) would have.
        cookie = ctx.environ.get("HTTP_COOKIE")
        return bool(
            cookie
            and self.config["SESSION_REFRESH_EACH_REQUEST"]
            and self.session_interface.get_cookie_name(self) in cookie
        )

    def process_response(self, response: Response) -> Response:
        """Run ``after_this_request`` functions, then the after-request functions (blueprints
        inward-out, each in reverse order), then save the session.

        Flask-compatible: ``flask.Flask.process_response``.
        """
        ctx = _cv_request_get()
        for func in ctx._after_request_functions:
            response = self.ensure_sync(func)(response)
        for after in self._plan(self._endpoint(ctx)).after:
            response = after(response)
        self._save_session(ctx, response)
        return response

    def _save_session(self, ctx: RequestContext, response: Response) -> None:
        session = ctx._session
        if session is None and self._session_refresh_due(ctx):
            session = ctx._open_session()
        if session is not None and not self.session_interface.is_null_session(session):
            self.session_interface.save_session(self, session, response)

    def make_response(self, rv: ft.ResponseReturnValue | HTTPException) -> Response:
        """Convert a view's return value to :attr:`response_class`.

        Flask-compatible: ``flask.Flask.make_response``. Accepts ``str``/``bytes`` (body),
        ``dict``/``list`` (JSON), iterators and generators (streamed), response objects, WSGI
        callables, and ``(body, status)``, ``(body, headers)``, ``(body, status, headers)``.

        :raises TypeError: for ``None``, a tuple of another shape, or any other type; the
            message names the view's endpoint and the type returned.
        """
        status: t.Any = None
        headers: t.Any = None
        if isinstance(rv, tuple):
            if len(rv) == 3:
                rv, status, headers = rv
            elif len(rv) == 2:
                if isinstance(rv[1], Headers | dict | tuple | list):
                    rv, headers = rv
                else:
                    rv, status = rv
            else:
                raise TypeError(
                    f"The view function for {self._endpoint_name()!r} returned a tuple of"
                    f" {len(rv)} items. The tuple must have the form (body, status, headers),"
                    " (body, status) or (body, headers)."
                )
        if rv is None:
            raise TypeError(
                f"The view function for {self._endpoint_name()!r} did not return a valid"
                " response: it returned None (perhaps a missing return statement)."
            )
        if not isinstance(rv, self.response_class):
            if isinstance(rv, cabc.AsyncIterator):
                rv = self.response_class(_AsyncBody(rv), status=status, headers=headers)
                status = headers = None
            elif isinstance(rv, (str | bytes | bytearray, cabc.Iterator)):
                rv = self.response_class(rv, status=status, headers=headers)
                status = headers = None
            elif isinstance(rv, dict | list):
                rv = self.json.response(rv)
            elif isinstance(rv, HTTPException):
                # PERF: ask the error for its response object instead of running it as a WSGI
                # app and parsing the output back (same status, headers and body; ~15 µs).
                rv = self.response_class.force_type(rv.get_response(_cv_request_get().environ))
            elif isinstance(rv, BaseResponse) or callable(rv):
                try:
                    rv = self.response_class.force_type(
                        rv,  # type: ignore[arg-type]
                        _cv_request_get().environ,
                    )
                except TypeError as e:
                    raise TypeError(
                        f"{e}\nThe view function for {self._endpoint_name()!r} did not return a"
                        " valid response. It must return a string, dict, list, tuple with"
                        " headers or status, response object or WSGI callable, but it returned"
                        f" a {type(rv).__name__}."
                    ).with_traceback(sys.exc_info()[2]) from None
            else:
                raise TypeError(
                    f"The view function for {self._endpoint_name()!r} did not return a valid"
                    " response. It must return a string, dict, list, tuple with headers or"
                    " status, response object or WSGI callable, but it returned a"
                    f" {type(rv).__name__}."
                )
        response = t.cast(Response, rv)
        if status is not None:
            if isinstance(status, str | bytes | bytearray):
                response.status = status  # type: ignore[assignment]
            else:
                response.status_code = status
        if headers:
            response.headers.update(headers)
        return response

    def _endpoint_name(self) -> str | None:
        ctx = _cv_request_get(None)
        return self._endpoint(ctx) if ctx is not None else None

    def handle_http_exception(self, e: HTTPException) -> HTTPException | ft.ResponseReturnValue:
        """Answer an HTTP error with its registered handler, or with the error itself.

        Flask-compatible: ``flask.Flask.handle_http_exception``. Routing redirects and
        code-less exceptions are returned unchanged.
        """
        if e.code is None or isinstance(e, RoutingException):
            return e
        ctx = _cv_request_get()
        handler = self._find_error_handler(e, ctx.request.blueprints)
        if handler is None:
            return e
        return self.ensure_sync(handler)(e)  # type: ignore[no-any-return]

    def handle_user_exception(self, e: Exception) -> HTTPException | ft.ResponseReturnValue:
        """Answer an exception raised by a hook or view with its registered handler.

        Flask-compatible: ``flask.Flask.handle_user_exception``.

        :raises Exception: *e* again when no handler is registered (and it is not an HTTP error).
        """
        if isinstance(e, BadRequestKeyError) and (
            self.debug or self.config["TRAP_BAD_REQUEST_ERRORS"]
        ):
            e.show_exception = True
        if isinstance(e, HTTPException) and not self.trap_http_exception(e):
            return self.handle_http_exception(e)
        ctx = _cv_request_get()
        handler = self._find_error_handler(e, ctx.request.blueprints)
        if handler is None:
            raise e
        return self.ensure_sync(handler)(e)  # type: ignore[no-any-return]

    def handle_exception(self, e: Exception) -> Response:
        """Answer an unhandled exception: re-raise it when propagating (testing/debug or
        ``PROPAGATE_EXCEPTIONS``), else log it and answer 500 through the 500 handler.

        Flask-compatible: ``flask.Flask.handle_exception``.
        """
        exc_info = sys.exc_info()
        if exc_info[1] is not e:
            # Called outside the ``except`` block (from a pool thread under ASGI).
            exc_info = (type(e), e, e.__traceback__)  # type: ignore[assignment]
        if signals.got_request_exception.receivers:
            signals.got_request_exception.send(self, _async_wrapper=self.ensure_sync, exception=e)
        propagate = self.config["PROPAGATE_EXCEPTIONS"]
        if propagate is None:
            propagate = self.testing or self.debug
        if propagate:
            if sys.exc_info()[1] is e:
                raise
            raise e
        self.log_exception(exc_info)
        server_error: InternalServerError | ft.ResponseReturnValue
        server_error = InternalServerError(original_exception=e)
        ctx = _cv_request_get(None)
        handler = self._find_error_handler(
            server_error, ctx.request.blueprints if ctx is not None else []
        )
        if handler is not None:
            server_error = self.ensure_sync(handler)(server_error)
        return self.finalize_request(server_error, from_error_handler=True)

    def log_exception(
        self,
        exc_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None],
    ) -> None:
        """Log an unhandled exception to :attr:`logger` at ERROR level, with the request's
        path and method. Flask-compatible: ``flask.Flask.log_exception``; the path and method
        are written through :func:`carboy.logging.loggable`, their control characters
        escaped, so a request cannot forge a log line or hijack a terminal (Flask writes them
        raw)."""
        ctx = _cv_request_get(None)
        where = ""
        if ctx is not None:
            where = f" on {loggable(ctx.request.path)} [{loggable(ctx.request.method)}]"
        self.logger.error(f"Exception{where}", exc_info=exc_info)

    # -- teardown ----------------------------------------------------------------------------

    def do_teardown_request(self, exc: BaseException | None = _sentinel) -> None:
        """Run the teardown-request functions (blueprints inward-out, each in reverse order).

        Flask-compatible: ``flask.Flask.do_teardown_request``.
        """
        if exc is _sentinel:
            exc = sys.exc_info()[1]
        ctx = _cv_request_get()
        for func in self._plan(self._endpoint(ctx)).teardown:
            func(exc)
        if signals.request_tearing_down.receivers:
            signals.request_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)

    def do_teardown_appcontext(self, exc: BaseException | None = _sentinel) -> None:
        """Run the teardown-appcontext functions in reverse order.

        Flask-compatible: ``flask.Flask.do_teardown_appcontext``.
        """
        if exc is _sentinel:
            exc = sys.exc_info()[1]
        for func in reversed(self.teardown_appcontext_funcs):
            self.ensure_sync(func)(exc)
        if signals.appcontext_tearing_down.receivers:
            signals.appcontext_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)

    if t.TYPE_CHECKING:
        cli: Group
