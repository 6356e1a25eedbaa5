"""App and request contexts on :mod:`contextvars`.

Flask-compatible: ``flask.ctx``. A context is pushed by setting one context variable, so it is
correct per thread, per greenlet and per asyncio task. What a request may never use is created on
first use: the :class:`~carboy.wrappers.Request` object, the session, the URL adapter and ``g``.
"""

from __future__ import annotations

import contextvars
import sys
import typing as t
from functools import update_wrapper
from types import TracebackType

from werkzeug.exceptions import HTTPException

from . import signals
from .globals import (
    _cv_app,
    _cv_app_get,
    _cv_app_reset,
    _cv_app_set,
    _cv_request,
    _cv_request_get,
    _cv_request_reset,
    _cv_request_set,
)

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment
    from werkzeug.routing import MapAdapter

    from .app import Carboy
    from .sessions import SessionMixin
    from .wrappers import Request

_sentinel = object()
F = t.TypeVar("F", bound=t.Callable[..., t.Any])
V = t.TypeVar("V")


def _restore(var: contextvars.ContextVar[V], token: contextvars.Token[V]) -> None:
    """Undo the ``var.set`` that gave *token*.

    A context pushed in one :class:`contextvars.Context` may be popped in a copy of it: under
    ASGI, a ``stream_with_context`` body is stepped in pool threads, in a copy of the context the
    view ran in. The token does not belong to the copy; set the old value there instead (the
    copy is discarded when the body ends).
    """
    try:
        var.reset(token)
    except ValueError:
        if token.old_value is contextvars.Token.MISSING:
            var.set(None)  # type: ignore[arg-type]
        else:
            var.set(token.old_value)


class _AppCtxGlobals:
    """The namespace behind :data:`carboy.g`: any attribute can be set for the app context.

    Flask-compatible: ``flask.ctx._AppCtxGlobals``.
    """

    def __getattr__(self, name: str) -> t.Any:
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: t.Any) -> None:
        self.__dict__[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: t.Any | None = None) -> t.Any:
        """Return attribute *name*, or *default* when it is not set."""
        return self.__dict__.get(name, default)

    def pop(self, name: str, default: t.Any = _sentinel) -> t.Any:
        """Remove and return attribute *name*.

        :raises KeyError: when it is not set and no *default* is given.
        """
        if default is _sentinel:
            return self.__dict__.pop(name)
        return self.__dict__.pop(name, default)

    def setdefault(self, name: str, default: t.Any = None) -> t.Any:
        """Return attribute *name*, setting it to *default* first if it is not set."""
        return self.__dict__.setdefault(name, default)

    def __contains__(self, item: str) -> bool:
        return item in self.__dict__

    def __iter__(self) -> t.Iterator[str]:
        return iter(self.__dict__)

    def __repr__(self) -> str:
        ctx = _cv_app_get(None)
        if ctx is not None:
            return f"<carboy.g of '{ctx.app.name}'>"
        return object.__repr__(self)


def after_this_request(f: F) -> F:
    """Run *f(response)* after this request's view; it must return a response.

    Flask-compatible: ``flask.after_this_request``.

    :raises RuntimeError: outside a request context.
    """
    ctx = _cv_request_get(None)
    if ctx is None:
        raise RuntimeError(
            "'after_this_request' needs an active request context, such as inside a view."
        )
    ctx._after_request_functions.append(f)
    return f


def copy_current_request_context(f: F) -> F:
    """Wrap *f* so that it runs inside a copy of the current request context.

    Use it for work handed to another thread or greenlet. Flask-compatible:
    ``flask.copy_current_request_context``.

    :raises RuntimeError: outside a request context.
    """
    ctx = _cv_request_get(None)
    if ctx is None:
        raise RuntimeError(
            "'copy_current_request_context' needs an active request context, such as inside a view."
        )
    ctx = ctx.copy()

    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        with ctx:
            return ctx.app.ensure_sync(f)(*args, **kwargs)

    return update_wrapper(wrapper, f)  # type: ignore[return-value]


def has_request_context() -> bool:
    """Whether a request context is active. Flask-compatible: ``flask.has_request_context``."""
    return _cv_request_get(None) is not None


def has_app_context() -> bool:
    """Whether an app context is active. Flask-compatible: ``flask.has_app_context``."""
    return _cv_app_get(None) is not None


