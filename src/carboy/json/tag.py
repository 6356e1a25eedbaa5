"""A compact JSON encoding that keeps non-JSON types, used for the session cookie.

Flask-compatible: ``flask.json.tag``. A value of a tagged type is written as a one-key object
``{" <key>": <json form>}`` and turned back into the Python type when loading. The output is
byte-for-byte the same as Flask's serializer, so session cookies interoperate.

Supported out of the box: ``dict`` (including a dict whose only key looks like a tag), ``tuple``,
``bytes``, objects with ``__html__`` (loaded as :class:`markupsafe.Markup`), :class:`uuid.UUID`
and :class:`datetime.datetime` (second precision, as an HTTP date).

Extra types are supported by subclassing :class:`JSONTag` and registering it::

    class TagFrozenSet(JSONTag):
        key = " fs"

        def check(self, value):
            return isinstance(value, frozenset)

        def to_json(self, value):
            return [self.serializer.tag(item) for item in value]

        def to_python(self, value):
            return frozenset(value)

    app.session_interface.serializer.register(TagFrozenSet, index=0)
"""

from __future__ import annotations

import typing as t
from base64 import b64decode, b64encode
from datetime import datetime
from uuid import UUID

from markupsafe import Markup
from werkzeug.http import http_date, parse_date

from . import dumps as _dumps
from . import loads as _loads

__all__ = [
    "JSONTag",
    "PassDict",
    "PassList",
    "TagBytes",
    "TagDateTime",
    "TagDict",
    "TagMarkup",
    "TagTuple",
    "TagUUID",
    "TaggedJSONSerializer",
]


class JSONTag:
    """Base class of a tag: recognizes one Python type and converts it to and from JSON.

    Flask-compatible: ``flask.json.tag.JSONTag``.

    :param serializer: the :class:`TaggedJSONSerializer` the tag belongs to; use it to tag
        nested values.
    """

    __slots__ = ("serializer",)

    #: The key marking a tagged value. An empty key means the tag only transforms values
    #: while dumping and is never looked up while loading.
    key: str = ""

    def __init__(self, serializer: TaggedJSONSerializer) -> None:
        self.serializer = serializer

    def check(self, value: t.Any) -> bool:
        """Return whether this tag handles *value*.

        :raises NotImplementedError: in the base class.
        """
        raise NotImplementedError

    def to_json(self, value: t.Any) -> t.Any:
        """Convert *value* to something JSON can hold; nested values should be tagged too.

        :raises NotImplementedError: in the base class.
        """
        raise NotImplementedError

    def to_python(self, value: t.Any) -> t.Any:
        """Convert the JSON form produced by :meth:`to_json` back to the Python value.

        :raises NotImplementedError: in the base class.
        """
        raise NotImplementedError

    def tag(self, value: t.Any) -> t.Any:
        """Return *value* converted and wrapped as ``{key: to_json(value)}``."""
        return {self.key: self.to_json(value)}


class TagDict(JSONTag):
    """Protect a one-key dict whose key is a registered tag key from being read as a tag.

    Flask-compatible: ``flask.json.tag.TagDict``. The key gets a ``"__"`` suffix inside a
    ``" di"`` wrapper, which is removed again when loading.
    """

    __slots__ = ()
    key = " di"

    def check(self, value: t.Any) -> bool:
        if not isinstance(value, dict) or len(value) != 1:
            return False
        (only_key,) = value
        return only_key in self.serializer.tags

    def to_json(self, value: t.Any) -> t.Any:
        ((inner_key, inner_value),) = value.items()
        return {f"{inner_key}__": self.serializer.tag(inner_value)}

    def to_python(self, value: t.Any) -> t.Any:
        # The first key, as Flask reads it: a payload with more keys under the tag (only a
        # hand-made one has them) loads as Flask loads it rather than failing.
        inner_key = next(iter(value))
        return {inner_key[:-2]: value[inner_key]}


class PassDict(JSONTag):
    """Tag the values of any other dict, leaving the dict itself unwrapped.

    Flask-compatible: ``flask.json.tag.PassDict``.
    """

    __slots__ = ()

    def check(self, value: t.Any) -> bool:
        return isinstance(value, dict)

    def to_json(self, value: t.Any) -> t.Any:
        # JSON object keys are always strings, so only the values need tagging.
        return {k: self.serializer.tag(v) for k, v in value.items()}

    def tag(self, value: t.Any) -> t.Any:
        return self.to_json(value)


class TagTuple(JSONTag):
    """Keep tuples as tuples (``" t"``). Flask-compatible: ``flask.json.tag.TagTuple``."""

    __slots__ = ()
    key = " t"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, tuple)

    def to_json(self, value: t.Any) -> t.Any:
        return [self.serializer.tag(item) for item in value]

    def to_python(self, value: t.Any) -> t.Any:
        return tuple(value)


class PassList(JSONTag):
    """Tag the items of lists, leaving the list unwrapped.

    Flask-compatible: ``flask.json.tag.PassList``.
    """

    __slots__ = ()

    def check(self, value: t.Any) -> bool:
        return isinstance(value, list)

    def to_json(self, value: t.Any) -> t.Any:
        return [self.serializer.tag(item) for item in value]

    def tag(self, value: t.Any) -> t.Any:
        return self.to_json(value)


