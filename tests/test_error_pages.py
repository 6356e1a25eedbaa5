"""Default 404 pages: when nothing could inspect the Response of a 404 (no error handler, no
after hook or ``after_this_request`` function, no session, no ``request_finished`` receiver),
carboy writes the page Werkzeug renders for :class:`~werkzeug.exceptions.NotFound`, rendered
once, instead of building a Response for every miss. These tests check that the answer is
Werkzeug's to the byte, under WSGI, Flask's method chain and ASGI (conftest's ``app``), and
that anything which could inspect the Response still gets one.
"""

from __future__ import annotations

import typing as t

import pytest
from werkzeug.exceptions import NotFound

import carboy
import carboy.wrappers
from carboy import abort, after_this_request, session, signals


def werkzeug_page() -> tuple[int, list[tuple[str, str]], bytes]:
    """Status code, headers and body (ASGI carries no reason phrase, and lower-cases header
    names)."""
    response = NotFound().get_response()
    return response.status_code, lowered(response.headers.items()), response.get_data()


def lowered(headers: t.Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in headers]


def test_a_miss_is_werkzeugs_page(app: carboy.Carboy) -> None:
    @app.get("/gone")
    def gone() -> t.Any:
        abort(404)

    status, headers, body = werkzeug_page()
    client = app.test_client()
    for path in ("/nothing/here", "/gone", "/nothing/again"):
        response = client.get(path)
        assert response.status_code == status
        assert lowered(response.headers.items()) == headers
        assert response.data == body
        head = client.head(path)
        assert head.status_code == status
        assert lowered(head.headers.items()) == headers
        assert head.data == b""


def test_an_async_view_aborting_gets_the_page(app: carboy.Carboy) -> None:
    @app.get("/gone")
    async def gone() -> t.Any:
        abort(404)

    client = app.test_client()
    client.get("/warm-up")
    response = client.get("/gone")
    assert (response.status_code, response.data) == werkzeug_page()[::2]


@pytest.mark.parametrize("protocol", ["wsgi", "asgi"])
def test_the_page_is_rendered_once(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carboy.wrappers, "_not_found", None, raising=False)
    renders: list[NotFound] = []
    get_response = NotFound.get_response

    def counted(self: NotFound, *args: t.Any, **kwargs: t.Any) -> t.Any:
        renders.append(self)
        return get_response(self, *args, **kwargs)

    monkeypatch.setattr(NotFound, "get_response", counted)
    app = carboy.Carboy(__name__)
    if protocol == "asgi":
        app.test_client_class = carboy.testing.ASGIClient
    client = app.test_client()
    for i in range(5):
        assert client.get(f"/missing/{i}").status_code == 404
    assert len(renders) == 1


def test_a_changed_default_description_is_rendered(
    app: carboy.Carboy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app.test_client()
    assert b"was not found" in client.get("/first").data
    monkeypatch.setattr(NotFound, "description", "<p>Nothing here.</p>")
    assert b"Nothing here." in client.get("/second").data


def test_an_own_description_is_rendered(app: carboy.Carboy) -> None:
    @app.get("/gone")
    def gone() -> t.Any:
        abort(404, "This page left.")

    response = app.test_client().get("/gone")
    assert response.status_code == 404
    assert b"This page left." in response.data
    assert b"was not found" not in response.data


def test_an_error_handler_answers(app: carboy.Carboy) -> None:
    @app.errorhandler(404)
    def missing(e: NotFound) -> tuple[str, int]:
        return "custom missing", 404

    response = app.test_client().get("/nothing")
    assert (response.status_code, response.data) == (404, b"custom missing")


def test_an_after_hook_gets_a_response(app: carboy.Carboy) -> None:
    seen: list[t.Any] = []

    @app.after_request
    def after(response: carboy.Response) -> carboy.Response:
        seen.append(response)
        response.headers["X-Seen"] = "yes"
        return response

    response = app.test_client().get("/nothing")
    assert response.status_code == 404
    assert response.headers["X-Seen"] == "yes"
    assert isinstance(seen[0], app.response_class)
    assert seen[0].status_code == 404


def test_after_this_request_and_the_session_see_the_404(app: carboy.Carboy) -> None:
    @app.get("/gone")
    def gone() -> t.Any:
        session["visited"] = True

        @after_this_request
        def mark(response: carboy.Response) -> carboy.Response:
            response.headers["X-Marked"] = "yes"
            return response

        abort(404)

    response = app.test_client().get("/gone")
    assert response.status_code == 404
    assert response.headers["X-Marked"] == "yes"
    assert "session=" in response.headers["Set-Cookie"]
    assert response.data == werkzeug_page()[2]


def test_a_request_finished_receiver_gets_the_response(app: carboy.Carboy) -> None:
    finished: list[int] = []

    def receiver(sender: carboy.Carboy, response: carboy.Response, **extra: t.Any) -> None:
        finished.append(response.status_code)

    with signals.request_finished.connected_to(receiver, app):
        assert app.test_client().get("/nothing").status_code == 404
    assert finished == [404]


def test_a_custom_response_class_is_used(app: carboy.Carboy) -> None:
    class Tagged(carboy.Response):
        def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
            super().__init__(*args, **kwargs)
            self.headers["X-Tagged"] = "yes"

    app.response_class = Tagged
    response = app.test_client().get("/nothing")
    assert response.status_code == 404
    assert response.headers["X-Tagged"] == "yes"
