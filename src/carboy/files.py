"""Sending files as responses: thin, app-aware wrappers around Werkzeug's file sending.

Flask-compatible: the ``send_file``, ``send_from_directory`` and ``get_send_file_max_age``
helpers of ``flask.helpers`` / ``flask.Flask``. Werkzeug does the work (conditional requests,
ranges, ETags, ``X-Sendfile``); these functions add the request environ and the app's settings.
"""

from __future__ import annotations

import os
import typing as t
from datetime import datetime, timedelta

import werkzeug.utils

from .globals import current_app, request

if t.TYPE_CHECKING:
    from .app import Carboy
    from .wrappers import Response


def get_send_file_max_age(app: Carboy, filename: str | None) -> int | None:
    """The ``Cache-Control: max-age`` for a file sent by *app*, in seconds.

    Reads ``SEND_FILE_MAX_AGE_DEFAULT`` from ``app.config``: ``None`` (the default) means no
    max-age, so browsers revalidate with conditional requests; an int is a number of seconds;
    a :class:`datetime.timedelta` is converted to whole seconds.

    Flask-compatible: ``flask.Flask.get_send_file_max_age`` (this is the app-taking form the
    method delegates to).

    :param app: the application whose config is read.
    :param filename: the file being sent, or ``None``; unused by the default rule.
    :return: seconds, or ``None``.
    """
    value = app.config.get("SEND_FILE_MAX_AGE_DEFAULT")
    if value is None:
        return None
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    return int(value)


def _werkzeug_kwargs(max_age: t.Any) -> dict[str, t.Any]:
    """The keyword arguments every Werkzeug call gets from the current app and request."""
    app = current_app
    if max_age is None:
        max_age = app.get_send_file_max_age
    return {
        "environ": request.environ,
        "use_x_sendfile": app.config["USE_X_SENDFILE"],
        "response_class": app.response_class,
        "_root_path": app.root_path,
        "max_age": max_age,
    }


def send_file(
    path_or_file: os.PathLike[str] | str | t.IO[bytes],
    mimetype: str | None = None,
    as_attachment: bool = False,
    download_name: str | None = None,
    conditional: bool = True,
    etag: bool | str = True,
    last_modified: datetime | int | float | None = None,
    max_age: int | t.Callable[[str | None], int | None] | None = None,
) -> Response:
    """Send a file's contents as the response.

    Relative paths are taken from the app's ``root_path``. Conditional requests
    (``If-None-Match``, ``If-Modified-Since``) get ``304 Not Modified`` and ``Range`` requests
    get ``206 Partial Content`` (``416`` for an unsatisfiable range) when *conditional* is
    true. Never pass a path built from user input; use :func:`send_from_directory` for that.

    Flask-compatible: ``flask.send_file``.

    :param path_or_file: a path (``str`` or path-like, relative to ``app.root_path``) or a
        binary file object opened for reading.
    :param mimetype: the ``Content-Type``; guessed from the name when ``None``.
    :param as_attachment: send ``Content-Disposition: attachment`` so browsers download it.
    :param download_name: the file name browsers see; defaults to the path's name.
    :param conditional: answer conditional and range requests.
    :param etag: compute an ETag (``True``), use the given string, or send none (``False``).
    :param last_modified: the ``Last-Modified`` time (datetime or POSIX seconds); taken from
        the file for paths.
    :param max_age: ``Cache-Control`` max-age in seconds, or a callable taking the path and
        returning it; ``None`` uses ``current_app.get_send_file_max_age``.
    :return: an instance of ``current_app.response_class``.
    :raises FileNotFoundError: when the path does not exist.
    :raises TypeError: when no MIME type is given for a file object without a name.
    :raises RuntimeError: outside a request context.
    """
    response = werkzeug.utils.send_file(
        path_or_file,
        mimetype=mimetype,
        as_attachment=as_attachment,
        download_name=download_name,
        conditional=conditional,
        etag=etag,
        last_modified=last_modified,
        **_werkzeug_kwargs(max_age),
    )
    return t.cast("Response", response)


def send_from_directory(
    directory: os.PathLike[str] | str,
    path: os.PathLike[str] | str,
    **kwargs: t.Any,
) -> Response:
    """Send the file *path* from inside *directory*; safe for paths taken from the URL.

    The path is joined with :func:`werkzeug.security.safe_join`, so ``..`` segments, absolute
    paths and other escapes from *directory* (whether typed plainly or percent-encoded in the
    URL) are refused with 404, as are missing files and directories.

    Flask-compatible: ``flask.send_from_directory``.

    :param directory: the folder files may come from, relative to ``app.root_path`` or
        absolute.
    :param path: the file's path inside *directory*, e.g. the ``<path:filename>`` URL part.
    :param kwargs: the other arguments of :func:`send_file`.
    :return: an instance of ``current_app.response_class``.
    :raises werkzeug.exceptions.NotFound: when the path leaves *directory* or is not a file.
    :raises RuntimeError: outside a request context.
    """
    max_age = kwargs.pop("max_age", None)
    response = werkzeug.utils.send_from_directory(
        directory, path, **kwargs, **_werkzeug_kwargs(max_age)
    )
    return t.cast("Response", response)


__all__ = ["get_send_file_max_age", "send_file", "send_from_directory"]
