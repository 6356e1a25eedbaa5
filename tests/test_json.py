"""JSON providers and the ``carboy.json`` helpers, checked byte for byte against Flask."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import gc
import io
import typing as t
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import flask
import flask.json
import pytest
from markupsafe import Markup
from werkzeug.wrappers import Response

import carboy.json as cjson
from carboy.globals import _cv_app
from carboy.json.provider import DefaultJSONProvider, JSONProvider


class FakeApp:
    """The attributes a JSON provider reads from its app."""

    response_class = Response
    json_provider_class: type[JSONProvider] = DefaultJSONProvider

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self.json = self.json_provider_class(self)  # type: ignore[arg-type]


@pytest.fixture
def app() -> FakeApp:
    return FakeApp()


@pytest.fixture
def app_ctx(app: FakeApp) -> Iterator[FakeApp]:
    """Make *app* the current app, the way an app context does."""
    token = _cv_app.set(SimpleNamespace(app=app))  # type: ignore[arg-type]
    try:
        yield app
    finally:
        _cv_app.reset(token)


@dataclasses.dataclass
class Point:
    x: int
    y: list[int]


class HTMLish:
    def __html__(self) -> str:
        return "<em>hi</em>"


SAMPLES: list[t.Any] = [
    None,
    True,
    1,
    1.5,
    "plain",
    "ünïcødé ✓",
    [1, "two", None],
    {"b": 1, "a": {"d": 2, "c": [3]}},
    datetime.date(2021, 3, 4),
    datetime.datetime(2021, 3, 4, 5, 6, 7),
    datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    decimal.Decimal("10.25"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Point(1, [2, 3]),
    Markup("<b>bold</b>"),
    HTMLish(),
    {"when": datetime.date(2000, 1, 1), "items": (1, 2)},
]


@pytest.mark.parametrize("value", SAMPLES)
def test_provider_dumps_matches_flask(app: FakeApp, value: t.Any) -> None:
    reference = flask.Flask(__name__)
    assert app.json.dumps(value) == reference.json.dumps(value)


@pytest.mark.parametrize("value", SAMPLES)
def test_module_dumps_outside_context_matches_flask(value: t.Any) -> None:
    assert cjson.dumps(value) == flask.json.dumps(value)


def test_provider_defaults(app: FakeApp) -> None:
    assert app.json.dumps({"b": 1, "a": "é"}) == '{"a": "\\u00e9", "b": 1}'
    provider = t.cast(DefaultJSONProvider, app.json)
    provider.ensure_ascii = False
    provider.sort_keys = False
    assert app.json.dumps({"b": 1, "a": "é"}) == '{"b": 1, "a": "é"}'
    assert app.json.dumps({"b": 1, "a": 2}, sort_keys=True) == '{"a": 2, "b": 1}'


def test_provider_date_and_types(app: FakeApp) -> None:
    assert app.json.dumps(datetime.date(2020, 1, 2)) == '"Thu, 02 Jan 2020 00:00:00 GMT"'
    assert app.json.dumps(decimal.Decimal("1.50")) == '"1.50"'
    assert app.json.dumps(Point(1, [2])) == '{"x": 1, "y": [2]}'
    assert app.json.dumps(Markup("<p>")) == '"<p>"'


def test_provider_unknown_type(app: FakeApp) -> None:
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        app.json.dumps(object())
    with pytest.raises(TypeError):
        app.json.dumps(Point)  # a dataclass type, not an instance


def test_provider_custom_default(app: FakeApp) -> None:
    class SetProvider(DefaultJSONProvider):
        @staticmethod
        def default(o: t.Any) -> t.Any:
            if isinstance(o, set):
                return sorted(o)
            raise TypeError("nope")

    provider = SetProvider(app)  # type: ignore[arg-type]
    assert provider.dumps({3, 1, 2}) == "[1, 2, 3]"
    with pytest.raises(TypeError, match="nope"):
        provider.dumps(datetime.date(2020, 1, 1))


def test_provider_loads_and_load(app: FakeApp) -> None:
    assert app.json.loads('{"a": [1, 2]}') == {"a": [1, 2]}
    assert app.json.loads(b'{"a": "\\u00e9"}') == {"a": "é"}
    assert app.json.load(io.StringIO("[1]")) == [1]
    assert app.json.load(io.BytesIO(b"true")) is True
    with pytest.raises(ValueError):
        app.json.loads("{bad")


def test_provider_dump(app: FakeApp) -> None:
    out = io.StringIO()
    app.json.dump({"b": 1, "a": 2}, out)
    assert out.getvalue() == '{"a": 2, "b": 1}'


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1,), {}),
        (({"b": 2, "a": [1, "é"]},), {}),
        ((1, 2, "three"), {}),
        ((), {"b": 1, "a": datetime.date(2020, 5, 6)}),
        (([1, 2],), {}),
    ],
)
@pytest.mark.parametrize("debug", [False, True])
def test_response_matches_flask(
    args: tuple[t.Any, ...], kwargs: dict[str, t.Any], debug: bool
) -> None:
    app = FakeApp(debug=debug)
    reference = flask.Flask(__name__)
    reference.debug = debug
    ours = app.json.response(*args, **kwargs)
    theirs = reference.json.response(*args, **kwargs)
    assert isinstance(ours, Response)
    assert ours.get_data() == theirs.get_data()
    assert ours.mimetype == theirs.mimetype == "application/json"
    assert ours.status_code == 200


def test_response_shapes(app: FakeApp) -> None:
    assert app.json.response().get_data() == b"null\n"
    assert app.json.response(1, 2).get_data() == b"[1,2]\n"
    assert app.json.response(a=1).get_data() == b'{"a":1}\n'
    assert app.json.response([1]).get_data() == b"[1]\n"


def test_response_indent_in_debug() -> None:
    app = FakeApp(debug=True)
    assert app.json.response(a=1).get_data() == b'{\n  "a": 1\n}\n'


def test_response_compact_overrides_debug() -> None:
    app = FakeApp(debug=True)
    provider = t.cast(DefaultJSONProvider, app.json)
    provider.compact = True
    assert app.json.response(a=1).get_data() == b'{"a":1}\n'
    app.debug = False
    provider.compact = False
    assert app.json.response(a=1).get_data() == b'{\n  "a": 1\n}\n'


def test_response_args_and_kwargs(app: FakeApp) -> None:
    with pytest.raises(TypeError, match="either args or kwargs, not both"):
        app.json.response(1, a=2)


def test_response_custom_mimetype_and_class() -> None:
    class MyResponse(Response):
        pass

    class LDProvider(DefaultJSONProvider):
        mimetype = "application/ld+json"

    class App(FakeApp):
        response_class = MyResponse
        json_provider_class = LDProvider

    app = App()
    response = app.json.response({"a": 1})
    assert isinstance(response, MyResponse)
    assert response.mimetype == "application/ld+json"


def test_base_provider() -> None:
    app = FakeApp()
    base = JSONProvider(app)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        base.dumps(1)
    with pytest.raises(NotImplementedError):
        base.loads("1")

    class Upper(JSONProvider):
        def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
            return repr(obj).upper()

        def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
            return f"loaded:{s!r}"

    provider = Upper(app)  # type: ignore[arg-type]
    out = io.StringIO()
    provider.dump("ab", out)
    assert out.getvalue() == "'AB'"
    assert provider.load(io.StringIO("x")) == "loaded:'x'"
    response = provider.response("ab")
    assert response.get_data() == b"'AB'"
    assert response.mimetype == "application/json"
    with pytest.raises(TypeError):
        provider.response(1, a=1)


def test_provider_holds_weak_reference() -> None:
    app = FakeApp()
    provider = app.json
    del app
    gc.collect()
    with pytest.raises(ReferenceError):
        provider.response(1)


def test_module_helpers_outside_context() -> None:
    assert _cv_app.get(None) is None
    assert cjson.dumps({"b": 1, "a": "é"}) == '{"b": 1, "a": "\\u00e9"}'
    assert cjson.dumps(datetime.date(2020, 1, 2)) == '"Thu, 02 Jan 2020 00:00:00 GMT"'
    assert cjson.dumps({"b": 1, "a": 2}, sort_keys=True) == '{"a": 2, "b": 1}'
    out = io.StringIO()
    cjson.dump({"u": uuid.UUID(int=1)}, out)
    assert out.getvalue() == '{"u": "00000000-0000-0000-0000-000000000001"}'
    assert cjson.loads('{"a": 1}') == {"a": 1}
    assert cjson.loads(b"[1]") == [1]
    assert cjson.load(io.StringIO("null")) is None
    with pytest.raises(TypeError):
        cjson.dumps(object())
    with pytest.raises(ValueError):
        cjson.loads("nope")


def test_module_helpers_use_current_app(app_ctx: FakeApp) -> None:
    # Inside a context the app's provider applies: keys sorted, Decimal handled.
    assert cjson.dumps({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'

    class Recording(DefaultJSONProvider):
        calls: list[str] = []

        def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
            self.calls.append("dumps")
            return super().dumps(obj, **kwargs)

        def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
            self.calls.append("loads")
            return super().loads(s, **kwargs)

    app_ctx.json = Recording(app_ctx)  # type: ignore[arg-type]
    out = io.StringIO()
    cjson.dump([1], out)
    assert out.getvalue() == "[1]"
    assert cjson.dumps(1) == "1"
    assert cjson.loads("2") == 2
    assert cjson.load(io.StringIO("3")) == 3
    assert Recording.calls == ["dumps", "dumps", "loads", "loads"]


def test_jsonify_needs_app_context() -> None:
    with pytest.raises(RuntimeError, match="Working outside of application context"):
        cjson.jsonify(1)


def test_jsonify_in_context(app_ctx: FakeApp) -> None:
    response = cjson.jsonify({"b": 1, "a": [1, 2]})
    assert response.get_data() == b'{"a":[1,2],"b":1}\n'
    assert response.mimetype == "application/json"
    assert cjson.jsonify().get_data() == b"null\n"
    assert cjson.jsonify(1, 2).get_data() == b"[1,2]\n"
    assert cjson.jsonify(x="y").get_data() == b'{"x":"y"}\n'
    with pytest.raises(TypeError):
        cjson.jsonify(1, x=2)


def test_jsonify_matches_flask(app_ctx: FakeApp) -> None:
    reference = flask.Flask(__name__)
    value = {"z": datetime.datetime(2020, 1, 1, 12), "a": decimal.Decimal("2"), "m": "é"}
    ours = cjson.jsonify(value).get_data()
    with reference.app_context():
        theirs = flask.jsonify(value).get_data()
    assert ours == theirs


def test_response_text_is_the_response_body() -> None:
    for debug in (False, True):
        app = FakeApp(debug=debug)
        provider = t.cast(DefaultJSONProvider, app.json)
        value = {"b": [1, 2], "a": datetime.date(2020, 1, 1)}
        assert provider._response_text(value).encode() == provider.response(value).get_data()
