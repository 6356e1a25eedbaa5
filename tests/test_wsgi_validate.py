"""The app passes the standard library's WSGI conformance checker."""

from __future__ import annotations

import io
import typing as t
import warnings
from wsgiref.validate import validator

from werkzeug.test import EnvironBuilder

import carboy


def _run(app: t.Any, **kwargs: t.Any) -> tuple[str, list[tuple[str, str]], bytes]:
    environ = EnvironBuilder(**kwargs).get_environ()
    environ["wsgi.errors"] = io.StringIO()
    captured: dict[str, t.Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Any:
        captured["status"], captured["headers"] = status, headers
        return lambda data: None

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        if hasattr(body, "close"):
            body.close()
    return captured["status"], captured["headers"], data


def test_requests_pass_wsgiref_validate(app: carboy.Carboy) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/")
    def index() -> str:
        return "hello"

    @app.route("/json/<int:n>")
    def json_view(n: int) -> dict[str, int]:
        return {"n": n}

    @app.route("/form", methods=["POST"])
    def form() -> dict[str, str]:
        return dict(carboy.request.form)

    @app.route("/stream")
    def stream() -> t.Any:
        return (f"{i}," for i in range(3))

    @app.route("/session")
    def with_session() -> str:
        carboy.session["n"] = carboy.session.get("n", 0) + 1
        return "s"

    @app.route("/error")
    def error() -> str:
        raise RuntimeError("x")

    checked = validator(app)
    cases = [
        ({"path": "/"}, "200 OK", b"hello"),
        ({"path": "/json/3"}, "200 OK", b'{"n":3}\n'),
        ({"path": "/form", "method": "POST", "data": {"a": "b"}}, "200 OK", b'{"a":"b"}\n'),
        ({"path": "/stream"}, "200 OK", b"0,1,2,"),
        ({"path": "/session"}, "200 OK", b"s"),
        ({"path": "/missing"}, "404 NOT FOUND", None),
        ({"path": "/", "method": "POST"}, "405 METHOD NOT ALLOWED", None),
        ({"path": "/", "method": "HEAD"}, "200 OK", b""),
        ({"path": "/error"}, "500 INTERNAL SERVER ERROR", None),
        ({"path": "/static/style.css"}, "200 OK", b"body { color: red; }\n"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # wsgiref.validate reports problems as warnings
        for kwargs, status, body in cases:
            got_status, headers, data = _run(checked, **kwargs)
            assert got_status == status, kwargs
            if body is not None:
                assert data == body, kwargs
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in headers)
