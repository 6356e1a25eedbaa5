from __future__ import annotations

import itertools
import uuid

import pytest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule, ValidationError

import carboy
from carboy.routing import Map as CarboyMap
from carboy.routing import Router


def test_converters(app: carboy.Carboy, client) -> None:
    @app.route("/i/<int:n>")
    def i(n: int) -> str:
        return f"int {n!r}"

    @app.route("/f/<float:x>")
    def f(x: float) -> str:
        return f"float {x!r}"

    @app.route("/p/<path:p>")
    def p(p: str) -> str:
        return f"path {p}"

    @app.route("/u/<uuid:u>")
    def u(u: uuid.UUID) -> str:
        return f"uuid {u.hex}"

    @app.route("/a/<any(red, blue):c>")
    def a(c: str) -> str:
        return f"any {c}"

    @app.route("/s/<string(length=2):code>")
    def s(code: str) -> str:
        return f"string {code}"

    @app.route("/r/<int(min=1, max=9, signed=True):n>")
    def r(n: int) -> str:
        return f"ranged {n}"

    @app.route("/n/<name>")
    def n(name: str) -> str:
        return f"default {name}"

    value = uuid.uuid4()
    cases = {
        "/i/42": "int 42",
        "/f/1.5": "float 1.5",
        "/p/a/b/c.txt": "path a/b/c.txt",
        f"/u/{value}": f"uuid {value.hex}",
        "/a/red": "any red",
        "/s/fr": "string fr",
        "/r/5": "ranged 5",
        "/n/caf%C3%A9": "default café",
    }
    for path, body in cases.items():
        rv = client.get(path)
        assert rv.status_code == 200, path
        assert rv.get_data(as_text=True) == body
    for path in ["/i/x", "/f/1", "/a/green", "/s/fra", "/r/10", "/r/0", "/u/nope"]:
        assert client.get(path).status_code == 404, path


def test_custom_converter_and_validation_error(app: carboy.Carboy, client) -> None:
    class ListConverter(BaseConverter):
        regex = r"[a-z]+(?:,[a-z]+)*"

        def to_python(self, value: str) -> list[str]:
            items = value.split(",")
            if "nope" in items:
                raise ValidationError()
            return items

        def to_url(self, value: list[str]) -> str:
            return ",".join(value)

    app.url_map.converters["list"] = ListConverter

    @app.route("/l/<list:items>")
    def items(items: list[str]) -> dict[str, list[str]]:
        return {"items": items}

    assert client.get("/l/a,b").json == {"items": ["a", "b"]}
    assert client.get("/l/a,nope").status_code == 404
    with app.test_request_context():
        assert carboy.url_for("items", items=["x", "y"]) == "/l/x,y"


def test_automatic_head_options_and_405(app: carboy.Carboy, client) -> None:
    @app.route("/thing", methods=["GET", "POST"])
    def thing() -> str:
        return "thing"

    head = client.head("/thing")
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == "5"
    options = client.options("/thing")
    assert options.status_code == 200
    assert set(options.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}
    put = client.put("/thing")
    assert put.status_code == 405
    assert set(put.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}


def test_provide_automatic_options_false(app: carboy.Carboy, client) -> None:
    @app.route("/x", provide_automatic_options=False)
    def x() -> str:
        return "x"

    assert client.options("/x").status_code == 405


def test_trailing_slash_redirect_and_strict_slashes(app: carboy.Carboy, client) -> None:
    @app.route("/folder/")
    def folder() -> str:
        return "folder"

    @app.route("/loose", strict_slashes=False)
    def loose() -> str:
        return "loose"

    rv = client.get("/folder")
    assert rv.status_code == 308
    assert rv.headers["Location"].endswith("/folder/")
    assert client.get("/folder/").get_data(as_text=True) == "folder"
    assert client.get("/loose").status_code == 200
    assert client.get("/loose/").status_code == 200


def test_redirect_to_and_defaults(app: carboy.Carboy, client) -> None:
    app.add_url_rule("/old", endpoint="old", redirect_to="/new")

    @app.route("/new")
    def new() -> str:
        return "new"

    @app.route("/page/", defaults={"n": 1})
    @app.route("/page/<int:n>")
    def page(n: int) -> str:
        return f"page {n}"

    rv = client.get("/old")
    assert rv.status_code == 308
    assert rv.headers["Location"].endswith("/new")
    assert client.get("/page/").get_data(as_text=True) == "page 1"
    assert client.get("/page/3").get_data(as_text=True) == "page 3"
    # The rule with defaults owns n=1, so /page/1 redirects to it, as in Werkzeug.
    assert client.get("/page/1").status_code == 308


def test_url_map_facade(app: carboy.Carboy) -> None:
    @app.route("/users/<int:user_id>", methods=["GET", "POST"])
    def user(user_id: int) -> str:
        return str(user_id)

    rules = {r.endpoint: r for r in app.url_map.iter_rules()}
    rule = rules["user"]
    assert rule.rule == "/users/<int:user_id>"
    assert rule.arguments == {"user_id"}
    assert {"GET", "HEAD", "POST", "OPTIONS"} <= set(rule.methods or ())
    assert "int" in app.url_map.converters
    assert app.url_map.strict_slashes is True
    assert app.url_map.host_matching is False
    adapter = app.url_map.bind("localhost")
    assert adapter.match("/users/7") == ("user", {"user_id": 7})
    assert isinstance(rule, Rule)


