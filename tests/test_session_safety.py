"""The session under inspection and under hostile cookies: ``Vary: Cookie`` whenever a view
looked at the session, however it looked (the shape of CVE-2026-27205, fixed in Flask 3.1.3),
and a validly signed cookie whose payload does not load gives an empty session, never a 500.
"""

from __future__ import annotations

import hashlib
import json
import logging
import typing as t

import flask
import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

import carboy
from carboy import session

SECRET = "test key"

#: Each way a view can look at the session without reading a value through ``[]``/``get``.
INSPECTIONS: dict[str, t.Callable[[t.Any], object]] = {
    "in": lambda s: "x" in s,
    "len": len,
    "bool": bool,
    "iter": list,
    "keys": lambda s: list(s.keys()),
    "items": lambda s: list(s.items()),
    "values": lambda s: list(s.values()),
    "copy": lambda s: s.copy(),
    "dict": dict,
    "eq": lambda s: s == {},
    "permanent": lambda s: s.permanent,
}


class _RawText:
    """A payload "serializer" that passes JSON text through, to sign hand-made payloads."""

    @staticmethod
    def dumps(value: object) -> str:
        return value if isinstance(value, str) else "{}"

    @staticmethod
    def loads(value: str) -> str:
        return value


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        SECRET,
        salt="cookie-session",
        serializer=_RawText,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
    )


def signed_json(text: str) -> str:
    """A session cookie signed with :data:`SECRET` whose payload is the JSON *text* as is."""
    return _signer().dumps(text)


def signed_payload(payload: bytes) -> str:
    """A session cookie signed with :data:`SECRET` around the raw *payload* bytes (before
    itsdangerous's base64 and zlib decoding)."""
    return _signer().make_signer("cookie-session").sign(payload).decode()


def _add_views(app: t.Any, module: t.Any) -> None:
    sess = module.session

    def make(name: str, inspect: t.Callable[[t.Any], object]) -> t.Callable[[], str]:
        def view() -> str:
            return repr(inspect(sess))

        view.__name__ = f"inspect_{name}"
        return view

    for name, inspect in INSPECTIONS.items():
        app.add_url_rule(f"/inspect/{name}", view_func=make(name, inspect))

    @app.route("/template")
    def template() -> str:
        return module.render_template_string("{{ 'x' in session }}")

    @app.route("/untouched")
    def untouched() -> str:
        return "nothing read"

    @app.route("/dump")
    def dump() -> t.Any:
        return {"session": repr(sorted(sess.items(), key=repr))}


@pytest.fixture
def safety_app(app: carboy.Carboy) -> carboy.Carboy:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    _add_views(app, carboy)

    @app.route("/async/in")
    async def async_in() -> str:
        return "yes" if "x" in session else "no"

    return app


@pytest.fixture
def flask_app() -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, PROPAGATE_EXCEPTIONS=False)
    _add_views(app, flask)
    return app


@pytest.mark.parametrize("with_cookie", [False, True], ids=["no-cookie", "cookie"])
@pytest.mark.parametrize("path", [*(f"/inspect/{n}" for n in INSPECTIONS), "/template"])
def test_inspecting_the_session_adds_vary_cookie(
    safety_app: carboy.Carboy, flask_app: flask.Flask, path: str, with_cookie: bool
) -> None:
    mine, theirs = safety_app.test_client(), flask_app.test_client()
    if with_cookie:
        for client in (mine, theirs):
            client.set_cookie("session", signed_json('{"y":1}'))
    got, want = mine.get(path), theirs.get(path)
    assert (got.status_code, got.data) == (want.status_code, want.data)
    assert got.headers.get("Vary") == want.headers.get("Vary") == "Cookie"


def test_inspecting_the_session_in_an_async_view_adds_vary_cookie(
    safety_app: carboy.Carboy,
) -> None:
    # Under ASGI with no cookie this is the bare path; under WSGI, a view on its own loop.
    client = safety_app.test_client()
    response = client.get("/async/in")
    assert (response.data, response.headers.get("Vary")) == (b"no", "Cookie")


def test_a_view_that_never_touches_the_session_gets_no_vary(
    safety_app: carboy.Carboy, flask_app: flask.Flask
) -> None:
    got = safety_app.test_client().get("/untouched")
    want = flask_app.test_client().get("/untouched")
    assert got.headers.get("Vary") is want.headers.get("Vary") is None


def test_a_tagged_payload_flask_loads_loads_the_same(
    safety_app: carboy.Carboy, flask_app: flask.Flask
) -> None:
    # A " di" tag with a second key under it: Flask reads the first key; carboy answered 500.
    cookie = signed_json('{" di": {" di": null, "  t": null}}')
    answers = []
    for app in (safety_app, flask_app):
        client = app.test_client()
        client.set_cookie("session", cookie)
        response = client.get("/dump")
        answers.append((response.status_code, response.json))
    assert answers[0] == answers[1] == (200, {"session": "[(' ', None)]"})


