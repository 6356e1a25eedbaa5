from __future__ import annotations

import gc
import logging
import sys
import typing as t
import weakref
from pathlib import Path

import pytest
from werkzeug.datastructures import Headers
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, InternalServerError, NotFound

import carboy
from carboy import abort, after_this_request, g, make_response, request


def test_return_value_forms(app: carboy.Carboy, client) -> None:
    routes: dict[str, t.Any] = {
        "/str": lambda: "text",
        "/bytes": lambda: b"raw",
        "/dict": lambda: {"a": 1},
        "/list": lambda: [1, 2],
        "/status": lambda: ("created", 201),
        "/status-str": lambda: ("teapot", "418 I'm a teapot"),
        "/headers": lambda: ("h", {"X-A": "1"}),
        "/headers-list": lambda: ("h", [("X-A", "2")]),
        "/headers-obj": lambda: ("h", Headers({"X-A": "3"})),
        "/all": lambda: ({"ok": True}, 202, {"X-A": "4"}),
        "/gen": lambda: (c for c in ["a", "b", "c"]),
        "/response": lambda: carboy.Response("resp", status=203),
        "/wsgi": lambda: lambda environ, start: (start("204 No Content", []), [])[1],
    }
    for path, view in routes.items():
        app.add_url_rule(path, path.strip("/"), view)

    assert client.get("/str").data == b"text"
    assert client.get("/str").mimetype == "text/html"
    assert client.get("/bytes").data == b"raw"
    rv = client.get("/dict")
    assert rv.json == {"a": 1} and rv.mimetype == "application/json"
    assert client.get("/list").json == [1, 2]
    assert client.get("/status").status_code == 201
    assert client.get("/status-str").status == "418 I'm a teapot"
    assert client.get("/headers").headers["X-A"] == "1"
    assert client.get("/headers-list").headers["X-A"] == "2"
    assert client.get("/headers-obj").headers["X-A"] == "3"
    rv = client.get("/all")
    assert (rv.status_code, rv.json, rv.headers["X-A"]) == (202, {"ok": True}, "4")
    assert client.get("/gen").data == b"abc"
    assert client.get("/response").status_code == 203
    assert client.get("/wsgi").status_code == 204


def test_json_body_matches_jsonify(app: carboy.Carboy, client) -> None:
    @app.route("/a")
    def a() -> dict[str, t.Any]:
        return {"b": 2, "a": [1, "é"]}

    @app.route("/b")
    def b() -> t.Any:
        return carboy.jsonify(b=2, a=[1, "é"])

    assert client.get("/a").data == client.get("/b").data == b'{"a":[1,"\\u00e9"],"b":2}\n'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "returned None"),
        (("a", 200, {}, "x"), "tuple of 4 items"),
        (True, "returned a bool"),
        (object(), "returned a object"),
    ],
)
def test_invalid_return_values_raise_type_error(app: carboy.Carboy, client, value, message) -> None:
    @app.route("/bad")
    def bad_view() -> t.Any:
        return value

    with pytest.raises(TypeError, match=message) as info:
        client.get("/bad")
    assert "bad_view" in str(info.value)


def test_hooks_order_and_short_circuit(app: carboy.Carboy, client) -> None:
    calls: list[str] = []

    @app.before_request
    def before1() -> None:
        calls.append("before1")

    @app.before_request
    def before2() -> t.Any:
        calls.append("before2")
        if request.args.get("stop"):
            return "stopped"
        return None

    @app.after_request
    def after1(response: carboy.Response) -> carboy.Response:
        calls.append("after1")
        return response

    @app.after_request
    def after2(response: carboy.Response) -> carboy.Response:
        calls.append("after2")
        response.headers["X-After"] = "yes"
        return response

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        calls.append(f"teardown {exc!r}")

    @app.teardown_appcontext
    def teardown_app(exc: BaseException | None) -> None:
        calls.append("teardown_app")

    @app.route("/")
    def index() -> str:
        calls.append("view")

        @after_this_request
        def once(response: carboy.Response) -> carboy.Response:
            calls.append("after_this_request")
            return response

        return "index"

    rv = client.get("/")
    assert rv.headers["X-After"] == "yes"
    assert calls == [
        "before1",
        "before2",
        "view",
        "after_this_request",
        "after2",
        "after1",
        "teardown None",
        "teardown_app",
    ]
    calls.clear()
    assert client.get("/?stop=1").data == b"stopped"
    assert calls == ["before1", "before2", "after2", "after1", "teardown None", "teardown_app"]


def test_teardown_receives_unhandled_error(app: carboy.Carboy) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    seen: list[BaseException | None] = []
    app.teardown_request(seen.append)

    @app.route("/boom")
    def boom() -> str:
        raise ZeroDivisionError("boom")

    assert app.test_client().get("/boom").status_code == 500
    assert isinstance(seen[0], ZeroDivisionError)


