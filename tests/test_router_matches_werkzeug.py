"""The compiled router answers as Werkzeug's matcher does where rules overlap (carboy issue 18).

Werkzeug walks its rule tree once and stops at the first rule whose regex and method fit: a
converter that then refuses the value (``ValidationError``) ends the match with 404 (405 if a
rule passed over on the way allowed other methods), and a rule that would fit with a slash
added, met first, redirects. Neither tries a later rule. Each case runs through the app
fixtures (WSGI short path, method chain, ASGI) and at the router level.
"""

from __future__ import annotations

import pytest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule

import carboy
from carboy.routing import Router


def _two_views(app: carboy.Carboy, first: str, second: str, **first_options: object) -> None:
    app.add_url_rule(first, "a", lambda **kw: f"A {sorted(kw.items())}", **first_options)  # type: ignore[arg-type]
    app.add_url_rule(second, "b", lambda **kw: f"B {sorted(kw.items())}")


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ("/x/<int(max=10):n>", "/x/11"),
        ("/x/<int(min=1):n>", "/x/00"),
        ("/x/<int(fixed_digits=3):n>", "/x/1000"),
        ("/x/<int(fixed_digits=3):n>", "/x/10"),
    ],
)
def test_refused_value_is_404_not_the_next_rule(app: carboy.Carboy, client, rule, path) -> None:
    _two_views(app, rule, "/x/<s>")
    rv = client.get(path)
    assert rv.status_code == 404, rv.get_data(as_text=True)
    # The rule still matches the values its converter accepts.
    assert client.get("/x/7" if "fixed" not in rule else "/x/007").get_data(as_text=True) == (
        "A [('n', 7)]"
    )
    assert client.get("/x/abc").get_data(as_text=True) == "B [('s', 'abc')]"