class TagBytes(JSONTag):
    """Store ``bytes`` as standard base64 (``" b"``). Flask-compatible:
    ``flask.json.tag.TagBytes``.
    """

    __slots__ = ()
    key = " b"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, bytes)

    def to_json(self, value: t.Any) -> t.Any:
        return b64encode(value).decode("ascii")

    def to_python(self, value: t.Any) -> t.Any:
        return b64decode(value)


class TagMarkup(JSONTag):
    """Store objects with ``__html__`` as their HTML string and load them as
    :class:`~markupsafe.Markup` (``" m"``). Flask-compatible: ``flask.json.tag.TagMarkup``.
    """

    __slots__ = ()
    key = " m"

    def check(self, value: t.Any) -> bool:
        return callable(getattr(value, "__html__", None))

    def to_json(self, value: t.Any) -> t.Any:
        return str(value.__html__())

    def to_python(self, value: t.Any) -> t.Any:
        return Markup(value)


class TagUUID(JSONTag):
    """Store :class:`uuid.UUID` as its 32-digit hex form (``" u"``). Flask-compatible:
    ``flask.json.tag.TagUUID``.
    """

    __slots__ = ()
    key = " u"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, UUID)

    def to_json(self, value: t.Any) -> t.Any:
        return value.hex

    def to_python(self, value: t.Any) -> t.Any:
        return UUID(value)


class TagDateTime(JSONTag):
    """Store :class:`~datetime.datetime` as an HTTP date, to the second (``" d"``).

    Flask-compatible: ``flask.json.tag.TagDateTime``. Naive values are taken as UTC; loaded
    values are timezone-aware UTC datetimes.
    """

    __slots__ = ()
    key = " d"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, datetime)

    def to_json(self, value: t.Any) -> t.Any:
        return http_date(value)

    def to_python(self, value: t.Any) -> t.Any:
        return parse_date(value)


class TaggedJSONSerializer:
    """Serialize values with tags so that non-JSON types survive a round trip.

    Flask-compatible: ``flask.json.tag.TaggedJSONSerializer``. Tags are tried in
    :attr:`order`; the first whose ``check`` accepts a value tags it.
    """

    __slots__ = ("order", "tags")

    #: Tag classes registered by every new serializer, in this order.
    default_tags: t.ClassVar[list[type[JSONTag]]] = [
        TagDict,
        PassDict,
        TagTuple,
        PassList,
        TagBytes,
        TagMarkup,
        TagUUID,
        TagDateTime,
    ]

    def __init__(self) -> None:
        #: Tags by key, for loading.
        self.tags: dict[str, JSONTag] = {}
        #: Tags in the order they are tried when dumping.
        self.order: list[JSONTag] = []
        for tag_class in self.default_tags:
            self.register(tag_class)

    def register(
        self,
        tag_class: type[JSONTag],
        force: bool = False,
        index: int | None = None,
    ) -> None:
        """Add a tag, instantiated with this serializer.

        :param tag_class: the :class:`JSONTag` subclass to add.
        :param force: replace a tag already registered under the same key.
        :param index: position in :attr:`order` to insert at; ``None`` appends (tried last).
        :raises KeyError: the key is already registered and *force* is false.
        """
        new_tag = tag_class(self)
        if new_tag.key:
            if new_tag.key in self.tags and not force:
                raise KeyError(f"Tag '{new_tag.key}' is already registered.")
            self.tags[new_tag.key] = new_tag
        if index is None:
            self.order.append(new_tag)
        else:
            self.order.insert(index, new_tag)

    def tag(self, value: t.Any) -> t.Any:
        """Return *value* in tagged JSON-ready form; untagged types are returned unchanged."""
        for candidate in self.order:
            if candidate.check(value):
                return candidate.tag(value)
        return value

    def untag(self, value: dict[str, t.Any]) -> t.Any:
        """Convert a one-key dict whose key is a registered tag back to its Python value.

        Any other dict is returned unchanged.
        """
        if len(value) != 1:
            return value
        (key,) = value
        found = self.tags.get(key)
        if found is None:
            return value
        return found.to_python(value[key])

    def _untag_scan(self, value: t.Any) -> t.Any:
        # Depth first, so a tag's to_python always receives already-untagged children.
        if isinstance(value, dict):
            return self.untag({k: self._untag_scan(v) for k, v in value.items()})
        if isinstance(value, list):
            return [self._untag_scan(item) for item in value]
        return value

    def dumps(self, value: t.Any) -> str:
        """Tag *value* and serialize it as compact JSON.

        Inside an app context the app's JSON provider does the serializing (so keys are
        sorted with the default provider), as in Flask.

        :raises TypeError: *value* contains a type no tag or the JSON provider handles.
        """
        return _dumps(self.tag(value), separators=(",", ":"))

    def loads(self, value: str | bytes) -> t.Any:
        """Deserialize JSON produced by :meth:`dumps` and untag every value.

        :raises ValueError: *value* is not valid JSON.
        """
        return self._untag_scan(_loads(value))