def test_error_handlers_by_code_and_class(app: carboy.Carboy, client) -> None:
    class AppError(Exception):
        pass

    class SpecificError(AppError):
        pass

    @app.errorhandler(404)
    def not_found(e: NotFound) -> t.Any:
        return f"missing {request.path}", 404

    @app.errorhandler(AppError)
    def app_error(e: AppError) -> t.Any:
        return "app error", 409

    @app.errorhandler(SpecificError)
    def specific(e: SpecificError) -> t.Any:
        return "specific", 410

    @app.errorhandler(HTTPException)
    def any_http(e: HTTPException) -> t.Any:
        return f"http {e.code}", t.cast(int, e.code)

    @app.route("/app")
    def raise_app() -> str:
        raise AppError()

    @app.route("/specific")
    def raise_specific() -> str:
        raise SpecificError()

    @app.route("/forbidden")
    def forbidden() -> str:
        abort(403)

    rv = client.get("/nowhere")
    assert (rv.status_code, rv.data) == (404, b"missing /nowhere")
    assert client.get("/app").data == b"app error"
    assert client.get("/specific").status_code == 410
    rv = client.get("/forbidden")
    assert (rv.status_code, rv.data) == (403, b"http 403")


def test_register_error_handler_rejects_bad_input(app: carboy.Carboy) -> None:
    with pytest.raises(ValueError, match="not a recognized HTTP error code"):
        app.register_error_handler(999, lambda e: "x")
    with pytest.raises(TypeError, match="instance"):
        app.register_error_handler(Forbidden(), lambda e: "x")  # type: ignore[arg-type]


def test_unhandled_exception_500_with_original_and_log(app: carboy.Carboy, caplog) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.errorhandler(500)
    def server_error(e: InternalServerError) -> t.Any:
        return f"500 from {type(e.original_exception).__name__}", 500

    @app.route("/boom")
    def boom() -> str:
        raise KeyError("k")

    with caplog.at_level(logging.ERROR, logger=app.logger.name):
        rv = app.test_client().get("/boom")
    assert (rv.status_code, rv.data) == (500, b"500 from KeyError")
    assert any("/boom [GET]" in r.getMessage() and r.exc_info for r in caplog.records)


def test_propagate_exceptions_in_testing(app: carboy.Carboy, client) -> None:
    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("propagated")

    with pytest.raises(RuntimeError, match="propagated"):
        client.get("/boom")


def test_trap_http_exceptions(app: carboy.Carboy, client) -> None:
    app.config["TRAP_HTTP_EXCEPTIONS"] = True

    @app.route("/forbidden")
    def forbidden() -> str:
        abort(403)

    with pytest.raises(Forbidden):
        client.get("/forbidden")


def test_trap_bad_request_errors(app: carboy.Carboy, client) -> None:
    @app.route("/key", methods=["POST"])
    def key() -> str:
        return request.form["missing"]

    assert client.post("/key").status_code == 400
    app.config["TRAP_BAD_REQUEST_ERRORS"] = True
    with pytest.raises(BadRequest):
        client.post("/key")


def test_make_response_helper_and_g(app: carboy.Carboy, client) -> None:
    @app.before_request
    def load() -> None:
        g.user = "ann"

    @app.route("/")
    def index() -> carboy.Response:
        response = make_response(f"hi {g.user}", 201)
        response.headers["X-Extra"] = "1"
        return response

    rv = client.get("/")
    assert (rv.status_code, rv.data, rv.headers["X-Extra"]) == (201, b"hi ann", "1")


def test_setup_after_first_request_is_refused(app: carboy.Carboy, client) -> None:
    @app.route("/")
    def index() -> str:
        return "x"

    client.get("/")
    with pytest.raises(AssertionError, match="first request"):
        app.add_url_rule("/late", "late", index)


def test_endpoint_decorator_and_overwrite_check(app: carboy.Carboy, client) -> None:
    app.add_url_rule("/e", "named")

    @app.endpoint("named")
    def named() -> str:
        return "named"

    with pytest.raises(AssertionError, match="overwriting"):
        app.add_url_rule("/e2", "named", lambda: "other")
    assert client.get("/e").data == b"named"


def test_methods_as_string_is_rejected(app: carboy.Carboy) -> None:
    with pytest.raises(TypeError, match="list of method names"):
        app.add_url_rule("/x", "x", lambda: "x", methods="POST")


def test_async_views_and_hooks_under_wsgi(app: carboy.Carboy, client) -> None:
    @app.before_request
    async def before() -> None:
        g.seen = request.path

    @app.route("/async")
    async def view() -> str:
        return f"async {g.seen}"

    assert client.get("/async").data == b"async /async"