def test_static_route_wins_over_dynamic(app: carboy.Carboy, client) -> None:
    @app.route("/<name>")
    def dynamic(name: str) -> str:
        return "dynamic"

    @app.route("/about")
    def about() -> str:
        return "static"

    assert client.get("/about").get_data(as_text=True) == "static"
    assert client.get("/other").get_data(as_text=True) == "dynamic"


def test_host_matching(client) -> None:
    app = carboy.Carboy(__name__, host_matching=True, static_host="static.test")

    @app.route("/", host="a.test")
    def a() -> str:
        return "a"

    @app.route("/", host="b.test")
    def b() -> str:
        return "b"

    c = app.test_client()
    assert c.get("/", base_url="http://a.test").get_data(as_text=True) == "a"
    assert c.get("/", base_url="http://b.test").get_data(as_text=True) == "b"
    assert c.get("/", base_url="http://c.test").status_code == 404


def test_subdomain_matching() -> None:
    app = carboy.Carboy(__name__, subdomain_matching=True)
    app.config["SERVER_NAME"] = "example.test"

    @app.route("/", subdomain="<user>")
    def profile(user: str) -> str:
        return f"user {user}"

    c = app.test_client()
    assert c.get("/", base_url="http://ann.example.test").get_data(as_text=True) == "user ann"


# -- the compiled router agrees with Werkzeug's matcher --------------------------------------

RULES = [
    Rule("/", endpoint="index"),
    Rule("/about", endpoint="about"),
    Rule("/folder/", endpoint="folder"),
    Rule("/users/", endpoint="users"),
    Rule("/users/<int:user_id>", endpoint="user"),
    Rule("/users/<int:user_id>/edit", endpoint="user_edit", methods=["GET", "POST"]),
    Rule("/users/new", endpoint="user_new"),
    Rule("/users/<name>", endpoint="user_by_name", methods=["POST"]),
    Rule("/files/<path:p>", endpoint="file"),
    Rule("/files/<path:p>/raw", endpoint="file_raw"),
    Rule("/docs/<path:p>/", endpoint="docs"),
    Rule("/<lang>/<page>", endpoint="lang_page"),
    Rule("/<lang>/about", endpoint="lang_about"),
    Rule("/x/<int:a>.<int:b>", endpoint="dotted"),
    Rule("/x/<a>-<b>", endpoint="dashed"),
    Rule("/f/<float:v>", endpoint="float"),
    Rule("/any/<any(a, b):c>", endpoint="any"),
    Rule("/put-only", endpoint="put_only", methods=["PUT"]),
]
PATHS = [
    "/",
    "/about",
    "/folder",
    "/folder/",
    "/users",
    "/users/",
    "/users/1",
    "/users/1/edit",
    "/users/new",
    "/users/bob",
    "/users/1/",
    "/files/a",
    "/files/a/b/c",
    "/files/a/b/raw",
    "/docs/a/b",
    "/docs/a/b/",
    "/en/home",
    "/en/about",
    "/en/about/",
    "/x/1.2",
    "/x/a-b",
    "/x/1-2",
    "/f/1.5",
    "/f/2",
    "/any/a",
    "/any/c",
    "/put-only",
    "/nope/nope/nope",
    "//about",
    "/users//1",
    "/caf\u00e9",
]


def _werkzeug_answer(url_map: Map, path: str, method: str) -> object:
    try:
        rule, args = url_map.bind("localhost").match(path, method, return_rule=True)
    except RequestRedirect as e:
        return ("redirect", e.new_url)
    except HTTPException as e:
        return ("error", e.code)
    return ("match", rule.endpoint, args)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
def test_router_agrees_with_werkzeug(method: str) -> None:
    url_map = Map([r.empty() for r in RULES])
    router = Router(url_map)
    decided = 0
    for path in PATHS:
        expected = _werkzeug_answer(url_map, path, method)
        hit = router.match(path, method)
        if hit is not None:
            assert expected == ("match", hit[0].endpoint, hit[1]), (path, method)
            decided += 1
        elif router.surely_missing(path):
            assert expected == ("error", 404), (path, method)
            decided += 1
        # Otherwise the app asks Werkzeug, which is correct by definition.
    # The router must decide most paths alone, or it would be correct only by deferring.
    assert decided >= len(PATHS) // 2, decided


def test_router_rebuilds_when_rules_are_added(app: carboy.Carboy, client) -> None:
    url_map = CarboyMap([Rule("/a", endpoint="a")])
    router = Router(url_map)
    assert not router.is_stale()
    url_map.add(Rule("/b", endpoint="b"))
    assert router.is_stale()

    # The app's map is a carboy Map: a rule added straight to it is matched after a request.
    app.add_url_rule("/first", "first", lambda: "first")
    assert client.get("/first").data == b"first"
    app.url_map.add(Rule("/direct", endpoint="first"))
    assert client.get("/direct").data == b"first"


def test_router_decides_most_requests_alone() -> None:
    url_map = Map([r.empty() for r in RULES])
    router = Router(url_map)
    decided = sum(
        router.match(p, "GET") is not None or router.surely_missing(p)
        for p, _ in itertools.product(PATHS, [0])
    )
    # Every plain GET match and plain miss is answered without Werkzeug.
    assert decided >= len(PATHS) // 2
