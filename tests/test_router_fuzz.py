"""Property-based comparison of carboy's router with Werkzeug's matcher (carboy issue 18).

Rule tables with overlapping static and dynamic rules (every built-in converter, with its
arguments), method subsets, trailing slashes, non-strict rules and defaults, and paths made of
tokens that sit on the converters' edges (leading zeros, signs, huge numbers, percent-escapes,
non-ASCII, empty segments), are answered by:

- the router, against ``Map.bind(...).match(path, method, return_rule=True)``: a decided match
  is Werkzeug's rule and values, and ``surely_missing`` only ever means Werkzeug's 404;
- a carboy app (WSGI short path, method chain, or ASGI) against a Flask app with the same
  rules, through their test clients: same status, body, ``Location`` and ``Allow``.

The suite runs a bounded number of examples; CARBOY_FUZZ_EXAMPLES raises it for the long run.
"""

from __future__ import annotations

import re
import typing as t
from urllib.parse import unquote

import flask
import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RequestRedirect, Rule

import carboy
from carboy.routing import Router
from carboy.testing import ASGIClient

pytestmark = pytest.mark.fuzz

STATIC = ["a", "x", "00"]
# ``{v}``/``{w}`` become variable names unique within the rule.
CONVERTERS = [
    "<{v}>",
    "<string(length=2):{v}>",
    "<string(maxlength=3):{v}>",
    "<string(minlength=0):{v}>",
    "<int:{v}>",
    "<int(min=1):{v}>",
    "<int(max=10):{v}>",
    "<int(fixed_digits=3):{v}>",
    "<int(signed=True):{v}>",
    "<float:{v}>",
    "<float(signed=True, max=2.5):{v}>",
    "<any(a, b, '00'):{v}>",
    "<uuid:{v}>",
    "<path:{v}>",
    "<int:{v}>.<int:{w}>",
    "<{v}>-<{w}>",
    "x<{v}>",
]
METHODS = [None, ("GET",), ("POST",), ("GET", "POST"), ("PUT", "DELETE")]
REQUEST_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]
# Path segments as they appear in a URL (percent-escapes decoded by the server).
TOKENS = [
    "a", "b", "x", "00", "ab", "abc", "", "0", "7", "07", "11", "100", "1000", "-3", "-0",
    "1.5", "-1.5", "2.50", "0.0", "99999999999999999999999", "1.2", "a-b", "1-2", "x7", "x",
    "%2F", "%41", "%FF", "%20", "caf%C3%A9", "\u00e9", "\u0661\u0662",
    "12345678-1234-5678-1234-567812345678",
]  # fmt: skip


@st.composite
def rule_specs(draw: st.DrawFn) -> tuple[str, tuple[str, ...] | None, bool]:
    names = iter(f"v{i}" for i in range(20))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 2)) == 0:
            parts.append(draw(st.sampled_from(STATIC)))
        else:
            parts.append(draw(st.sampled_from(CONVERTERS)).format(v=next(names), w=next(names)))
    path = "/" + "/".join(parts) + ("/" if draw(st.booleans()) else "")
    return path, draw(st.sampled_from(METHODS)), draw(st.sampled_from([True, True, False]))


#: ``(endpoint, rule path, methods, strict_slashes, defaults)``
Spec = tuple[str, str, "tuple[str, ...] | None", bool, "dict[str, t.Any] | None"]


@st.composite
def tables(draw: st.DrawFn) -> list[Spec]:
    table: list[Spec] = []
    for i, (path, methods, strict) in enumerate(
        draw(st.lists(rule_specs(), min_size=1, max_size=8))
    ):
        table.append((f"e{i}", path, methods, strict, None))
    if draw(st.booleans()):
        # One endpoint with a rule that supplies a default for the other's variable.
        prefix = draw(st.sampled_from(["/a", "/x", "/x/a"]))
        table.append(("paged", prefix, None, True, {"page": 1}))
        table.append(("paged", prefix + "/<int:page>", None, True, None))
    if draw(st.booleans()):
        table.insert(draw(st.integers(0, len(table))), ("root", "/", None, True, None))
    return table


@st.composite
def url_paths(draw: st.DrawFn) -> str:
    """A URL path as a client sends it (percent-escapes not yet decoded)."""
    lead = draw(st.sampled_from(["/", "/", "/", "//"]))
    segments = draw(st.lists(st.sampled_from(TOKENS), max_size=4))
    return lead + "/".join(segments) + draw(st.sampled_from(["", "", "/", "//"]))


_VARIABLE = re.compile(r"<[^>]*>")


def paths_for(table: list[Spec]) -> st.SearchStrategy[str]:
    """URL paths near the table's rules (each variable filled with a token, a slash added or
    taken off, one doubled) or anywhere."""

    @st.composite
    def near(draw: st.DrawFn) -> str:
        rule_path = draw(st.sampled_from(table))[1]
        path = _VARIABLE.sub(lambda _: draw(st.sampled_from(TOKENS)), rule_path)
        edit = draw(st.sampled_from(["", "", "", "slash", "unslash", "double"]))
        if edit == "slash":
            path += "/"
        elif edit == "unslash":
            path = path.rstrip("/") or "/"
        elif edit == "double" and "/" in path[1:]:
            path = path.replace("/", "//", 1)
        return path

    return st.one_of(near(), near(), url_paths())


def _rules(table: list[Spec]) -> list[Rule]:
    return [
        Rule(path, endpoint=endpoint, methods=methods, strict_slashes=strict, defaults=defaults)
        for endpoint, path, methods, strict, defaults in table
    ]


