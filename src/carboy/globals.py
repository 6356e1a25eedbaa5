"""The context-bound proxies: ``current_app``, ``g``, ``request`` and ``session``.

Flask-compatible: ``flask.globals``. Each proxy reads one :class:`contextvars.ContextVar`, so the
value is correct per thread, per greenlet (with contextvar support) and per asyncio task.
"""

from __future__ import annotations

import typing as t
from contextvars import ContextVar

from werkzeug.local import LocalProxy

if t.TYPE_CHECKING:
    from .app import Carboy
    from .ctx import AppContext, RequestContext, _AppCtxGlobals
    from .sessions import SessionMixin
    from .wrappers import Request

_no_app_msg = """\
Working outside of application context.

This typically means that you attempted to use functionality that needed
the current application. To solve this, set up an application context
with app.app_context(). See the documentation for more information.\
"""
_no_req_msg = """\
Working outside of request context.

This typically means that you attempted to use functionality that needed
an active HTTP request. Consult the documentation on testing for
information about how to avoid this problem.\
"""

#: The active app context of this thread or task.
_cv_app: ContextVar[AppContext] = ContextVar("carboy.app_ctx")
#: The active request context of this thread or task.
_cv_request: ContextVar[RequestContext] = ContextVar("carboy.request_ctx")

# PERF: the two variables' methods, bound once, for carboy's own modules. CPython 3.11 compiles
# ``_cv_app.get()`` in a module that imported ``_cv_app`` to a plain attribute load, which makes
# a new bound-method object on every call (a bare request made seven); calling these makes none.
# Under granian, callgrind estimates 5.6k of 180k cycles per bare ASGI hello saved.
_cv_app_get = _cv_app.get
_cv_app_set = _cv_app.set
_cv_app_reset = _cv_app.reset
_cv_request_get = _cv_request.get
_cv_request_set = _cv_request.set
_cv_request_reset = _cv_request.reset

app_ctx: AppContext = LocalProxy(  # type: ignore[assignment]
    _cv_app, unbound_message=_no_app_msg
)
current_app: Carboy = LocalProxy(  # type: ignore[assignment]
    _cv_app, "app", unbound_message=_no_app_msg
)
g: _AppCtxGlobals = LocalProxy(  # type: ignore[assignment]
    _cv_app, "g", unbound_message=_no_app_msg
)
request_ctx: RequestContext = LocalProxy(  # type: ignore[assignment]
    _cv_request, unbound_message=_no_req_msg
)
request: Request = LocalProxy(  # type: ignore[assignment]
    _cv_request, "request", unbound_message=_no_req_msg
)
session: SessionMixin = LocalProxy(  # type: ignore[assignment]
    _cv_request, "session", unbound_message=_no_req_msg
)
