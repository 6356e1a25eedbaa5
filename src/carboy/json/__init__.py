"""JSON helpers that follow the active application's provider.

Flask-compatible: ``flask.json``. Inside an app context each function delegates to
``current_app.json`` (a :class:`~carboy.json.provider.JSONProvider`). Outside one, they use the
standard :mod:`json` module, with the default provider's hook for dates, decimals, UUIDs,
dataclasses and ``__html__`` objects; key sorting and ASCII escaping then follow :mod:`json`'s own
defaults, as in Flask.
"""

from __future__ import annotations

import json as _json
import typing as t

from ..globals import _cv_app_get, current_app
from .provider import _default

if t.TYPE_CHECKING:
    from werkzeug.sansio.response import Response

__all__ = ["dump", "dumps", "jsonify", "load", "loads"]


def dumps(obj: t.Any, **kwargs: t.Any) -> str:
    """Serialize *obj* to a JSON ``str``.

    Flask-compatible: ``flask.json.dumps``.

    :param obj: the value to serialize.
    :param kwargs: passed to the provider's ``dumps`` or to :func:`json.dumps`.
    :raises TypeError: *obj* contains a value that cannot be serialized.
    """
    ctx = _cv_app_get(None)
    if ctx is not None:
        return ctx.app.json.dumps(obj, **kwargs)
    kwargs.setdefault("default", _default)
    return _json.dumps(obj, **kwargs)


def dump(obj: t.Any, fp: t.IO[str], **kwargs: t.Any) -> None:
    """Serialize *obj* and write it to the text file *fp*.

    Flask-compatible: ``flask.json.dump``.

    :raises TypeError: *obj* contains a value that cannot be serialized.
    """
    ctx = _cv_app_get(None)
    if ctx is not None:
        ctx.app.json.dump(obj, fp, **kwargs)
        return
    kwargs.setdefault("default", _default)
    _json.dump(obj, fp, **kwargs)


def loads(s: str | bytes, **kwargs: t.Any) -> t.Any:
    """Deserialize a JSON document from ``str`` or ``bytes``.

    Flask-compatible: ``flask.json.loads``.

    :raises ValueError: *s* is not valid JSON (:class:`json.JSONDecodeError` by default).
    """
    ctx = _cv_app_get(None)
    if ctx is not None:
        return ctx.app.json.loads(s, **kwargs)
    return _json.loads(s, **kwargs)


def load(fp: t.IO[t.AnyStr], **kwargs: t.Any) -> t.Any:
    """Read and deserialize the JSON document in file *fp*.

    Flask-compatible: ``flask.json.load``.

    :raises ValueError: the content is not valid JSON.
    """
    ctx = _cv_app_get(None)
    if ctx is not None:
        return ctx.app.json.load(fp, **kwargs)
    return _json.load(fp, **kwargs)


def jsonify(*args: t.Any, **kwargs: t.Any) -> Response:
    """Build a JSON response from the arguments with ``current_app.json.response``.

    Flask-compatible: ``flask.json.jsonify``. No arguments serialize ``null``; one positional
    argument is used as is; several become a list; keyword arguments become an object.

    :raises TypeError: both positional and keyword arguments were passed.
    :raises RuntimeError: no application context is active.
    """
    return current_app.json.response(*args, **kwargs)
