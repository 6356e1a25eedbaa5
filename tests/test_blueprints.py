from __future__ import annotations

import typing as t

import pytest

import carboy
from carboy import Blueprint, request, url_for


def test_prefix_endpoint_names_and_relative_url_for(app: carboy.Carboy, client) -> None:
    bp = Blueprint("shop", __name__, url_prefix="/shop")

    @bp.route("/")
    def index() -> str:
        return url_for(".item", item_id=3)

    @bp.route("/item/<int:item_id>")
    def item(item_id: int) -> str:
        return f"{request.endpoint} {request.blueprint} {item_id}"

    app.register_blueprint(bp)
    assert client.get("/shop/").data == b"/shop/item/3"
    assert client.get("/shop/item/3").data == b"shop.item shop 3"
    with app.test_request_context():
        assert url_for("shop.item", item_id=1) == "/shop/item/1"


def test_nested_blueprints_and_hook_scopes(app: carboy.Carboy, client) -> None:
    calls: list[str] = []
    parent = Blueprint("parent", __name__, url_prefix="/parent")
    child = Blueprint("child", __name__, url_prefix="/child")

    @app.before_request
    def app_before() -> None:
        calls.append("app")

    @parent.before_request
    def parent_before() -> None:
        calls.append("parent")

    @child.before_request
    def child_before() -> None:
        calls.append("child")

    @child.after_request
    def child_after(response: carboy.Response) -> carboy.Response:
        calls.append("child-after")
        return response

    @parent.after_request
    def parent_after(response: carboy.Response) -> carboy.Response:
        calls.append("parent-after")
        return response

    @child.route("/leaf")
    def leaf() -> str:
        return f"{request.endpoint} {request.blueprints}"

    @parent.route("/own")
    def own() -> str:
        return "own"

    parent.register_blueprint(child)
    app.register_blueprint(parent)

    rv = client.get("/parent/child/leaf")
    assert rv.data == b"parent.child.leaf ['parent.child', 'parent']"
    assert calls == ["app", "parent", "child", "child-after", "parent-after"]
    calls.clear()
    client.get("/parent/own")
    assert calls == ["app", "parent", "parent-after"]
    calls.clear()
    client.get("/missing")
    assert calls == ["app"]


def test_registered_twice_under_different_names(app: carboy.Carboy, client) -> None:
    bp = Blueprint("api", __name__)

    @bp.route("/ping")
    def ping() -> str:
        return request.blueprint or ""

    app.register_blueprint(bp, url_prefix="/v1")
    app.register_blueprint(bp, url_prefix="/v2", name="api_v2")
    with pytest.raises(ValueError, match="already registered"):
        app.register_blueprint(bp, url_prefix="/v3")
    assert client.get("/v1/ping").data == b"api"
    assert client.get("/v2/ping").data == b"api_v2"


def test_blueprint_error_handlers_before_app(app: carboy.Carboy, client) -> None:
    bp = Blueprint("bp", __name__, url_prefix="/bp")

    @bp.errorhandler(ValueError)
    def bp_value_error(e: ValueError) -> t.Any:
        return "bp handled", 400

    @app.errorhandler(ValueError)
    def app_value_error(e: ValueError) -> t.Any:
        return "app handled", 400

    @bp.route("/fail")
    def bp_fail() -> str:
        raise ValueError()

    @app.route("/fail")
    def app_fail() -> str:
        raise ValueError()

    app.register_blueprint(bp)
    assert client.get("/bp/fail").data == b"bp handled"
    assert client.get("/fail").data == b"app handled"


def test_app_wide_registrations_from_blueprint(app: carboy.Carboy, client) -> None:
    bp = Blueprint("bp", __name__)
    seen: list[str] = []

    @bp.before_app_request
    def before() -> None:
        seen.append(request.path)

    @bp.app_errorhandler(404)
    def missing(e: Exception) -> t.Any:
        return "bp 404", 404

    @bp.app_template_filter("shout")
    def shout(s: str) -> str:
        return s.upper()

    @bp.app_context_processor
    def extra() -> dict[str, str]:
        return {"who": "bp"}

    app.register_blueprint(bp)

    @app.route("/")
    def index() -> str:
        return carboy.render_template_string("{{ 'hi'|shout }} {{ who }}")

    assert client.get("/").data == b"HI bp"
    assert client.get("/nope").data == b"bp 404"
    assert seen == ["/", "/nope"]


def test_url_defaults_and_value_preprocessor(app: carboy.Carboy, client) -> None:
    bp = Blueprint("lang", __name__, url_prefix="/<lang>")

    @bp.url_defaults
    def add_lang(endpoint: str, values: dict[str, t.Any]) -> None:
        values.setdefault("lang", carboy.g.lang)

    @bp.url_value_preprocessor
    def pull_lang(endpoint: str | None, values: dict[str, t.Any] | None) -> None:
        carboy.g.lang = (values or {}).pop("lang")

    @bp.route("/page")
    def page() -> str:
        return f"{carboy.g.lang} {url_for('.page')}"

    app.register_blueprint(bp)
    assert client.get("/fr/page").data == b"fr /fr/page"


def test_record_and_record_once(app: carboy.Carboy) -> None:
    bp = Blueprint("bp", __name__)
    every: list[str] = []
    once: list[str] = []
    bp.record(lambda state: every.append(state.name))
    bp.record_once(lambda state: once.append(state.name))
    app.register_blueprint(bp)
    app.register_blueprint(bp, name="again")
    assert every == ["bp", "again"]
    assert once == ["bp"]


def test_blueprint_rejects_bad_names_and_late_setup(app: carboy.Carboy) -> None:
    with pytest.raises(ValueError, match="dot"):
        Blueprint("a.b", __name__)
    with pytest.raises(ValueError, match="empty"):
        Blueprint("", __name__)
    bp = Blueprint("bp", __name__)
    with pytest.raises(ValueError, match="dot"):
        bp.add_url_rule("/x", "a.b", lambda: "x")
    app.register_blueprint(bp)
    with pytest.raises(AssertionError, match="after it was registered"):
        bp.route("/late")(lambda: "late")


def test_url_defaults_option_and_subdomain_option() -> None:
    app = carboy.Carboy(__name__)
    bp = Blueprint("bp", __name__, url_defaults={"kind": "default"})

    @bp.route("/k")
    def kind(kind: str) -> str:
        return kind

    app.register_blueprint(bp)
    assert app.test_client().get("/k").data == b"default"


def test_nested_blueprint_keeps_its_own_prefix_when_registered_with_none(
    app: carboy.Carboy, client
) -> None:
    parent = Blueprint("parent", __name__, url_prefix="/parent")
    child = Blueprint("child", __name__, url_prefix="/child")

    @child.route("/")
    def index() -> str:
        return "child index"

    # An explicit url_prefix=None means "use the blueprint's own prefix", as when omitted.
    parent.register_blueprint(child, url_prefix=None)
    app.register_blueprint(parent, url_prefix=None)
    assert client.get("/parent/child/").data == b"child index"


def test_blueprint_endpoint_decorator_serves_the_app_endpoint(app: carboy.Carboy, client) -> None:
    from werkzeug.routing import Rule

    app.url_map.add(Rule("/legacy", endpoint="legacy"))
    bp = Blueprint("bp", __name__)

    @bp.endpoint("legacy")
    def legacy() -> str:
        return f"served {request.endpoint}"

    app.register_blueprint(bp, url_prefix="/bp")
    assert client.get("/legacy").data == b"served legacy"
    assert client.get("/bp/legacy").status_code == 404
