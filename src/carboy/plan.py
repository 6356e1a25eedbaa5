"""Plans: what one endpoint's requests run, gathered from the app's registries once.

Flask works out on every request which before, after and teardown functions apply (the app's,
then those of each enclosing blueprint) and in which order. carboy does it on an endpoint's
first request and keeps the answer in the app's ``_plans``; the registries are watched
(:mod:`carboy.watched`), so any change to them drops every plan.
"""

from __future__ import annotations

import inspect
import typing as t
from dataclasses import dataclass

from werkzeug.exceptions import NotImplemented as HTTPNotImplemented

from . import typing as ft
from .concurrency import ensure_async
from .wrappers import split_blueprint_path

if t.TYPE_CHECKING:  # pragma: no cover
    from .app import Carboy

__all__ = ["Plan", "make_plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What one endpoint's requests run.

    ``view``, ``before``, ``after`` and ``teardown`` are wrapped for sync calling (WSGI, and
    the sync path under ASGI); the ``a*`` fields hold the same callables wrapped for awaiting
    (ASGI, when ``is_async``: some view or hook is a coroutine function).
    """

    # PERF: slots, not a NamedTuple: CPython specialises reading a slot, not a tuple field's
    # descriptor (each request reads four to six fields).

    endpoint: str | None
    view: t.Callable[..., t.Any] | None
    url_value_preprocessors: tuple[ft.URLValuePreprocessorCallable, ...]
    before: tuple[t.Callable[[], t.Any], ...]
    after: tuple[t.Callable[[t.Any], t.Any], ...]
    teardown: tuple[t.Callable[[BaseException | None], t.Any], ...]
    is_async: bool
    aview: t.Callable[..., t.Awaitable[t.Any]] | None
    abefore: tuple[t.Callable[[], t.Awaitable[t.Any]], ...]
    aafter: tuple[t.Callable[[t.Any], t.Awaitable[t.Any]], ...]
    #: The view reads its body as it arrives (:func:`carboy.stream_request_body`).
    streams_body: bool
    #: A view and no hook of any kind: requests may take the bare path (:mod:`carboy.bare`).
    bare: bool


def make_plan(app: Carboy, endpoint: str | None) -> Plan:
    """The plan of *endpoint* (``None``: no rule matched) from *app*'s registries now."""
    blueprints: tuple[str, ...] = ()
    if endpoint is not None and "." in endpoint:
        blueprints = tuple(split_blueprint_path(endpoint.rpartition(".")[0]))
    outer_first = (None, *reversed(blueprints))
    inner_first = (*blueprints, None)
    view = app.view_functions.get(endpoint) if endpoint is not None else None
    if view is not None and _is_websocket_endpoint(app, endpoint):
        view = _websocket_over_http
    before = [f for n in outer_first for f in app.before_request_funcs.get(n, ())]
    after = [f for n in inner_first for f in reversed(app.after_request_funcs.get(n, ()))]
    teardown = [f for n in inner_first for f in reversed(app.teardown_request_funcs.get(n, ()))]
    preprocessors = tuple(f for n in outer_first for f in app.url_value_preprocessors.get(n, ()))
    callables = (view, *before, *after, *teardown)
    # With nothing sync to run (a 404 with no hooks, say), the event loop answers too.
    is_async = not any(callables) or any(map(inspect.iscoroutinefunction, callables))
    sync = app.ensure_sync

    def awaitable(f: t.Callable[..., t.Any]) -> t.Callable[..., t.Awaitable[t.Any]]:
        return ensure_async(app, f)

    return Plan(
        endpoint=endpoint,
        view=sync(view) if view is not None else None,
        url_value_preprocessors=preprocessors,
        before=tuple(map(sync, before)),
        after=tuple(map(sync, after)),
        teardown=tuple(map(sync, teardown)),
        is_async=is_async,
        aview=awaitable(view) if view is not None and is_async else None,
        abefore=tuple(map(awaitable, before)) if is_async else (),
        aafter=tuple(map(awaitable, after)) if is_async else (),
        streams_body=bool(getattr(view, "stream_request_body", False)),
        bare=view is not None and not (before or after or teardown or preprocessors),
    )


def _is_websocket_endpoint(app: Carboy, endpoint: str | None) -> bool:
    rules = app.url_map._rules_by_endpoint.get(endpoint, ())
    return bool(rules) and all(rule.websocket for rule in rules)


def _websocket_over_http(**kwargs: t.Any) -> t.NoReturn:
    """The view of a WebSocket route when reached over WSGI, or by a request that is not a
    WebSocket handshake but matched anyway (an OPTIONS request, say)."""
    raise HTTPNotImplemented(
        "This URL is a WebSocket route. WebSockets need an ASGI server (uvicorn, hypercorn,"
        " granian --interface asgi); a WSGI server cannot hold the connection open."
    )