MALFORMED = {
    "bad base64": signed_payload(b"!!not base64!!"),
    "bad zlib": signed_payload(b".eJzLSM3JyVcozy_KSQEAGgQEXQ"[:-6] + b"AAAA"),
    "not json": signed_json("{not json"),
    "tuple of int": signed_json('{" t": 5}'),
    "bytes not base64": signed_json('{"a": {" b": "A"}}'),
    "bad uuid": signed_json('{"a": {" u": "nope"}}'),
    "date of a number": signed_json('{"a": {" d": 5}}'),
    "dict tag of null": signed_json('{" di": null}'),
    "a number": signed_json("5"),
    "a string": signed_json('"ab"'),
    "a list of scalars": signed_json("[1, 2]"),
    "deep nesting": signed_json("[" * 3000 + "]" * 3000),
}


@pytest.mark.parametrize("cookie", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_signed_payload_that_does_not_load_is_an_empty_session(
    safety_app: carboy.Carboy, cookie: str
) -> None:
    client = safety_app.test_client()
    client.set_cookie("session", cookie)
    response = client.get("/dump")
    assert (response.status_code, response.json) == (200, {"session": "[]"})


def test_a_malformed_payload_is_logged_at_warning_once(
    safety_app: carboy.Carboy, caplog: pytest.LogCaptureFixture
) -> None:
    client = safety_app.test_client()
    caplog.set_level(logging.DEBUG, logger=safety_app.logger.name)
    for cookie in (MALFORMED["bad zlib"], MALFORMED["a number"], MALFORMED["bad zlib"]):
        client.set_cookie("session", cookie)
        assert client.get("/dump").status_code == 200
    levels = [r.levelno for r in caplog.records if "did not load" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    assert "\n" not in caplog.records[0].getMessage()


# -- property-based: hostile and mutated cookies ---------------------------------------------

TAG_KEYS = [" t", " b", " m", " u", " d", " di", " l", "  t", " di__", "x"]
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(
        ["", "AAAA", "Wed, 21 Oct 2015 07:28:00 GMT", "00000000-0000-0000-0000-000000000000"]
    ),
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(TAG_KEYS), st.text(max_size=4)), children, max_size=3
        ),
    ),
    max_leaves=12,
)


def _answer(app: t.Any, cookie: str) -> tuple[int, t.Any]:
    client = app.test_client()
    client.set_cookie("session", cookie)
    response = client.get("/dump")
    return response.status_code, response.json


@pytest.mark.fuzz
@given(payload=_json_values)
def test_hostile_signed_payloads_load_as_flask_or_as_empty(payload: object) -> None:
    mine = carboy.Carboy(__name__)
    mine.config.update(SECRET_KEY=SECRET, PROPAGATE_EXCEPTIONS=False)
    mine.logger.disabled = True
    _add_views(mine, carboy)
    theirs = flask.Flask(__name__)
    theirs.config.update(SECRET_KEY=SECRET, PROPAGATE_EXCEPTIONS=False)
    theirs.logger.disabled = True
    _add_views(theirs, flask)
    cookie = signed_json(json.dumps(payload))
    got, want = _answer(mine, cookie), _answer(theirs, cookie)
    assert got[0] == 200
    if want[0] == 200:
        assert got == want
    else:  # Flask answers 500; carboy treats the payload as a bad signature
        assert got == (200, {"session": "[]"})


@pytest.mark.fuzz
@given(data=st.data())
def test_mutated_cookies_give_the_session_or_an_empty_one(data: st.DataObject) -> None:
    app = carboy.Carboy(__name__)
    app.config.update(SECRET_KEY=SECRET, PROPAGATE_EXCEPTIONS=False)
    app.logger.disabled = True
    _add_views(app, carboy)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["user"] = data.draw(st.text(max_size=40), label="user")
        sess["items"] = [1, (2, b"\x00"), {"k": None}]
    original = client.get("/dump").json
    cookie = client.get_cookie("session")
    assert cookie is not None
    value = bytearray(cookie.value.encode())
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        where = data.draw(st.integers(0, len(value)), label="where")
        edit = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]), label="edit")
        byte = data.draw(st.integers(0x21, 0x7E), label="byte")
        if edit == "flip" and where < len(value):
            value[where] = byte
        elif edit == "insert":
            value[where:where] = bytes([byte])
        elif edit == "delete" and where < len(value):
            del value[where]
        elif edit == "truncate":
            del value[where:]
    client.set_cookie("session", value.decode())
    response = client.get("/dump")
    assert response.status_code == 200
    assert response.json in (original, {"session": "[]"})
