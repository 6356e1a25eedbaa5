"""Helpers used inside views: URL building, redirects, errors, flashing, streaming.

Flask-compatible: ``flask.helpers``.
"""

from __future__ import annotations

import os
import typing as t
from functools import update_wrapper

from werkzeug.exceptions import abort as _wz_abort
from werkzeug.utils import redirect as _wz_redirect

from . import signals
from .globals import _cv_app_get, _cv_request_get, current_app, request_ctx, session
from .scaffold import get_root_path

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from .wrappers import Response

__all__ = [
    "abort",
    "flash",
    "get_debug_flag",
    "get_flashed_messages",
    "get_load_dotenv",
    "get_root_path",
    "get_template_attribute",
    "make_response",
    "redirect",
    "send_file",
    "send_from_directory",
    "stream_with_context",
    "url_for",
]


F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def _env_flag(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            return value
    return None


def get_debug_flag() -> bool:
    """Whether ``CARBOY_DEBUG`` (or ``FLASK_DEBUG``) asks for debug mode.

    Flask-compatible: ``flask.helpers.get_debug_flag``.
    """
    value = _env_flag("CARBOY_DEBUG", "FLASK_DEBUG")
    return bool(value and value.lower() not in {"0", "false", "no"})


def get_load_dotenv(default: bool = True) -> bool:
    """Whether to load dotenv files: *default*, unless ``CARBOY_SKIP_DOTENV`` (or
    ``FLASK_SKIP_DOTENV``) is set to a true value.

    Flask-compatible: ``flask.helpers.get_load_dotenv``.
    """
    value = _env_flag("CARBOY_SKIP_DOTENV", "FLASK_SKIP_DOTENV")
    if not value:
        return default
    return value.lower() in {"0", "false", "no"}


def stream_with_context(
    generator_or_function: t.Iterator[t.AnyStr] | t.Callable[..., t.Iterator[t.AnyStr]],
) -> t.Iterator[t.AnyStr]:
    """Keep the request context active while a streamed response body is generated.

    Flask-compatible: ``flask.stream_with_context``. Use on a generator, or as a decorator on a
    generator function.

    :raises RuntimeError: outside a request context.
    """
    try:
        gen = iter(generator_or_function)  # type: ignore[arg-type]
    except TypeError:
        func = t.cast(t.Callable[..., t.Iterator[t.AnyStr]], generator_or_function)

        def decorator(*args: t.Any, **kwargs: t.Any) -> t.Any:
            return stream_with_context(func(*args, **kwargs))

        return update_wrapper(decorator, func)  # type: ignore[return-value]

    ctx = _cv_request_get(None)
    if ctx is None:
        raise RuntimeError(
            "'stream_with_context' needs an active request context, such as inside a view."
        )

    def generator() -> t.Iterator[t.AnyStr | None]:
        with ctx:
            yield None  # primed below, so the context is pushed before the server iterates
            try:
                yield from gen
            finally:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()

    wrapped = generator()
    next(wrapped)
    return wrapped  # type: ignore[return-value]


def make_response(*args: t.Any) -> Response:
    """Turn view-style return values into a response object, to add headers in a view.

    Flask-compatible: ``flask.make_response``. No arguments give an empty response; one
    argument or several (a tuple) are passed to :meth:`Carboy.make_response`.
    """
    if not args:
        return current_app.response_class()
    if len(args) == 1:
        args = args[0]
    return current_app.make_response(args)


def url_for(
    endpoint: str,
    *,
    _anchor: str | None = None,
    _method: str | None = None,
    _scheme: str | None = None,
    _external: bool | None = None,
    **values: t.Any,
) -> str:
    """Build the URL for *endpoint* with *values*; unknown values become the query string.

    Flask-compatible: ``flask.url_for``. ``.name`` is relative to the current blueprint.

    :param _anchor: appended as ``#anchor``.
    :param _method: pick the rule that allows this method.
    :param _scheme: the URL scheme; implies an external URL.
    :param _external: absolute URL with scheme and host (default outside requests).
    :raises werkzeug.routing.BuildError: when no rule fits.
    """
    return current_app.url_for(
        endpoint,
        _anchor=_anchor,
        _method=_method,
        _scheme=_scheme,
        _external=_external,
        **values,
    )


def redirect(
    location: str, code: int = 302, Response: type[BaseResponse] | None = None
) -> BaseResponse:
    """A redirect response to *location* (status *code*, 302 by default).

    Flask-compatible: ``flask.redirect``; uses the app's :meth:`Carboy.redirect` when active.
    """
    ctx = _cv_app_get(None)
    if ctx is not None:
        return ctx.app.redirect(location, code=code)
    return _wz_redirect(location, code=code, Response=Response)


def abort(code: int | BaseResponse, *args: t.Any, **kwargs: t.Any) -> t.NoReturn:
    """Raise the HTTP error for *code* (or a response) to end the request.

    Flask-compatible: ``flask.abort``.

    :raises werkzeug.exceptions.HTTPException: always.
    :raises LookupError: for a status code with no exception class.
    """
    ctx = _cv_app_get(None)
    if ctx is not None:
        ctx.app.aborter(code, *args, **kwargs)
    _wz_abort(code, *args, **kwargs)


def get_template_attribute(template_name: str, attribute: str) -> t.Any:
    """A macro or variable exported by a template, e.g. to call a macro from Python.

    Flask-compatible: ``flask.get_template_attribute``.
    """
    return getattr(current_app.jinja_env.get_template(template_name).module, attribute)


def flash(message: str, category: str = "message") -> None:
    """Store *message* in the session for the next request to show.

    Flask-compatible: ``flask.flash``.

    :param category: e.g. ``"message"``, ``"error"``, ``"info"``, ``"warning"``.
    """
    flashes = session.get("_flashes", [])
    flashes.append((category, message))
    session["_flashes"] = flashes
    if signals.message_flashed.receivers:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        signals.message_flashed.send(
            app, _async_wrapper=app.ensure_sync, message=message, category=category
        )


def get_flashed_messages(
    with_categories: bool = False, category_filter: t.Iterable[str] = ()
) -> list[str] | list[tuple[str, str]]:
    """Take the flashed messages out of the session (repeat calls in one request return the
    same list).

    Flask-compatible: ``flask.get_flashed_messages``.

    :param with_categories: return ``(category, message)`` pairs.
    :param category_filter: only these categories.
    """
    flashes = request_ctx.flashes
    if flashes is None:
        flashes = session.pop("_flashes") if "_flashes" in session else []
        request_ctx.flashes = flashes
    if category_filter:
        wanted = set(category_filter)
        flashes = [f for f in flashes if f[0] in wanted]
    if not with_categories:
        return [message for _, message in flashes]
    return flashes


from .files import send_file, send_from_directory  # noqa: E402


def stream_request_body(view: F) -> F:
    """Mark *view* as reading its request body as it arrives, instead of after it has all
    arrived.

    Under ASGI, an ``async def`` view's body is otherwise received in full (spooled to disk
    past 1 MiB) before the view runs, so Flask's sync API (``request.form``,
    ``request.get_json()``) works in it. A marked view reads with
    ``async for chunk in request.iter_body()`` instead; ``MAX_CONTENT_LENGTH`` still applies
    (413). Sync views, and every view under WSGI, always read as the body arrives.

    .. versionadded:: 0.1
    """
    view.stream_request_body = True  # type: ignore[attr-defined]
    return view