def test_refused_value_after_a_method_mismatch_is_405(app: carboy.Carboy, client) -> None:
    app.add_url_rule("/x/<int(max=5):n>", "post", lambda n: "post", methods=["POST"])
    _two_views(app, "/x/<int(max=10):n>", "/x/<s>")
    rv = client.get("/x/11")
    assert rv.status_code == 405
    assert set(rv.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert client.get("/x/7").get_data(as_text=True) == "A [('n', 7)]"


def test_slash_rule_met_first_redirects(app: carboy.Carboy, client) -> None:
    # Werkzeug reaches /a before trying <x>: /a/ fits with a slash, so it redirects.
    _two_views(app, "/a/", "/<x>")
    rv = client.get("/a")
    assert rv.status_code == 308
    assert rv.headers["Location"].endswith("/a/")
    assert client.get("/b").get_data(as_text=True) == "B [('x', 'b')]"


def test_dynamic_slash_rule_met_first_redirects(app: carboy.Carboy, client) -> None:
    _two_views(app, "/x/<int:n>/", "/x/<s>")
    rv = client.get("/x/5")
    assert rv.status_code == 308
    assert rv.headers["Location"].endswith("/x/5/")
    assert client.get("/x/five").get_data(as_text=True) == "B [('s', 'five')]"


def test_non_strict_rule_met_first_wins(app: carboy.Carboy, client) -> None:
    _two_views(app, "/x/<int:n>", "/x/<s>/", strict_slashes=False)
    app.add_url_rule("/a/<y>/", "c", lambda y: f"C {y}", strict_slashes=False)
    app.add_url_rule("/<p>/<q>", "d", lambda p, q: "D")
    assert client.get("/x/5/").get_data(as_text=True) == "A [('n', 5)]"
    assert client.get("/a/b").get_data(as_text=True) == "C b"
    assert client.get("/x/five/").get_data(as_text=True) == "B [('s', 'five')]"


def test_path_rule_with_slash_keeps_werkzeug_trailing_slash_rule(
    app: carboy.Carboy, client
) -> None:
    _two_views(app, "/docs/<path:p>/", "/other")
    assert client.get("/docs/a/b/").get_data(as_text=True) == "A [('p', 'a/b')]"
    # A value never ends with a slash: Werkzeug merges the doubled slash with a redirect.
    rv = client.get("/docs/a/b//")
    assert rv.status_code == 308
    assert rv.headers["Location"].endswith("/docs/a/b/")


def test_equal_weight_converters_keep_werkzeug_tree_order(app: carboy.Carboy, client) -> None:
    # Werkzeug's tree orders two converters of the same weight by which was added first, and
    # visits the whole subtree of the first before the second.
    app.add_url_rule("/<string(length=2):a>/<int:b>", "r1", lambda a, b: "r1")
    app.add_url_rule("/<string(minlength=2):a>/<c>", "r2", lambda a, c: "r2")
    app.add_url_rule("/<string(length=2):a>/<d>", "r3", lambda a, d: "r3")
    assert client.get("/ab/cd").get_data(as_text=True) == "r3"
    assert client.get("/abc/cd").get_data(as_text=True) == "r2"
    assert client.get("/ab/12").get_data(as_text=True) == "r1"


# -- the same cases at the router level, against Werkzeug's own matcher -----------------------


def _werkzeug(url_map: Map, path: str, method: str) -> object:
    try:
        rule, args = url_map.bind("localhost").match(path, method, return_rule=True)
    except RequestRedirect as e:
        return ("redirect", e.new_url)
    except HTTPException as e:
        return ("error", type(e).__name__)
    return ("match", rule.rule, args)


CASES = [
    ([Rule("/x/<int(max=10):n>", endpoint="a"), Rule("/x/<s>", endpoint="b")], "/x/11"),
    ([Rule("/x/<int(min=1):n>", endpoint="a"), Rule("/x/<s>", endpoint="b")], "/x/00"),
    ([Rule("/x/<int(fixed_digits=3):n>", endpoint="a"), Rule("/x/<s>", endpoint="b")], "/x/1000"),
    ([Rule("/a/", endpoint="a"), Rule("/<x>", endpoint="b")], "/a"),
    ([Rule("/x/<int:n>/", endpoint="a"), Rule("/x/<s>", endpoint="b")], "/x/5"),
    ([Rule("/a/<y>/", endpoint="a", strict_slashes=False), Rule("/<p>/<q>", endpoint="b")], "/a/b"),
    (
        [Rule("/x/<int:n>", endpoint="a", strict_slashes=False), Rule("/x/<s>/", endpoint="b")],
        "/x/5/",
    ),
    ([Rule("/docs/<path:p>/", endpoint="a")], "/docs/a/b//"),
    ([Rule("/<string(minlength=0):a>/<b>", endpoint="a")], "//x"),
    (
        [
            Rule("/a", endpoint="a", methods=["POST"]),
            Rule("/a/", endpoint="c", methods=["GET"]),
            Rule("/<x>", endpoint="b"),
        ],
        "/a",
    ),
]


@pytest.mark.parametrize(("rules", "path"), CASES)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_router_never_answers_otherwise_than_werkzeug(rules, path, method) -> None:
    url_map = Map([r.empty() for r in rules])
    router = Router(url_map)
    expected = _werkzeug(url_map, path, method)
    hit = router.match(path, method)
    if hit is not None:
        assert ("match", hit[0].rule, hit[1]) == expected
    elif router.surely_missing(path):
        assert expected == ("error", "NotFound")


def test_custom_converter_keeps_to_one_segment(app: carboy.Carboy, client) -> None:
    class Dotted(BaseConverter):
        # No slash in the regex text, so Werkzeug keeps it to one path segment; in a
        # whole-path regex ``.+`` would also take "a/b".
        regex = r".+"

    app.url_map.converters["dotted"] = Dotted
    app.add_url_rule("/c/<dotted:v>", "c", lambda v: f"C {v}")
    app.add_url_rule("/<a>/<b>/<d>", "d", lambda a, b, d: f"D {a} {b} {d}")
    assert client.get("/c/a.b").get_data(as_text=True) == "C a.b"
    assert client.get("/c/a/b").get_data(as_text=True) == "D c a b"


def test_alias_rule_redirects_to_the_endpoints_main_rule(app: carboy.Carboy, client) -> None:
    def page() -> str:
        return "page"

    app.add_url_rule("/old", "page", page, alias=True)
    app.add_url_rule("/new", "page", page)
    rv = client.get("/old")
    assert rv.status_code == 308
    assert rv.headers["Location"].endswith("/new")
    assert client.get("/new").get_data(as_text=True) == "page"