def _werkzeug(url_map: Map, path: str, method: str) -> tuple[t.Any, ...]:
    try:
        rule, args = url_map.bind("localhost").match(path, method, return_rule=True)
    except RequestRedirect as e:
        return ("redirect", e.new_url)
    except HTTPException as e:
        return (type(e).__name__,)
    return ("match", rule, args)


def _check_router(router: Router, url_map: Map, path: str, method: str) -> None:
    expected = _werkzeug(url_map, path, method)
    hit = router.match(path, method)
    if hit is not None:
        assert expected[0] == "match", (path, method, expected, hit[0].rule, hit[1])
        assert expected[1] is hit[0], (path, method, expected[1].rule, hit[0].rule)
        assert expected[2] == hit[1], (path, method, expected[2], hit[1])
    elif router.surely_missing(path):
        assert expected == ("NotFound",), (path, method, expected)


# One ambiguous table, fixed, for the many-paths test: every converter family next to a
# static rule and a catch-all at the same depth, slash variants, method subsets, defaults.
FIXED_TABLE: list[Spec] = [
    ("e0", "/x/<int(max=10):n>", None, True, None),
    ("e1", "/x/<int(min=1):n>/", ("POST",), True, None),
    ("e2", "/x/<int(fixed_digits=3):n>", ("GET", "POST"), True, None),
    ("e3", "/x/<s>", None, True, None),
    ("e4", "/x/<float(signed=True):f>", ("PUT",), True, None),
    ("e5", "/x/a/", None, True, None),
    ("e6", "/x/a", ("POST",), True, None),
    ("e7", "/<any(a, b, '00'):k>/<int(signed=True):n>", None, False, None),
    ("e8", "/<a>/<b>", ("GET",), True, None),
    ("e9", "/<string(length=2):a>/<uuid:u>/", None, True, None),
    ("e10", "/<string(minlength=0):a>/<path:p>/", ("GET", "POST"), True, None),
    ("e11", "/ab/<path:p>/raw", None, True, None),
    ("e12", "/ab/<int:a>.<int:b>", None, True, None),
    ("e13", "/ab/<a>-<b>", None, False, None),
    ("e14", "/00", None, False, None),
    ("e15", "/b/", ("PUT", "DELETE"), True, None),
    ("paged", "/a", None, True, {"page": 1}),
    ("paged", "/a/<int:page>", None, True, None),
    ("root", "/", None, True, None),
]
_FIXED_MAP = Map(_rules(FIXED_TABLE))
_FIXED_ROUTER = Router(_FIXED_MAP)


@given(path=url_paths(), method=st.sampled_from(REQUEST_METHODS))
def test_router_agrees_with_werkzeug_on_a_fixed_table(path: str, method: str) -> None:
    _check_router(_FIXED_ROUTER, _FIXED_MAP, unquote(path, errors="replace"), method)


@given(table=tables(), data=st.data())
def test_router_agrees_with_werkzeug_on_generated_tables(
    table: list[Spec], data: st.DataObject
) -> None:
    url_map = Map(_rules(table))
    router = Router(url_map)
    requests = st.tuples(paths_for(table), st.sampled_from(REQUEST_METHODS))
    for path, method in data.draw(st.lists(requests, min_size=1, max_size=16)):
        _check_router(router, url_map, unquote(path, errors="replace"), method)


# -- app level: a carboy app against a Flask app with the same rules ----------------------------


class _ChainApp(carboy.Carboy):
    """Overrides a dispatch step, so requests take Flask's plain method chain."""

    def dispatch_request(self) -> t.Any:
        return super().dispatch_request()


def _flask_view(**kwargs: t.Any) -> str:
    return f"{flask.request.endpoint} {sorted(kwargs.items())!r}"


def _carboy_view(**kwargs: t.Any) -> str:
    return f"{carboy.request.endpoint} {sorted(kwargs.items())!r}"


def _app(cls: type[t.Any], view: t.Callable[..., str], table: list[Spec]) -> t.Any:
    app = cls("fuzz_app")
    app.config["TESTING"] = True
    for endpoint, path, methods, strict, defaults in table:
        app.add_url_rule(
            path, endpoint, view, methods=methods, strict_slashes=strict, defaults=defaults
        )
    return app


def _answer(response: t.Any) -> tuple[t.Any, ...]:
    allow = response.headers.get("Allow")
    return (
        response.status_code,
        response.get_data(),
        response.headers.get("Location"),
        frozenset(allow.split(", ")) if allow else None,
    )


@given(table=tables(), way=st.sampled_from(["short-path", "method-chain", "asgi"]), data=st.data())
def test_app_answers_as_flask(table: list[Spec], way: str, data: st.DataObject) -> None:
    expected_app = _app(flask.Flask, _flask_view, table)
    app = _app(_ChainApp if way == "method-chain" else carboy.Carboy, _carboy_view, table)
    if way == "asgi":
        app.test_client_class = ASGIClient
    flask_client, client = expected_app.test_client(), app.test_client()
    requests = st.tuples(paths_for(table), st.sampled_from(REQUEST_METHODS))
    for path, method in data.draw(st.lists(requests, min_size=1, max_size=8)):
        # A test client reads "//x/y" as host x; "/%2Fx/y" reaches the app as path "//x/y".
        url = "/%2F" + path[2:] if path.startswith("//") else path
        expected = _answer(flask_client.open(url, method=method))
        assert _answer(client.open(url, method=method)) == expected, (url, method)
