from __future__ import annotations

import pytest
from werkzeug.routing import BuildError

import carboy
from carboy import url_for


@pytest.fixture
def routed(app: carboy.Carboy) -> carboy.Carboy:
    @app.route("/user/<int:user_id>")
    def user(user_id: int) -> str:
        return str(user_id)

    @app.route("/form", methods=["POST"])
    def form_post() -> str:
        return "post"

    @app.route("/form", methods=["GET"])
    def form_get() -> str:
        return "get"

    return app


def test_build_with_query_anchor_external_scheme(routed: carboy.Carboy) -> None:
    with routed.test_request_context(base_url="http://example.test"):
        assert url_for("user", user_id=2) == "/user/2"
        assert url_for("user", user_id=2, page=3, q="a b") == "/user/2?page=3&q=a+b"
        assert url_for("user", user_id=2, _anchor="top x") == "/user/2#top%20x"
        assert url_for("user", user_id=2, _external=True) == "http://example.test/user/2"
        assert url_for("user", user_id=2, _scheme="https") == "https://example.test/user/2"
        assert url_for("static", filename="a.css") == "/static/a.css"
        with pytest.raises(ValueError, match="_external"):
            url_for("user", user_id=2, _scheme="https", _external=False)


def test_method_selects_rule(routed: carboy.Carboy) -> None:
    with routed.test_request_context():
        assert url_for("form_post", _method="POST") == "/form"
        with pytest.raises(BuildError):
            url_for("form_post", _method="GET")


def test_build_error_and_handlers(routed: carboy.Carboy) -> None:
    with routed.test_request_context():
        with pytest.raises(BuildError):
            url_for("nowhere")
        with pytest.raises(BuildError):
            url_for("user")  # missing user_id
    routed.url_build_error_handlers.append(lambda error, endpoint, values: f"/fallback/{endpoint}")
    with routed.test_request_context():
        assert url_for("nowhere") == "/fallback/nowhere"


def test_outside_request_needs_server_name(routed: carboy.Carboy) -> None:
    with routed.app_context(), pytest.raises(RuntimeError, match="SERVER_NAME"):
        url_for("user", user_id=1)
    routed.config.update(SERVER_NAME="api.test", PREFERRED_URL_SCHEME="https")
    with routed.app_context():
        assert url_for("user", user_id=1) == "https://api.test/user/1"


def test_url_for_in_template(routed: carboy.Carboy) -> None:
    with routed.test_request_context():
        rendered = carboy.render_template_string("{{ url_for('user', user_id=5) }}")
        assert rendered == "/user/5"


def test_url_for_accepts_a_value_named_self(app: carboy.Carboy) -> None:
    @app.route("/<self>")
    def show(self: str) -> str:
        return self

    with app.test_request_context():
        assert carboy.url_for("show", self="me") == "/me"
        assert app.url_for("show", self="you") == "/you"
