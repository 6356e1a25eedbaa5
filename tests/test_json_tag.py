"""The tagged JSON serializer, with Flask's serializer as the byte-for-byte oracle."""

from __future__ import annotations

import typing as t
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from uuid import UUID

import flask
import pytest
from flask.json import tag as flask_tag
from markupsafe import Markup
from werkzeug.wrappers import Response

from carboy.globals import _cv_app
from carboy.json.provider import DefaultJSONProvider
from carboy.json.tag import (
    JSONTag,
    PassDict,
    PassList,
    TagBytes,
    TagDateTime,
    TagDict,
    TaggedJSONSerializer,
    TagMarkup,
    TagTuple,
    TagUUID,
)


class FakeApp:
    response_class = Response
    debug = False

    def __init__(self) -> None:
        self.json = DefaultJSONProvider(self)  # type: ignore[arg-type]


VALUES: list[t.Any] = [
    None,
    True,
    0,
    -3.25,
    "",
    "text ünïcode ✓",
    [],
    {},
    [1, "a", None],
    {"b": 1, "a": 2, "c": {"z": 0, "y": [1, 2]}},
    (),
    (1, 2, 3),
    ((1, (2,)), [3, (4,)]),
    b"",
    b"\x00\xffbytes",
    Markup("<strong>safe</strong>"),
    UUID("c0ffee00-1234-5678-9abc-def012345678"),
    datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC),
    {" t": "looks like a tag"},
    {" di": "looks like the dict tag"},
    {" t": (1, 2)},
    {" di": {" t": [b"x"]}},
    {" unregistered": 1},
    {"_permanent": True, "user_id": 42, "cart": [(1, b"x")], "csrf": "abc"},
    [{" b": "nested"}, {"k": Markup("<i>")}],
    {"when": datetime(2001, 1, 1, tzinfo=UTC), "id": UUID(int=7)},
]


@pytest.fixture
def carboy_app_ctx() -> Iterator[FakeApp]:
    app = FakeApp()
    token = _cv_app.set(SimpleNamespace(app=app))  # type: ignore[arg-type]
    try:
        yield app
    finally:
        _cv_app.reset(token)


@pytest.mark.parametrize("value", VALUES)
def test_dumps_matches_flask_outside_context(value: t.Any) -> None:
    ours = TaggedJSONSerializer().dumps(value)
    theirs = flask_tag.TaggedJSONSerializer().dumps(value)
    assert ours == theirs


@pytest.mark.parametrize("value", VALUES)
def test_dumps_matches_flask_in_app_context(value: t.Any, carboy_app_ctx: FakeApp) -> None:
    ours = TaggedJSONSerializer().dumps(value)
    with flask.Flask(__name__).app_context():
        theirs = flask_tag.TaggedJSONSerializer().dumps(value)
    assert ours == theirs


@pytest.mark.parametrize("value", VALUES)
def test_round_trip_both_ways(value: t.Any) -> None:
    ours = TaggedJSONSerializer()
    theirs = flask_tag.TaggedJSONSerializer()
    assert ours.loads(ours.dumps(value)) == value
    assert ours.loads(theirs.dumps(value)) == value
    assert theirs.loads(ours.dumps(value)) == value


def test_loaded_types() -> None:
    s = TaggedJSONSerializer()
    loaded = s.loads(s.dumps({"t": (1, [2, (3,)]), "b": b"ab", "m": Markup("<x>")}))
    assert type(loaded["t"]) is tuple
    assert type(loaded["t"][1]) is list
    assert type(loaded["t"][1][1]) is tuple
    assert type(loaded["b"]) is bytes
    assert type(loaded["m"]) is Markup


def test_wire_format() -> None:
    s = TaggedJSONSerializer()
    assert s.dumps((1, b"x")) == '{" t":[1,{" b":"eA=="}]}'
    assert s.dumps({" t": 1}) == '{" di":{" t__":1}}'
    assert s.dumps(UUID(int=255)) == '{" u":"000000000000000000000000000000ff"}'
    assert s.dumps(datetime(2020, 1, 2, 3, 4, 5)) == '{" d":"Thu, 02 Jan 2020 03:04:05 GMT"}'


