"""The test client, the environ builder and the CLI runner (``carboy.testing``)."""

from __future__ import annotations

import importlib.metadata
import json
import typing as t

import click
import pytest
import werkzeug.test
from werkzeug.wrappers import Request as BaseRequest

import carboy
from carboy import Carboy, g, request, session
from carboy.cli import ScriptInfo
from carboy.globals import _cv_app, _cv_request
from carboy.json.provider import DefaultJSONProvider
from carboy.sessions import SecureCookieSessionInterface, SessionInterface
from carboy.testing import (
    CarboyClient,
    CarboyCliRunner,
    EnvironBuilder,
    FlaskClient,
    FlaskCliRunner,
)


def test_flask_aliases() -> None:
    assert FlaskClient is CarboyClient
    assert FlaskCliRunner is CarboyCliRunner


def test_test_client_class(app: Carboy) -> None:
    client = app.test_client()
    assert isinstance(client, CarboyClient)
    assert client.application is app

    class MyClient(CarboyClient):
        pass

    app.test_client_class = MyClient
    assert type(app.test_client()) is MyClient


# -- EnvironBuilder --------------------------------------------------------------------------


def test_builder_defaults(app: Carboy) -> None:
    builder = EnvironBuilder(app)
    assert builder.path == "/"
    assert builder.base_url == "http://localhost/"
    environ = builder.get_environ()
    builder.close()
    assert environ["HTTP_HOST"] == "localhost"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["SCRIPT_NAME"] == ""


def test_builder_uses_config(app: Carboy) -> None:
    app.config.update(
        SERVER_NAME="example.test:8080",
        APPLICATION_ROOT="/root",
        PREFERRED_URL_SCHEME="https",
    )
    builder = EnvironBuilder(app, "/page")
    environ = builder.get_environ()
    builder.close()
    assert builder.base_url == "https://example.test:8080/root/"
    assert environ["HTTP_HOST"] == "example.test:8080"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["SCRIPT_NAME"] == "/root"
    assert environ["PATH_INFO"] == "/page"


def test_builder_subdomain_and_scheme(app: Carboy) -> None:
    app.config["SERVER_NAME"] = "example.test"
    builder = EnvironBuilder(app, "/", subdomain="api", url_scheme="https")
    assert builder.base_url == "https://api.example.test/"
    builder.close()


def test_builder_path_with_query_and_host(app: Carboy) -> None:
    builder = EnvironBuilder(app, "https://other.test/x/y?a=1&b=2")
    environ = builder.get_environ()
    builder.close()
    assert environ["HTTP_HOST"] == "other.test"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["PATH_INFO"] == "/x/y"
    assert environ["QUERY_STRING"] == "a=1&b=2"


def test_builder_explicit_base_url(app: Carboy) -> None:
    builder = EnvironBuilder(app, "/p", base_url="http://base.test/app/")
    environ = builder.get_environ()
    builder.close()
    assert environ["HTTP_HOST"] == "base.test"
    assert environ["SCRIPT_NAME"] == "/app"
    with pytest.raises(ValueError):
        EnvironBuilder(app, "/", base_url="http://x/", subdomain="a")
    with pytest.raises(ValueError):
        EnvironBuilder(app, "/", base_url="http://x/", url_scheme="https")


def test_builder_json_uses_app_provider(app: Carboy) -> None:
    class Provider(DefaultJSONProvider):
        def dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
            return json.dumps({"wrapped": obj})

    app.json = Provider(app)
    builder = EnvironBuilder(app, json={"a": 1})
    assert builder.json_dumps([1]) == '{"wrapped": [1]}'
    environ = builder.get_environ()
    builder.close()
    assert environ["CONTENT_TYPE"] == "application/json"
    body = environ["wsgi.input"].read()
    assert json.loads(body) == {"wrapped": {"a": 1}}


def test_test_request_context_uses_builder(app: Carboy) -> None:
    app.config["SERVER_NAME"] = "example.test"
    with app.test_request_context("/x?q=1", subdomain="api", method="POST"):
        assert request.host == "api.example.test"
        assert request.path == "/x"
        assert request.args["q"] == "1"
        assert request.method == "POST"


# -- requests ---------------------------------------------------------------------------------


