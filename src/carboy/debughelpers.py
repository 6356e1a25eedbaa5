"""Errors with explanations, raised only in debug mode.

Flask-compatible: ``flask.debughelpers``.
"""

from __future__ import annotations

import typing as t

from werkzeug.exceptions import BadRequestKeyError
from werkzeug.routing import RequestRedirect

if t.TYPE_CHECKING:
    from .wrappers import Request


class UnexpectedUnicodeError(AssertionError, UnicodeError):
    """Raised where carboy expected bytes and got text, to give a better message."""


class DebugFilesKeyError(KeyError, AssertionError):
    """Raised in debug mode when ``request.files`` is read but the form was not multipart."""

    def __init__(self, request: Request, key: str) -> None:
        form_matches = request.form.getlist(key)
        parts = [
            f"You tried to read the file {key!r} from request.files, but the request's"
            f" mimetype is {request.mimetype!r}, not 'multipart/form-data'. Files arrive"
            ' only when the form sets enctype="multipart/form-data".'
        ]
        if form_matches:
            names = ", ".join(repr(x) for x in form_matches)
            parts.append(f" The browser sent these file names as form fields instead: {names}")
        self.msg = "".join(parts)

    def __str__(self) -> str:
        return self.msg


class FormDataRoutingRedirect(AssertionError):
    """Raised in debug mode when a redirect for a missing slash would drop a form body."""

    def __init__(self, request: Request) -> None:
        exc = request.routing_exception
        new_url = exc.new_url if isinstance(exc, RequestRedirect) else "?"
        super().__init__(
            f"The URL {request.url!r} was redirected to {new_url!r} because the rule ends in a"
            " slash. Browsers do not resend form data on this redirect. Send the request to"
            " the URL with the slash, or use a 307/308 redirect. (Only raised in debug mode.)"
        )


def attach_enctype_error_multidict(request: Request) -> None:
    """Make ``request.files[key]`` raise :class:`DebugFilesKeyError` instead of a bare 400."""
    files_class = request.files.__class__

    class _ExplainingFiles(files_class):  # type: ignore[valid-type,misc]
        def __getitem__(self, key: str) -> t.Any:
            try:
                return super().__getitem__(key)
            except KeyError as e:
                if key not in request.form:
                    raise
                raise DebugFilesKeyError(request, key).with_traceback(e.__traceback__) from None

    request.files.__class__ = _ExplainingFiles


__all__ = [
    "BadRequestKeyError",
    "DebugFilesKeyError",
    "FormDataRoutingRedirect",
    "UnexpectedUnicodeError",
    "attach_enctype_error_multidict",
]