def test_streamed_response_with_context(app: carboy.Carboy, client) -> None:
    @app.route("/stream")
    def stream() -> t.Any:
        @carboy.stream_with_context
        def generate() -> t.Iterator[str]:
            yield "a"
            yield request.args["x"]

        return generate()

    assert client.get("/stream?x=b").data == b"ab"


def test_app_name_instance_path_and_config(app: carboy.Carboy) -> None:
    assert app.name == "test_app"
    assert app.config["SESSION_COOKIE_NAME"] == "session"
    assert app.config["MAX_FORM_PARTS"] == 1000
    assert app.testing is True
    with pytest.raises(ValueError, match="absolute"):
        carboy.Carboy(__name__, instance_path="relative")


def test_subclass_overrides_are_honoured() -> None:
    class Custom(carboy.Carboy):
        def process_response(self, response: carboy.Response) -> carboy.Response:
            response = super().process_response(response)
            response.headers["X-Custom"] = "1"
            return response

    app = Custom(__name__)

    @app.route("/")
    def index() -> str:
        return "x"

    assert app.test_client().get("/").headers["X-Custom"] == "1"


def test_instance_replacement_is_honoured() -> None:
    app = carboy.Carboy(__name__)
    original = app.make_response

    def make_response(rv: t.Any) -> carboy.Response:
        response = original(rv)
        response.headers["X-Replaced"] = "1"
        return response

    app.make_response = make_response  # type: ignore[method-assign]

    @app.route("/")
    def index() -> str:
        return "x"

    assert app.test_client().get("/").headers["X-Replaced"] == "1"


def test_app_is_freed_when_its_last_reference_goes() -> None:
    # No reference cycle through the app (such as the ASGI ``__call__`` marker): CPython frees
    # it at refcount zero, without waiting for the garbage collector.
    gc.disable()
    try:
        app = carboy.Carboy(__name__)
        ref = weakref.ref(app)
        del app
        assert ref() is None
    finally:
        gc.enable()


def test_instance_path_of_a_namespace_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two projects share the namespace package "nsdemo"; the instance folder belongs to the
    # project that holds the app's own subpackage, beside its top-level namespace folder.
    for project in ("one", "two"):
        folder = tmp_path / project / "nsdemo" / f"pkg_{project}"
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path / project))
    for name in ("nsdemo", "nsdemo.pkg_one", "nsdemo.pkg_two"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    app = carboy.Carboy("nsdemo.pkg_two")
    assert app.instance_path == str(tmp_path / "two" / "instance")


@pytest.mark.parametrize(
    ("port", "server_name", "expected"),
    [(None, "example.test:8080", 8080), (0, "example.test:8080", 0), (None, "x:0", 0)],
)
def test_run_takes_port_zero_as_given(
    monkeypatch: pytest.MonkeyPatch, port: int | None, server_name: str, expected: int
) -> None:
    import werkzeug.serving

    seen: list[int] = []
    monkeypatch.setattr(werkzeug.serving, "run_simple", lambda host, p, *a, **k: seen.append(p))
    app = carboy.Carboy(__name__)
    app.config["SERVER_NAME"] = server_name
    app.run(port=port)
    assert seen == [expected]


def test_hooks_added_to_the_registries_directly_are_seen(app: carboy.Carboy, client) -> None:
    # Flask reads the hook registries on every request; extensions (Flask-Caching) append to
    # them from inside a view and expect the hook to run on that same response.
    def tag(response: carboy.Response) -> carboy.Response:
        response.headers["X-Tag"] = "added"
        return response

    @app.route("/plain")
    def plain() -> str:
        return "plain"

    @app.route("/adds")
    def adds() -> str:
        if tag not in app.after_request_funcs[None]:
            app.after_request_funcs[None].append(tag)
        return "adds"

    assert "X-Tag" not in client.get("/plain").headers
    assert client.get("/adds").headers["X-Tag"] == "added"
    assert client.get("/plain").headers["X-Tag"] == "added"
    app.after_request_funcs[None].remove(tag)
    assert "X-Tag" not in client.get("/plain").headers
    # Replacing a view function in the registry is seen too.
    app.view_functions["plain"] = lambda: "replaced"
    assert client.get("/plain").data == b"replaced"


def test_async_view_sees_a_hook_added_during_its_request(app: carboy.Carboy, client) -> None:
    def tag(response: carboy.Response) -> carboy.Response:
        response.headers["X-Tag"] = "added"
        return response

    @app.route("/async-adds")
    async def adds() -> str:
        app.after_request_funcs.setdefault(None, []).append(tag)
        return "adds"

    assert client.get("/async-adds").headers["X-Tag"] == "added"