def test_environ_base(app: Carboy) -> None:
    @app.route("/")
    def index() -> dict[str, t.Any]:
        return {"addr": request.remote_addr, "ua": request.user_agent.string}

    client = app.test_client()
    data = client.get("/").get_json()
    assert data["addr"] == "127.0.0.1"
    assert data["ua"] == f"Werkzeug/{importlib.metadata.version('werkzeug')}"

    client.environ_base["REMOTE_ADDR"] = "10.0.0.9"
    assert client.get("/").get_json()["addr"] == "10.0.0.9"
    # Per-request environ_base wins over the client's.
    rv = client.get("/", environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert rv.get_json()["addr"] == "10.0.0.1"


def test_json_body_and_response(app: Carboy) -> None:
    @app.post("/echo")
    def echo() -> t.Any:
        return {"got": request.get_json(), "is_json": request.is_json}

    client = app.test_client()
    rv = client.post("/echo", json={"a": [1, 2]})
    assert rv.status_code == 200
    assert rv.json == {"got": {"a": [1, 2]}, "is_json": True}
    assert rv.json_module is app.json


def test_response_json_uses_app_provider(app: Carboy) -> None:
    class Provider(DefaultJSONProvider):
        def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
            return {"via": "provider", **json.loads(s)}

    app.json = Provider(app)

    @app.route("/")
    def index() -> t.Any:
        return app.response_class('{"x": 1}', mimetype="application/json")

    assert app.test_client().get("/").get_json() == {"via": "provider", "x": 1}


def test_form_data_query_string_headers(app: Carboy) -> None:
    @app.route("/form", methods=["POST"])
    def form() -> t.Any:
        return {
            "form": request.form.to_dict(),
            "args": request.args.to_dict(flat=False),
            "header": request.headers.get("X-Test"),
        }

    client = app.test_client()
    rv = client.post(
        "/form",
        data={"name": "carboy"},
        query_string={"a": ["1", "2"]},
        headers={"X-Test": "yes"},
    )
    assert rv.get_json() == {
        "form": {"name": "carboy"},
        "args": {"a": ["1", "2"]},
        "header": "yes",
    }
    rv = client.post("/form?a=3", data="raw", content_type="text/plain")
    assert rv.get_json()["args"] == {"a": ["3"]}


def test_raw_data(app: Carboy) -> None:
    @app.put("/raw")
    def raw() -> bytes:
        return request.get_data()

    assert app.test_client().put("/raw", data=b"\x00abc").data == b"\x00abc"


def test_follow_redirects(app: Carboy) -> None:
    @app.route("/old")
    def old() -> t.Any:
        return carboy.redirect("/middle")

    @app.route("/middle")
    def middle() -> t.Any:
        return carboy.redirect("/new")

    @app.route("/new")
    def new() -> str:
        return "arrived"

    client = app.test_client()
    rv = client.get("/old")
    assert rv.status_code == 302
    assert rv.location == "/middle"

    rv = client.get("/old", follow_redirects=True)
    assert rv.status_code == 200
    assert rv.data == b"arrived"
    assert rv.request.path == "/new"
    assert [r.request.path for r in rv.history] == ["/old", "/middle"]


def test_open_with_builder_dict_and_request(app: Carboy) -> None:
    @app.route("/who", methods=["GET", "POST"])
    def who() -> t.Any:
        return {"method": request.method, "addr": request.remote_addr}

    client = app.test_client()

    builder = EnvironBuilder(app, "/who", method="POST")
    assert client.open(builder).get_json() == {"method": "POST", "addr": "127.0.0.1"}
    builder.close()

    wz_builder = werkzeug.test.EnvironBuilder("/who")
    assert client.open(wz_builder).get_json()["method"] == "GET"
    environ = wz_builder.get_environ()
    wz_builder.close()

    rv = client.open(environ)
    assert rv.get_json() == {"method": "GET", "addr": "127.0.0.1"}

    req = BaseRequest(EnvironBuilder(app, "/who", method="POST").get_environ())
    assert client.open(req).get_json()["method"] == "POST"


def test_http_method_helpers(app: Carboy) -> None:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    @app.route("/", methods=methods)
    def index() -> str:
        return request.method

    client = app.test_client()
    for method in methods:
        rv = getattr(client, method.lower())("/")
        assert rv.status_code == 200
        if method != "OPTIONS":
            assert rv.data == method.encode()
    assert client.head("/").data == b""


def test_propagates_exceptions(app: Carboy) -> None:
    @app.route("/boom")
    def boom() -> str:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        app.test_client().get("/boom")


# -- cookies ----------------------------------------------------------------------------------


def test_cookies_round_trip(app: Carboy) -> None:
    @app.route("/set")
    def set_() -> t.Any:
        rv = app.response_class("set")
        rv.set_cookie("flavour", "oat")
        return rv

    @app.route("/read")
    def read() -> str:
        return request.cookies.get("flavour", "none")

    client = app.test_client()
    assert client.get("/read").data == b"none"
    client.get("/set")
    cookie = client.get_cookie("flavour")
    assert cookie is not None
    assert cookie.value == "oat"
    assert client.get("/read").data == b"oat"

    client.set_cookie("flavour", "rye")
    assert client.get("/read").data == b"rye"
    client.delete_cookie("flavour")
    assert client.get_cookie("flavour") is None
    assert client.get("/read").data == b"none"


def test_cookies_disabled(app: Carboy) -> None:
    @app.route("/set")
    def set_() -> t.Any:
        rv = app.response_class("set")
        rv.set_cookie("flavour", "oat")
        return rv

    client = app.test_client(use_cookies=False)
    client.get("/set")
    with pytest.raises(TypeError):
        client.get_cookie("flavour")


# -- session_transaction ----------------------------------------------------------------------


def test_session_transaction(app: Carboy) -> None:
    @app.route("/")
    def index() -> str:
        return str(session.get("user"))

    @app.route("/login")
    def login() -> str:
        session["user"] = "ada"
        return "ok"

    client = app.test_client()
    with client.session_transaction() as sess:
        assert "user" not in sess
        sess["user"] = "grace"
    assert client.get("/").data == b"grace"

    client.get("/login")
    with client.session_transaction() as sess:
        assert sess["user"] == "ada"
        sess["cart"] = [1, 2]
    with client.session_transaction() as sess:
        assert dict(sess) == {"user": "ada", "cart": [1, 2]}


def test_session_transaction_cookie_scope(app: Carboy) -> None:
    app.config["SERVER_NAME"] = "example.test"

    @app.route("/")
    def index() -> str:
        return str(session.get("n"))

    client = app.test_client()
    with client.session_transaction() as sess:
        sess["n"] = 1
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"], domain="example.test")
    assert cookie is not None
    assert client.get("/").data == b"1"


def test_session_transaction_needs_cookies(app: Carboy) -> None:
    client = app.test_client(use_cookies=False)
    with (
        pytest.raises(TypeError, match="Cookies are disabled"),
        client.session_transaction(),
    ):
        pass


def test_session_transaction_without_session(app: Carboy) -> None:
    app.secret_key = None
    client = app.test_client()
    with pytest.raises(RuntimeError), client.session_transaction():
        pass


def test_session_transaction_null_session(app: Carboy) -> None:
    saved: list[t.Any] = []

    class NullOnly(SecureCookieSessionInterface):
        def open_session(self, app: Carboy, request: t.Any) -> t.Any:
            return self.make_null_session(app)

        def save_session(self, app: Carboy, session: t.Any, response: t.Any) -> None:
            saved.append(session)

    app.session_interface = NullOnly()
    client = app.test_client()
    with client.session_transaction() as sess:
        assert app.session_interface.is_null_session(sess)
    assert saved == []
    assert client.get_cookie(app.config["SESSION_COOKIE_NAME"]) is None


def test_session_transaction_custom_interface(app: Carboy) -> None:
    store: dict[str, dict[str, t.Any]] = {}

    class Interface(SessionInterface):
        def open_session(self, app: Carboy, request: t.Any) -> t.Any:
            from carboy.sessions import SecureCookieSession

            sid = request.cookies.get("sid", "new")
            return SecureCookieSession(store.get(sid, {}))

        def save_session(self, app: Carboy, session: t.Any, response: t.Any) -> None:
            store["s1"] = dict(session)
            response.set_cookie("sid", "s1")

    app.session_interface = Interface()

    @app.route("/")
    def index() -> str:
        return str(session.get("k"))

    client = app.test_client()
    with client.session_transaction() as sess:
        sess["k"] = "v"
    assert store == {"s1": {"k": "v"}}
    assert client.get_cookie("sid") is not None
    assert client.get("/").data == b"v"


# -- context preservation ---------------------------------------------------------------------


def test_with_client_preserves_contexts(app: Carboy) -> None:
    torn_down: list[str] = []

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        torn_down.append(request.path)

    @app.route("/<name>")
    def index(name: str) -> str:
        g.name = name
        session["name"] = name
        return name

    client = app.test_client()
    with client:
        client.get("/one?x=1")
        # The request finished (teardown ran, as in Flask) but its contexts stay usable.
        assert torn_down == ["/one"]
        assert request.path == "/one"
        assert request.args["x"] == "1"
        assert session["name"] == "one"
        assert g.name == "one"

        client.get("/two")
        assert request.path == "/two"
        assert g.name == "two"
        assert "two" not in torn_down
        assert torn_down[-1] == "/two"
    assert _cv_request.get(None) is None
    assert _cv_app.get(None) is None


def test_without_with_contexts_are_popped(app: Carboy) -> None:
    @app.route("/")
    def index() -> str:
        return "x"

    client = app.test_client()
    client.get("/")
    assert _cv_request.get(None) is None
    with pytest.raises(RuntimeError):
        request.path  # noqa: B018


def test_with_client_after_exception(app: Carboy) -> None:
    torn_down: list[str] = []

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        torn_down.append(request.path)

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("boom")

    @app.route("/ok")
    def ok() -> str:
        return "ok"

    client = app.test_client()
    with client:
        with pytest.raises(ValueError):
            client.get("/boom")
        # As in Flask, a propagated error leaves no request context behind.
        assert _cv_request.get(None) is None
        assert torn_down == ["/boom"]
        client.get("/ok")
        assert request.path == "/ok"
    assert _cv_request.get(None) is None
    # The failed request's contexts were not re-pushed later (no second teardown).
    assert torn_down.count("/boom") == 1


def test_with_client_follow_redirects_keeps_last_request(app: Carboy) -> None:
    torn_down: list[str] = []

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        torn_down.append(request.path)

    @app.route("/old")
    def old() -> t.Any:
        return carboy.redirect("/new")

    @app.route("/new")
    def new() -> str:
        g.final = True
        return "new"

    client = app.test_client()
    with client:
        client.get("/old", follow_redirects=True)
        assert request.path == "/new"
        assert g.final is True
    assert torn_down.count("/old") == 1
    assert _cv_request.get(None) is None


def test_nested_with_client_fails(app: Carboy) -> None:
    client = app.test_client()
    with client, pytest.raises(RuntimeError, match="Cannot nest"), client:
        pass
    # The client is usable again afterwards.
    with client:
        pass


def test_with_client_returns_client(app: Carboy) -> None:
    client = app.test_client()
    with client as c:
        assert c is client
        assert client.preserve_context
    assert not client.preserve_context


def test_with_client_and_session_transaction(app: Carboy) -> None:
    @app.route("/")
    def index() -> str:
        return str(session.get("k"))

    client = app.test_client()
    with client:
        with client.session_transaction() as sess:
            sess["k"] = "v"
        assert client.get("/").data == b"v"
        assert session["k"] == "v"


# -- CLI runner -------------------------------------------------------------------------------


def test_cli_runner_invokes_app_cli(app: Carboy) -> None:
    @app.cli.command("hello")
    @click.option("--name", default="World")
    def hello(name: str) -> None:
        click.echo(f"Hello, {name}! ({carboy.current_app.name})")

    runner = app.test_cli_runner()
    assert isinstance(runner, CarboyCliRunner)
    assert runner.app is app
    result = runner.invoke(args=["hello"])
    assert result.exit_code == 0, result.output
    assert result.output == f"Hello, World! ({app.name})\n"
    result = runner.invoke(args=["hello", "--name", "Ada"])
    assert "Hello, Ada!" in result.output


def test_cli_runner_other_command_and_obj(app: Carboy) -> None:
    @click.command()
    @click.pass_obj
    def show(obj: ScriptInfo) -> None:
        click.echo(type(obj).__name__)
        click.echo(str(obj.load_app() is app))

    runner = app.test_cli_runner()
    result = runner.invoke(show)
    assert result.output == "ScriptInfo\nTrue\n"

    result = runner.invoke(show, obj=ScriptInfo(create_app=lambda: app))
    assert result.output == "ScriptInfo\nTrue\n"


def test_cli_runner_class(app: Carboy) -> None:
    class MyRunner(CarboyCliRunner):
        pass

    app.test_cli_runner_class = MyRunner
    assert type(app.test_cli_runner()) is MyRunner
