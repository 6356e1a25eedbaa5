from __future__ import annotations

import threading
import typing as t

import pytest

import carboy
from carboy import current_app, g, request, session
from carboy.ctx import copy_current_request_context, has_app_context, has_request_context


def test_proxies_outside_context_raise_clear_errors() -> None:
    with pytest.raises(RuntimeError, match="outside of application context"):
        current_app.name  # noqa: B018
    with pytest.raises(RuntimeError, match="outside of request context"):
        request.path  # noqa: B018
    assert not has_app_context()
    assert not has_request_context()


def test_app_context_and_g(app: carboy.Carboy) -> None:
    with app.app_context():
        assert current_app._get_current_object() is app  # type: ignore[attr-defined]
        g.value = 1
        assert g.get("value") == 1
        assert "value" in g
        assert g.pop("value") == 1
        assert g.setdefault("other", 2) == 2
        assert has_app_context() and not has_request_context()
    assert not has_app_context()


def test_test_request_context(app: carboy.Carboy) -> None:
    @app.route("/items/<int:n>", methods=["POST"])
    def items(n: int) -> str:
        return str(n)

    with app.test_request_context("/items/4?x=1", method="POST", data={"a": "b"}):
        assert request.path == "/items/4"
        assert request.args["x"] == "1"
        assert request.form["a"] == "b"
        assert request.endpoint == "items"
        assert request.view_args == {"n": 4}
        assert request.url_rule is not None and request.url_rule.rule == "/items/<int:n>"
        assert has_request_context()
    with app.test_request_context("/nothing"):
        assert request.routing_exception is not None
        assert request.routing_exception.code == 404  # type: ignore[attr-defined]


def test_request_context_from_environ(app: carboy.Carboy) -> None:
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder("/a/b").get_environ()
    with app.request_context(environ):
        assert request.path == "/a/b"


def test_copy_current_request_context_in_thread(app: carboy.Carboy, client) -> None:
    results: list[str] = []

    @app.route("/")
    def index() -> str:
        session["k"] = "from view"

        @copy_current_request_context
        def work() -> None:
            # Flask 3.1 copies the request and session, not g (a new app context is pushed).
            results.append(f"{request.path} {session.get('k')} {'marker' in g}")

        thread = threading.Thread(target=work)
        thread.start()
        thread.join(10)
        return "ok"

    assert client.get("/").data == b"ok"
    assert results == ["/ from view False"]


def test_contexts_released_when_view_raises(app: carboy.Carboy, client) -> None:
    teardowns: list[str] = []
    app.teardown_appcontext(lambda exc: teardowns.append(type(exc).__name__))

    @app.route("/boom")
    def boom() -> str:
        raise LookupError("x")

    with pytest.raises(LookupError):
        client.get("/boom")
    assert teardowns == ["LookupError"]
    assert not has_request_context() and not has_app_context()


def test_contexts_released_when_client_goes_away(app: carboy.Carboy) -> None:
    closed: list[bool] = []

    @app.route("/stream")
    def stream() -> t.Any:
        def generate() -> t.Iterator[str]:
            try:
                yield "first"
                yield request.path
                yield "never"
            finally:
                closed.append(True)

        return carboy.stream_with_context(generate())

    environ = app.test_request_context("/stream").request.environ
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: lambda data: None)
    iterator = iter(body)
    assert next(iterator) == b"first"
    # The server stops reading (client disconnected) and closes the body.
    t.cast(t.Any, body).close()
    assert closed == [True]
    assert not has_request_context() and not has_app_context()


def test_nested_pushes_and_wrong_pop(app: carboy.Carboy) -> None:
    ctx = app.test_request_context("/")
    with ctx:
        with ctx:
            assert has_request_context()
        assert has_request_context()
    other = app.app_context()
    first = app.app_context()
    first.push()
    other.push()
    with pytest.raises(AssertionError, match="wrong app context"):
        first.pop()
    # The failed pop still restored the state from before ``first`` was pushed.
    assert not has_app_context()


def test_context_isolated_between_threads(app: carboy.Carboy) -> None:
    seen: list[bool] = []
    with app.test_request_context("/"):
        thread = threading.Thread(target=lambda: seen.append(has_request_context()))
        thread.start()
        thread.join(10)
    assert seen == [False]
