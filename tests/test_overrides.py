"""Every overridable method of the app is honoured, whether a subclass overrides it or an
extension replaces it on the instance (as Flask-Cors does with ``app.handle_exception``).

carboy's short path skips Flask's method chain when it can; these tests prove it notices both
kinds of override, under WSGI and under ASGI.
"""

from __future__ import annotations

import typing as t

import pytest

import carboy
from carboy import abort, render_template_string, url_for
from carboy.testing import ASGIClient

#: method -> (HTTP method, path, expected status) of a request that must call it.
TRIGGERS: dict[str, tuple[str, str, int]] = {
    "full_dispatch_request": ("GET", "/ok", 200),
    "preprocess_request": ("GET", "/ok", 200),
    "dispatch_request": ("GET", "/ok", 200),
    "make_response": ("GET", "/ok", 200),
    "process_response": ("GET", "/ok", 200),
    "finalize_request": ("GET", "/ok", 200),
    "create_url_adapter": ("GET", "/ok", 200),
    "ensure_sync": ("GET", "/ok", 200),
    "do_teardown_request": ("GET", "/ok", 200),
    "do_teardown_appcontext": ("GET", "/ok", 200),
    "update_template_context": ("GET", "/template", 200),
    "url_for": ("GET", "/link", 200),
    "inject_url_defaults": ("GET", "/link", 200),
    "handle_url_build_error": ("GET", "/bad-link", 500),
    "handle_exception": ("GET", "/boom", 500),
    "handle_user_exception": ("GET", "/boom", 500),
    "log_exception": ("GET", "/boom", 500),
    "should_ignore_error": ("GET", "/boom", 500),
    "handle_http_exception": ("GET", "/teapot", 418),
    "trap_http_exception": ("GET", "/teapot", 418),
    "raise_routing_exception": ("GET", "/missing", 404),
    "make_default_options_response": ("OPTIONS", "/ok", 200),
}


def build(mode: str, name: str, calls: list[str]) -> carboy.Carboy:
    if mode == "subclass":

        def recorded(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
            calls.append(name)
            return getattr(super(Sub, self), name)(*args, **kwargs)

        Sub = type("Sub", (carboy.Carboy,), {name: recorded})
        app: carboy.Carboy = Sub("overrides")
    else:
        app = carboy.Carboy("overrides")
        original = getattr(app, name)

        def replaced(*args: t.Any, **kwargs: t.Any) -> t.Any:
            calls.append(name)
            return original(*args, **kwargs)

        setattr(app, name, replaced)
    app.config["SECRET_KEY"] = "k"

    @app.route("/ok")
    def ok() -> str:
        return "ok"

    @app.route("/template")
    def template() -> str:
        return render_template_string("{{ word }}", word="hi")

    @app.route("/link")
    def link() -> str:
        return url_for("ok")

    @app.route("/bad-link")
    def bad_link() -> str:
        return url_for("no-such-endpoint")

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.route("/teapot")
    def teapot() -> str:
        abort(418)

    app.logger.disabled = True
    return app


@pytest.mark.parametrize("protocol", ["wsgi", "asgi"])
@pytest.mark.parametrize("mode", ["subclass", "instance"])
@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_override_is_called(name: str, mode: str, protocol: str) -> None:
    calls: list[str] = []
    app = build(mode, name, calls)
    if protocol == "asgi":
        app.test_client_class = ASGIClient
    method, path, status = TRIGGERS[name]
    response = app.test_client().open(path, method=method)
    assert response.status_code == status
    assert name in calls


@pytest.mark.parametrize("protocol", ["wsgi", "asgi"])
def test_replaced_handle_exception_shapes_the_error_response(protocol: str) -> None:
    # The pattern Flask-Cors uses: wrap the bound method and add headers to what it returns.
    app = build("instance", "make_response", [])
    original = app.handle_exception

    def handle_exception(e: Exception) -> carboy.Response:
        response = original(e)
        response.headers["X-Wrapped"] = "yes"
        return response

    app.handle_exception = handle_exception  # type: ignore[method-assign]
    if protocol == "asgi":
        app.test_client_class = ASGIClient
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.headers["X-Wrapped"] == "yes"
