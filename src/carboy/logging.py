"""The application logger and its default handler.

Flask-compatible: ``flask.logging``. ``app.logger`` is the standard :mod:`logging` logger named
after the app. Unless logging is already configured to handle its level, records go to the WSGI
server's error stream during a request, and to :data:`sys.stderr` otherwise.
"""

from __future__ import annotations

import logging
import sys
import typing as t

from werkzeug.local import LocalProxy

from .globals import _cv_request_get

if t.TYPE_CHECKING:
    from .app import Carboy

__all__ = [
    "create_logger",
    "default_handler",
    "has_level_handler",
    "loggable",
    "wsgi_errors_stream",
]


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def loggable(text: str) -> str:
    """*text* (request data, such as a path) made safe to write into a log line: each
    character that is not printable (control characters such as ``ESC``, ``CR``, ``LF`` and
    ``NUL``, line separators, bidirectional overrides) is written as a ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN`` escape, and a backslash as two, so that no request can
    add a forged line to the log or send escape sequences to a terminal.

    :param text: the text to write.
    :returns: *text* itself when it needs no escape.

    .. versionadded:: 0.1
    """
    # PERF: one C check for the usual text; the join runs only for text that needs it.
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else _escape(c) for c in text)


def _current_errors_stream() -> t.TextIO:
    ctx = _cv_request_get(None)
    if ctx is None:
        return sys.stderr
    return t.cast(t.TextIO, ctx.environ["wsgi.errors"])


#: A proxy to the current request's ``environ["wsgi.errors"]`` stream, or to
#: :data:`sys.stderr` outside a request. Flask-compatible: ``flask.logging.wsgi_errors_stream``.
wsgi_errors_stream: t.TextIO = LocalProxy(_current_errors_stream)  # type: ignore[assignment]


def has_level_handler(logger: logging.Logger) -> bool:
    """Return whether some handler on *logger* or its ancestors emits its effective level.

    Flask-compatible: ``flask.logging.has_level_handler``. Walks up the logger hierarchy
    while records propagate, as :mod:`logging` does when dispatching.

    :param logger: the logger to inspect.
    """
    level = logger.getEffectiveLevel()
    node: logging.Logger | None = logger
    while node is not None:
        if any(handler.level <= level for handler in node.handlers):
            return True
        if not node.propagate:
            return False
        node = node.parent
    return False


#: The handler :func:`create_logger` adds when nothing else would show the app's records. It
#: writes to :data:`wsgi_errors_stream`. Remove it with
#: ``app.logger.removeHandler(default_handler)`` to configure logging yourself.
#: Flask-compatible: ``flask.logging.default_handler``.
default_handler: logging.StreamHandler[t.TextIO] = logging.StreamHandler(wsgi_errors_stream)
default_handler.setFormatter(
    logging.Formatter("[%(asctime)s] %(levelname)s in %(module)s: %(message)s")
)


def create_logger(app: Carboy) -> logging.Logger:
    """Return the logger named ``app.name``, set up the way Flask sets up ``app.logger``.

    Flask-compatible: ``flask.logging.create_logger``. When ``app.debug`` is on and the logger
    has no level of its own, its level becomes :data:`logging.DEBUG`. When no handler would
    emit the logger's effective level, :data:`default_handler` is added.

    :param app: the application; ``name`` and ``debug`` are read.
    """
    logger = logging.getLogger(app.name)
    if app.debug and logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG)
    if not has_level_handler(logger):
        logger.addHandler(default_handler)
    return logger