class AppContext:
    """The app context: makes :data:`current_app` and :data:`g` available.

    Flask-compatible: ``flask.ctx.AppContext``. Usable as a context manager; pushes nest.

    :param app: the application.
    """

    # PERF: state rarely read on the hot path is read from the class until first written.
    _g: t.Any = None
    _url_adapter: t.Any = _sentinel

    def __init__(self, app: Carboy) -> None:
        self.app = app
        self._torn_down = False
        self._cv_tokens: list[contextvars.Token[AppContext]] = []

    @property
    def g(self) -> _AppCtxGlobals:
        """The :data:`carboy.g` namespace of this context, created on first use."""
        g = self._g
        if g is None:
            g = self._g = self.app.app_ctx_globals_class()
        return t.cast(_AppCtxGlobals, g)

    @g.setter
    def g(self, value: _AppCtxGlobals) -> None:
        self._g = value

    @property
    def url_adapter(self) -> MapAdapter | None:
        """An adapter bound from ``SERVER_NAME``, or ``None`` when it is not configured."""
        adapter = self._url_adapter
        if adapter is _sentinel:
            adapter = self._url_adapter = self.app.create_url_adapter(None)
        return t.cast("MapAdapter | None", adapter)

    @url_adapter.setter
    def url_adapter(self, value: MapAdapter | None) -> None:
        self._url_adapter = value

    def push(self) -> None:
        """Make this context the active one."""
        self._cv_tokens.append(_cv_app_set(self))
        if signals.appcontext_pushed.receivers:
            signals.appcontext_pushed.send(self.app, _async_wrapper=self.app.ensure_sync)

    def pop(self, exc: BaseException | None = _sentinel) -> None:  # type: ignore[assignment]
        """Deactivate this context, running the app-context teardown functions if outermost.

        :param exc: the unhandled exception, passed to teardown functions; by default the one
            being handled, if any.
        :raises AssertionError: if another context is active (contexts popped out of order).
        """
        tokens = self._cv_tokens
        try:
            if not self._torn_down and len(tokens) == 1:
                if exc is _sentinel:
                    exc = sys.exc_info()[1]
                self.app.do_teardown_appcontext(exc)
        finally:
            active = _cv_app_get()
            token = tokens.pop()
            try:
                _cv_app_reset(token)
            except ValueError:
                _restore(_cv_app, token)
        if active is not self:
            raise AssertionError(f"Popped the wrong app context ({active!r} instead of {self!r}).")
        if signals.appcontext_popped.receivers:
            signals.appcontext_popped.send(self.app, _async_wrapper=self.app.ensure_sync)

    def __enter__(self) -> AppContext:
        self.push()
        return self

    def __exit__(
        self,
        exc_type: type | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pop(exc_value)


class RequestContext:
    """The request context: makes :data:`request` and :data:`session` available.

    Flask-compatible: ``flask.ctx.RequestContext``. Pushing it also pushes an app context for
    its app when none (or another app's) is active, and matches the URL.

    :param app: the application.
    :param environ: the WSGI environ of the request.
    :param request: an existing request object; created from *environ* on first use otherwise.
    :param session: an existing session; opened through ``app.session_interface`` on first use
        otherwise.
    """

    #: The :class:`carboy.websocket.Websocket` of a WebSocket connection, else ``None``.
    websocket: t.Any = None
    #: The ASGI scope, for a :class:`carboy.asgi.ScopeRequestContext`.
    _scope: t.Any = None
    # PERF: state rarely read on the hot path is read from the class until first written.
    _url_adapter: t.Any = _sentinel
    flashes: list[tuple[str, str]] | None = None

    def __init__(
        self,
        app: Carboy,
        environ: WSGIEnvironment,
        request: Request | None = None,
        session: SessionMixin | None = None,
    ) -> None:
        self.app = app
        self.environ = environ
        self._request = request
        self._session = session
        # The match result, kept here until the request object exists.
        self._rule: t.Any = None
        self._view_args: dict[str, t.Any] | None = None
        self._routing_exception: HTTPException | None = None
        self._torn_down = False
        self._after_request_functions: list[t.Callable[[t.Any], t.Any]] = []
        self._cv_tokens: list[tuple[contextvars.Token[RequestContext], AppContext | None]] = []

    @property
    def request(self) -> Request:
        """The request object, created from the environ on first use."""
        req = self._request
        if req is None:
            req = self._request = self.app.request_class(self.environ)
            if self._rule is not None:
                req.url_rule = self._rule
                req.view_args = self._view_args
            req.routing_exception = self._routing_exception
        return req

    @request.setter
    def request(self, value: Request) -> None:
        self._request = value

    @property
    def session(self) -> SessionMixin:
        """The session, opened through ``app.session_interface`` on first use.

        Every access, including through the :data:`~carboy.session` proxy, sets the session's
        :attr:`~carboy.sessions.SessionMixin.accessed`, so the response gets ``Vary: Cookie``
        however the view inspects it (``in``, ``len()``, iteration, ``==``, ...).
        Flask-compatible: ``flask.ctx.RequestContext.session`` (Flask 3.1.3).
        """
        session = self._session
        if session is None:
            session = self._open_session()
        session.accessed = True
        return session

    @session.setter
    def session(self, value: SessionMixin) -> None:
        self._session = value

    def _open_session(self) -> SessionMixin:
        """The session, opened on first use without marking it accessed: for the app's own
        reads (saving a cookie due a refresh, opening a server-side session ahead of the
        view, copying the context), which must not add ``Vary: Cookie`` on their own."""
        session = self._session
        if session is None:
            app = self.app
            interface = app.session_interface
            session = interface.open_session(app, self.request)
            if session is None:
                session = interface.make_null_session(app)
            self._session = session
        return session

    @property
    def url_adapter(self) -> MapAdapter | None:
        """The URL adapter bound to this request, created on first use."""
        adapter = self._url_adapter
        if adapter is _sentinel:
            try:
                adapter = self.app.create_url_adapter(self.request)
            except HTTPException as e:
                self._set_routing_exception(e)
                adapter = None
            self._url_adapter = adapter
        return t.cast("MapAdapter | None", adapter)

    @url_adapter.setter
    def url_adapter(self, value: MapAdapter | None) -> None:
        self._url_adapter = value

    def _set_match(self, rule: t.Any, view_args: dict[str, t.Any]) -> None:
        self._rule = rule
        self._view_args = view_args
        if self._request is not None:
            self._request.url_rule = rule
            self._request.view_args = view_args

    def _set_routing_exception(self, e: HTTPException) -> None:
        self._routing_exception = e
        if self._request is not None:
            self._request.routing_exception = e

    def copy(self) -> RequestContext:
        """A new context for the same environ, request and session (for another thread)."""
        return self.__class__(self.app, self.environ, self.request, self._open_session())

    def _teardown(self, exc: BaseException | None) -> None:
        """Run the teardown functions now, so that the coming :meth:`pop` skips them (ASGI
        runs them in a pool thread, then pops on the event loop)."""
        self.app.do_teardown_request(exc)
        self._torn_down = True
        app_ctx = self._cv_tokens[-1][1] if self._cv_tokens else None
        if app_ctx is not None and len(app_ctx._cv_tokens) == 1:
            self.app.do_teardown_appcontext(exc)
            app_ctx._torn_down = True

    def match_request(self) -> None:
        """Match the URL and store the rule and view arguments, or the routing exception."""
        self.app._match(self)

    def push(self) -> None:
        """Make this context (and an app context, if needed) active, then match the URL."""
        app = self.app
        app_ctx = _cv_app_get(None)
        if app_ctx is None or app_ctx.app is not app:
            # PERF: app_context() called only when overridden (one call less).
            app_ctx = AppContext(app) if app._plain_app_context else app.app_context()
            if app_ctx.__class__ is AppContext and not signals.appcontext_pushed.receivers:
                # PERF: AppContext.push inlined for the plain class (one call less).
                app_ctx._cv_tokens.append(_cv_app_set(app_ctx))
            else:
                app_ctx.push()
        else:
            app_ctx = None
        tokens = self._cv_tokens
        tokens.append((_cv_request_set(self), app_ctx))
        if len(tokens) == 1 and self._rule is None and self._routing_exception is None:
            app._match(self)

    def pop(self, exc: BaseException | None = _sentinel) -> None:  # type: ignore[assignment]
        """Deactivate this context; if outermost, run teardown functions and close the request.

        :param exc: the unhandled exception passed to teardown functions.
        :raises AssertionError: if another request context is active.
        """
        tokens = self._cv_tokens
        outermost = len(tokens) == 1
        try:
            if outermost:
                if not self._torn_down:
                    if exc is _sentinel:
                        exc = sys.exc_info()[1]
                    self.app.do_teardown_request(exc)
                request = self._request
                if request is not None:
                    request.close()
                    # Break the request <-> environ cycle (no Request, no cycle).
                    request.environ["werkzeug.request"] = None
        finally:
            active = _cv_request_get()
            token, app_ctx = tokens.pop()
            # PERF: _restore's reset inlined; its fallback only runs for a context popped in a
            # copy of the one it was pushed in.
            try:
                _cv_request_reset(token)
            except ValueError:
                _restore(_cv_request, token)
            if app_ctx is not None:
                app_ctx.pop(exc)
            if active is not self:
                raise AssertionError(
                    f"Popped the wrong request context ({active!r} instead of {self!r})."
                )

    def __enter__(self) -> RequestContext:
        self.push()
        return self

    def __exit__(
        self,
        exc_type: type | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pop(exc_value)

    def __repr__(self) -> str:
        env = self.environ
        return (
            f"<{type(self).__name__} {env.get('PATH_INFO', '')!r}"
            f" [{env.get('REQUEST_METHOD', 'GET')}] of {self.app.name}>"
        )


def hand_over_contexts(environ: dict[str, t.Any]) -> None:
    """Give the active contexts to the test client (or debugger) that asked to keep them
    (``werkzeug.debug.preserve_context`` in *environ*)."""
    environ["werkzeug.debug.preserve_context"](_cv_app_get())
    environ["werkzeug.debug.preserve_context"](_cv_request_get())
