"""JSON providers: the object behind ``app.json`` that serializes and builds JSON responses.

Flask-compatible: ``flask.json.provider``. Subclass :class:`JSONProvider` (or
:class:`DefaultJSONProvider`) and set ``app.json_provider_class`` / ``app.json`` to swap the JSON
library an application uses.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import typing as t
import uuid
import weakref
from datetime import date

from werkzeug.http import http_date

if t.TYPE_CHECKING:
    from werkzeug.sansio.response import Response

    from ..app import Carboy

__all__ = ["DefaultJSONProvider", "JSONProvider"]


def _jsonify_arguments(args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> t.Any:
    """Pick the value a ``jsonify``-style call serializes.

    No arguments give ``None``; one positional argument is used as is; several give a list;
    keyword arguments give a dict.

    :raises TypeError: both positional and keyword arguments were passed.
    """
    if args and kwargs:
        raise TypeError("app.json.response() takes either args or kwargs, not both")
    if kwargs:
        return kwargs
    if not args:
        return None
    if len(args) == 1:
        return args[0]
    return list(args)


class JSONProvider:
    """Base class for the app's JSON handling; subclasses implement :meth:`dumps`/:meth:`loads`.

    Flask-compatible: ``flask.json.provider.JSONProvider``. The provider keeps only a weak
    reference to its app, so it does not keep the app alive.

    :param app: the application this provider serves.
    """

    def __init__(self, app: Carboy) -> None:
        self._app: Carboy = t.cast("Carboy", weakref.proxy(app))

    def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
        """Serialize *obj* to a JSON ``str``.

        :raises NotImplementedError: always, in the base class.
        """
        raise NotImplementedError

    def dump(self, obj: t.Any, fp: t.IO[str], **kwargs: t.Any) -> None:
        """Serialize *obj* with :meth:`dumps` and write it to the text file *fp*."""
        fp.write(self.dumps(obj, **kwargs))

    def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
        """Deserialize a JSON document given as ``str`` or UTF-8/16/32 ``bytes``.

        :raises NotImplementedError: always, in the base class.
        """
        raise NotImplementedError

    def load(self, fp: t.IO[t.AnyStr], **kwargs: t.Any) -> t.Any:
        """Read the whole of *fp* and deserialize it with :meth:`loads`."""
        return self.loads(fp.read(), **kwargs)

    def _prepare_response_obj(self, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> t.Any:
        return _jsonify_arguments(args, kwargs)

    def response(self, *args: t.Any, **kwargs: t.Any) -> Response:
        """Build an ``application/json`` response of ``app.response_class``.

        No arguments serialize ``null``; one positional argument is serialized as is; several
        positional arguments become a list; keyword arguments become an object.

        :raises TypeError: both positional and keyword arguments were passed.
        """
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self.dumps(obj), mimetype="application/json")


def _default(o: t.Any) -> t.Any:
    """Convert the extra types the default provider supports into JSON-ready values.

    :raises TypeError: *o* is of an unsupported type.
    """
    if isinstance(o, date):
        return http_date(o)
    if isinstance(o, decimal.Decimal | uuid.UUID):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    html = getattr(o, "__html__", None)
    if html is not None:
        return str(html())
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


class DefaultJSONProvider(JSONProvider):
    """The provider every app uses unless configured otherwise, built on :mod:`json`.

    Flask-compatible: ``flask.json.provider.DefaultJSONProvider``. Beyond the standard JSON
    types it serializes :class:`datetime.date`/:class:`~datetime.datetime` as an HTTP date
    (RFC 822), :class:`decimal.Decimal` and :class:`uuid.UUID` as strings, dataclass instances
    via :func:`dataclasses.asdict`, and objects with ``__html__`` (such as
    :class:`markupsafe.Markup`) as the string it returns.
    """

    #: Hook called for objects :mod:`json` cannot serialize; must return a serializable value
    #: or raise :class:`TypeError`.
    default: t.Callable[[t.Any], t.Any] = staticmethod(_default)
    #: Escape non-ASCII characters as ``\\uXXXX``.
    ensure_ascii = True
    #: Sort object keys; keeps output stable, which helps caching.
    sort_keys = True
    #: Response formatting: ``True`` compact, ``False`` indented, ``None`` indented only in
    #: debug mode.
    compact: bool | None = None
    #: Mimetype of :meth:`response`.
    mimetype = "application/json"

    def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
        """Serialize *obj* with :func:`json.dumps`, applying this provider's settings.

        Keyword arguments are passed to :func:`json.dumps` and override ``default``,
        ``ensure_ascii`` and ``sort_keys``.

        :raises TypeError: *obj* contains a value that cannot be serialized.
        """
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return json.dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
        """Deserialize with :func:`json.loads`, passing keyword arguments through.

        :raises json.JSONDecodeError: (a :class:`ValueError`) *s* is not valid JSON.
        """
        return json.loads(s, **kwargs)

    def response(self, *args: t.Any, **kwargs: t.Any) -> Response:
        """Build a JSON response of ``app.response_class`` with :attr:`mimetype`.

        The body ends with a newline. It is indented by two spaces when :attr:`compact` is
        ``False``, or ``None`` while ``app.debug`` is on; otherwise it has no whitespace.

        :raises TypeError: both positional and keyword arguments were passed.
        """
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self._response_text(obj), mimetype=self.mimetype)

    def _response_text(self, obj: t.Any) -> str:
        """Return the body :meth:`response` sends for *obj* (used by the app's fast path).

        :raises TypeError: *obj* contains a value that cannot be serialized.
        """
        indent = self.compact is False or (self.compact is None and self._app.debug)
        layout: dict[str, t.Any] = {"indent": 2} if indent else {"separators": (",", ":")}
        if type(self).dumps is not DefaultJSONProvider.dumps:
            return self.dumps(obj, **layout) + "\n"
        # PERF: reuse one encoder per combination of settings instead of building a
        # JSONEncoder per response, as json.dumps does with arguments (~1 µs per response).
        # The key holds the current settings, so changing them on the provider still applies.
        key = (self.default, self.ensure_ascii, self.sort_keys, indent)
        encoders: dict[t.Any, json.JSONEncoder] = self.__dict__.setdefault("_encoders", {})
        encoder = encoders.get(key)
        if encoder is None:
            encoder = encoders[key] = json.JSONEncoder(
                default=self.default,
                ensure_ascii=self.ensure_ascii,
                sort_keys=self.sort_keys,
                **layout,
            )
        return encoder.encode(obj) + "\n"
