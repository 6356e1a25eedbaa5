"""The seven scenarios: what each one requests, and what counts as a right answer.

Both the in-process and the end-to-end measurements use these definitions, and both check
every framework's answer before timing it, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import json
import typing as t
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.cookies import SimpleCookie

from .apps.common import HELLO, ITEMS, SESSION_COOKIE, STATIC_BYTES, TITLE


@dataclass(frozen=True)
class Request:
    """One HTTP request, independent of how it is delivered (environ, scope or socket)."""

    method: str
    path: str
    query: str = ""
    body: bytes = b""
    #: Headers besides Host (and, over the network, whatever the client adds).
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def target(self) -> str:
        """The request target: path and query string."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def with_header(self, name: str, value: str) -> Request:
        return replace(self, headers=(*self.headers, (name, value)))


@dataclass
class Answer:
    """A response as received: status code, headers (names lower-cased), body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class WrongAnswer(AssertionError):
    """A framework answered a scenario wrongly."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise WrongAnswer(message)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    request: Request
    check: Callable[[Answer], None]
    #: What a right answer's status is (the 404 scenario's is 404).
    status: int = 200
    #: The request must carry a session cookie the framework issued (see :func:`session_cookie`).
    needs_session: bool = False


def _status(res: Answer, status: int) -> None:
    expect(res.status == status, f"status {res.status}, expected {status}; body {res.body[:200]!r}")


def _json(res: Answer) -> t.Any:
    content_type = res.header("content-type") or ""
    expect(content_type.startswith("application/json"), f"content type {content_type!r}")
    return json.loads(res.body)


def check_hello(res: Answer) -> None:
    _status(res, 200)
    expect(res.body == HELLO.encode(), f"body {res.body!r}")
    content_type = res.header("content-type") or ""
    expect(content_type.startswith("text/"), f"content type {content_type!r}")


def check_json(res: Answer) -> None:
    _status(res, 200)
    data = _json(res)
    expect(data == {"id": 42, "name": "user-42", "active": True}, f"body {data!r}")


FORM_QUERY = "page=3&sort=name"
FORM_BODY = b"name=carboy+%26+friends&count=3"
FORM_ECHO = {"page": 3, "sort": "name", "name": "carboy & friends", "count": 3}


def check_form(res: Answer) -> None:
    _status(res, 200)
    data = _json(res)
    expect(data == FORM_ECHO, f"body {data!r}")


def check_template(res: Answer) -> None:
    _status(res, 200)
    content_type = res.header("content-type") or ""
    expect(content_type.startswith("text/html"), f"content type {content_type!r}")
    page = res.body.decode()
    expect(page.count("<li ") == len(ITEMS), f"{page.count('<li ')} items, expected 20")
    expect(f"<h1>{TITLE.replace('&', '&amp;')}</h1>" in page, "title missing or not escaped")
    last = ITEMS[-1]
    expect(f"20. {last['name']}: {last['price']}</li>" in page, "last item missing")


def check_missing(res: Answer) -> None:
    _status(res, 404)


def check_session(res: Answer) -> None:
    _status(res, 200)
    data = _json(res)
    expect(data == {"count": 2}, f"body {data!r} (the cookie sent holds count 1)")
    expect(session_cookie(res) is not None, "no session cookie set")


def check_static(res: Answer) -> None:
    _status(res, 200)
    expect(len(res.body) == len(STATIC_BYTES), f"{len(res.body)} bytes, expected 65536")
    expect(res.body == STATIC_BYTES, "static file content differs")


def session_cookie(res: Answer) -> str | None:
    """The ``name=value`` pair a client sends back for the session cookie *res* sets."""
    for key, value in res.headers:
        if key == "set-cookie":
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(value)
            morsel = cookie.get(SESSION_COOKIE)
            if morsel is not None:
                return f"{SESSION_COOKIE}={morsel.coded_value}"
    return None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hello", "hello: GET / (text)", Request("GET", "/"), check_hello),
    Scenario("json", "json: GET /users/<int>", Request("GET", "/users/42"), check_json),
    Scenario(
        "form",
        "query + form: POST /form?…",
        Request(
            "POST",
            "/form",
            FORM_QUERY,
            FORM_BODY,
            (
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", str(len(FORM_BODY))),
            ),
        ),
        check_form,
    ),
    Scenario("template", "template: 20-item Jinja2 page", Request("GET", "/page"), check_template),
    Scenario(
        "404",
        "404 among 200 routes",
        Request("GET", "/section-0/nothing/here"),
        check_missing,
        status=404,
    ),
    Scenario(
        "session",
        "session: read + write",
        Request("GET", "/session"),
        check_session,
        needs_session=True,
    ),
    Scenario("static", "static: 64 KiB file", Request("GET", "/static/blob.bin"), check_static),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
NAMES = tuple(BY_NAME)


def with_session(
    scenario: Scenario, ask: Callable[[Request], Answer]
) -> tuple[Request, str | None]:
    """The request to time for *scenario*: for the session scenario, its request carrying a
    cookie that the framework itself issued (holding ``count == 1``), obtained with *ask*."""
    request = scenario.request
    if not scenario.needs_session:
        return request, None
    first = ask(request)
    expect(first.status == 200, f"priming request: status {first.status}")
    cookie = session_cookie(first)
    if cookie is None:
        raise WrongAnswer("priming request set no session cookie")
    return request.with_header("Cookie", cookie), cookie
