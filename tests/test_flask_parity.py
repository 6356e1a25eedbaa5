"""The same app, written once, answers the same under Flask and under carboy.

Flask 3.1 is installed by the test extra as the reference. Each request's status, headers
(except Date) and body must be equal.
"""

from __future__ import annotations

import types
import typing as t

import flask
import pytest

import carboy


def build(module: types.ModuleType) -> t.Any:
    app = (module.Flask if module is flask else module.Carboy)("parity")
    app.config.update(SECRET_KEY="parity", PROPAGATE_EXCEPTIONS=False)
    request, session, abort = module.request, module.session, module.abort
    bp = module.Blueprint("bp", "parity", url_prefix="/bp")

    @app.route("/")
    def index() -> str:
        return "index"

    @app.route("/json/<int:n>")
    def json_view(n: int) -> t.Any:
        return {"n": n, "q": request.args.getlist("q"), "nested": {"b": [1.5, None, True]}}

    @app.route("/list")
    def list_view() -> t.Any:
        return [1, "two", {"three": 3}]

    @app.route("/tuple")
    def tuple_view() -> t.Any:
        return "made", 201, {"X-Thing": "1"}

    @app.route("/folder/")
    def folder() -> str:
        return "folder"

    @app.route("/form", methods=["POST"])
    def form() -> t.Any:
        return {"form": request.form.to_dict(flat=False), "json": request.get_json(silent=True)}

    @app.route("/abort/<int:code>")
    def do_abort(code: int) -> str:
        abort(code)

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.route("/session/set")
    def session_set() -> str:
        session["k"] = "v"
        return "set"

    @app.route("/session/get")
    def session_get() -> str:
        return str(session.get("k"))

    @app.route("/redirect")
    def redirect_view() -> t.Any:
        return module.redirect(module.url_for("json_view", n=1, q="x"))

    @app.route("/stream")
    def stream() -> t.Any:
        return (str(i) for i in range(3))

    @app.after_request
    def tag(response: t.Any) -> t.Any:
        response.headers["X-After"] = request.path
        return response

    @app.errorhandler(418)
    def teapot(e: Exception) -> t.Any:
        return {"teapot": True}, 418

    @bp.route("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name} from {request.blueprint}"

    @bp.before_request
    def bp_before() -> t.Any:
        if request.args.get("stop"):
            return "stopped by bp", 202
        return None

    app.register_blueprint(bp)
    return app


REQUESTS: list[tuple[str, str, dict[str, t.Any]]] = [
    ("GET", "/", {}),
    ("HEAD", "/", {}),
    ("OPTIONS", "/", {}),
    ("POST", "/", {}),
    ("GET", "/json/5?q=a&q=b", {}),
    ("GET", "/json/x", {}),
    ("GET", "/list", {}),
    ("GET", "/tuple", {}),
    ("GET", "/folder", {}),
    ("GET", "/folder/", {}),
    ("POST", "/form", {"data": {"a": "1", "b": "2"}}),
    ("POST", "/form", {"json": {"a": [1, 2]}}),
    ("GET", "/abort/403", {}),
    ("GET", "/abort/418", {}),
    ("GET", "/boom", {}),
    ("GET", "/missing", {}),
    ("GET", "/session/set", {}),
    ("GET", "/redirect", {}),
    ("GET", "/stream", {}),
    ("GET", "/bp/hello/ann", {}),
    ("GET", "/bp/hello/ann?stop=1", {}),
    ("GET", "/static/nothing.txt", {}),
]


def _answer(client: t.Any, method: str, path: str, kwargs: dict[str, t.Any]) -> tuple[t.Any, ...]:
    rv = client.open(path, method=method, **kwargs)
    headers = sorted(
        (k, _unsigned(v) if k == "Set-Cookie" else v) for k, v in rv.headers.items() if k != "Date"
    )
    return rv.status, headers, rv.get_data()


def _unsigned(cookie: str) -> str:
    """*cookie* with the session value's timestamp and signature cut off: the two apps sign
    the same payload, but the timestamp is the second each signed it in, and the clock may
    tick between them."""
    value, sep, attributes = cookie.partition(";")
    name, _, payload = value.partition("=")
    return f"{name}={payload.rsplit('.', 2)[0]}{sep}{attributes}"


@pytest.mark.parametrize(("method", "path", "kwargs"), REQUESTS, ids=lambda v: str(v))
def test_same_answer_as_flask(method: str, path: str, kwargs: dict[str, t.Any]) -> None:
    expected = _answer(build(flask).test_client(), method, path, kwargs)
    got = _answer(build(carboy).test_client(), method, path, kwargs)
    assert got == expected


def test_session_cookie_round_trip_matches_flask() -> None:
    answers = []
    for module in (flask, carboy):
        client = build(module).test_client()
        client.get("/session/set")
        answers.append(_answer(client, "GET", "/session/get", {}))
    assert answers[0] == answers[1]