def test_datetime_becomes_aware_utc_seconds() -> None:
    s = TaggedJSONSerializer()
    naive = datetime(2020, 1, 2, 3, 4, 5, 999)
    assert s.loads(s.dumps(naive)) == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    offset = datetime(2020, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert s.loads(s.dumps(offset)) == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_html_object_loads_as_markup() -> None:
    class Widget:
        def __html__(self) -> str:
            return "<w>"

    s = TaggedJSONSerializer()
    assert s.dumps(Widget()) == '{" m":"<w>"}'
    assert s.loads(s.dumps(Widget())) == Markup("<w>")


def test_untag() -> None:
    s = TaggedJSONSerializer()
    plain = {"a": 1, "b": 2}
    assert s.untag(plain) is plain
    unknown = {" zz": 1}
    assert s.untag(unknown) is unknown
    assert s.untag({" t": [1, 2]}) == (1, 2)
    assert s.tag("x") == "x"
    assert s.tag(5) == 5


def test_unserializable_value() -> None:
    with pytest.raises(TypeError):
        TaggedJSONSerializer().dumps({"x": object()})


def test_invalid_json() -> None:
    with pytest.raises(ValueError):
        TaggedJSONSerializer().loads("{not json")


def test_default_tag_order() -> None:
    s = TaggedJSONSerializer()
    assert [type(tag) for tag in s.order] == [
        TagDict,
        PassDict,
        TagTuple,
        PassList,
        TagBytes,
        TagMarkup,
        TagUUID,
        TagDateTime,
    ]
    assert set(s.tags) == {" di", " t", " b", " m", " u", " d"}
    assert [tag.key for tag in s.order] == [
        tag.key for tag in flask_tag.TaggedJSONSerializer().order
    ]


def test_base_tag_not_implemented() -> None:
    tag = JSONTag(TaggedJSONSerializer())
    assert tag.key == ""
    for method in (tag.check, tag.to_json, tag.to_python):
        with pytest.raises(NotImplementedError):
            method(1)


def test_register_duplicate_key() -> None:
    s = TaggedJSONSerializer()
    with pytest.raises(KeyError, match="' t' is already registered"):
        s.register(TagTuple)

    class ListTuple(TagTuple):
        __slots__ = ()

        def to_python(self, value: t.Any) -> t.Any:
            return ("replaced", *value)

    s.register(ListTuple, force=True)
    assert isinstance(s.tags[" t"], ListTuple)
    assert s.loads('{" t":[1]}') == ("replaced", 1)


class TagOrderedDict(JSONTag):
    __slots__ = ()
    key = " od"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, OrderedDict)

    def to_json(self, value: t.Any) -> t.Any:
        return [[k, self.serializer.tag(v)] for k, v in value.items()]

    def to_python(self, value: t.Any) -> t.Any:
        return OrderedDict(value)


class FlaskTagOrderedDict(flask_tag.JSONTag):
    __slots__ = ()
    key = " od"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, OrderedDict)

    def to_json(self, value: t.Any) -> t.Any:
        return [[k, self.serializer.tag(v)] for k, v in value.items()]

    def to_python(self, value: t.Any) -> t.Any:
        return OrderedDict(value)


def test_register_custom_tag_with_index() -> None:
    value = OrderedDict([("b", (1,)), ("a", b"x")])
    s = TaggedJSONSerializer()
    # Appended, PassDict claims the OrderedDict first: it comes back as a plain dict.
    s.register(TagOrderedDict)
    assert type(s.loads(s.dumps(value))) is dict

    s = TaggedJSONSerializer()
    s.register(TagOrderedDict, index=0)
    assert s.order[0].key == " od"
    assert s.dumps(value) == '{" od":[["b",{" t":[1]}],["a",{" b":"eA=="}]]}'
    loaded = s.loads(s.dumps(value))
    assert type(loaded) is OrderedDict
    assert list(loaded.items()) == [("b", (1,)), ("a", b"x")]


def test_custom_tag_interoperates_with_flask() -> None:
    value = {"od": OrderedDict([("z", 1), ("y", (2,))]), "plain": [b"q"]}
    ours = TaggedJSONSerializer()
    ours.register(TagOrderedDict, index=0)
    theirs = flask_tag.TaggedJSONSerializer()
    theirs.register(FlaskTagOrderedDict, index=0)
    assert ours.dumps(value) == theirs.dumps(value)
    assert ours.loads(theirs.dumps(value)) == value
    assert theirs.loads(ours.dumps(value)) == value


def test_tag_without_key_only_transforms() -> None:
    class Stringify(JSONTag):
        __slots__ = ()

        def check(self, value: t.Any) -> bool:
            return isinstance(value, set)

        def to_json(self, value: t.Any) -> t.Any:
            return sorted(value)

        def tag(self, value: t.Any) -> t.Any:
            return self.to_json(value)

    s = TaggedJSONSerializer()
    s.register(Stringify)
    assert "" not in s.tags
    assert s.dumps({3, 1}) == "[1,3]"
    assert s.loads(s.dumps({3, 1})) == [1, 3]


def test_flask_tag_class_registers_on_carboy_serializer() -> None:
    value = OrderedDict([("k", "v")])
    s = TaggedJSONSerializer()
    s.register(FlaskTagOrderedDict, index=0)  # type: ignore[arg-type]
    assert type(s.loads(s.dumps(value))) is OrderedDict
