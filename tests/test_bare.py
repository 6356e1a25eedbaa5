"""The bare path (``carboy.bare``): requests to a view with no hook, no signal receiver and no
cookie are answered in one frame. These tests check that each such request really takes it,
and that whatever the view does there (read the request, touch ``g`` or the session, register
an ``after_this_request`` function, raise, return something else than text or JSON) gets the
same answer as on the general path; and that the requests it must not take (HEAD, OPTIONS, a
cookie, a receiver connected later) do not take it. Each test runs under WSGI and ASGI, with
``async def`` views (on the event loop under ASGI, through ``ensure_sync`` under WSGI).

An app's first request always takes the general path (it builds the router and decides what
the app overrides), so each test sends one (:func:`warm`) before the requests it checks.
"""

from __future__ import annotations

import asyncio
import gc
import typing as t

import flask
import pytest
from werkzeug.routing import Map as WerkzeugMap

import carboy
import carboy.bare
import carboy.sessions
from carboy import abort, after_this_request, g, request, session, signals, websocket
from carboy.asgi import ScopeRequestContext
from carboy.globals import _cv_request
from carboy.testing import ASGIClient


@pytest.fixture(params=["wsgi", "asgi"])
def app(request: pytest.FixtureRequest) -> carboy.Carboy:
    app = carboy.Carboy(__name__)
    app.config.update(SECRET_KEY="k")
    if request.param == "asgi":
        app.test_client_class = ASGIClient
    return app


@pytest.fixture
def bare_taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each request routed so far, whether it was allowed onto the bare path."""
    taken: list[bool] = []
    route = carboy.bare.route

    def spy(app: carboy.Carboy, path: str, method: str) -> t.Any:
        found = route(app, path, method)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(carboy.bare, "route", spy)
    return taken


def warm(client: t.Any, taken: list[bool]) -> None:
    """The app's first request (a 404 on the general path), then forget what it routed."""
    assert client.get("/warm-up/nothing-here").status_code == 404
    taken.clear()


def test_view_reads_request_g_and_session(app: carboy.Carboy, bare_taken: list[bool]) -> None:
    @app.get("/hello/<int:n>")
    async def hello(n: int) -> dict[str, t.Any]:
        g.seen = request.args["q"]
        session["n"] = n
        return {"n": n, "q": g.seen, "path": request.path}

    with app.test_client() as client:
        warm(client, bare_taken)
        response = client.get("/hello/7?q=x")
        assert response.status_code == 200
        assert response.json == {"n": 7, "q": "x", "path": "/hello/7"}
        assert response.mimetype == "application/json"
        # The session the view wrote is saved as on the general path.
        assert "session=" in response.headers["Set-Cookie"]
        assert bare_taken == [True]
        # The cookie now sent keeps the next request off the bare path; same session.
        again = client.get("/hello/8?q=y")
        assert again.json == {"n": 8, "q": "y", "path": "/hello/8"}
        assert bare_taken == [True]  # with a cookie, route() is not even asked
    assert _cv_request.get(None) is None


def test_text_body_and_headers(app: carboy.Carboy, bare_taken: list[bool]) -> None:
    @app.get("/")
    async def index() -> str:
        return "héllo"

    client = app.test_client()
    warm(client, bare_taken)
    response = client.get("/")
    assert response.status_code == 200
    assert response.data == "héllo".encode()
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Length"] == str(len("héllo".encode()))
    assert bare_taken == [True]


def test_after_this_request_and_other_return_types(
    app: carboy.Carboy, bare_taken: list[bool]
) -> None:
    @app.get("/after")
    async def after() -> str:
        @after_this_request
        def add_header(response: carboy.Response) -> carboy.Response:
            response.headers["X-After"] = "yes"
            return response

        return "ok"

    @app.get("/created")
    async def created() -> tuple[str, int, dict[str, str]]:
        return "made", 201, {"X-Made": "1"}

    client = app.test_client()
    warm(client, bare_taken)
    response = client.get("/after")
    assert (response.data, response.headers["X-After"]) == (b"ok", "yes")
    response = client.get("/created")
    assert (response.status_code, response.data, response.headers["X-Made"]) == (201, b"made", "1")
    assert bare_taken == [True, True]


def test_errors_are_handled_as_on_the_general_path(
    app: carboy.Carboy, bare_taken: list[bool]
) -> None:
    @app.errorhandler(418)
    def teapot(e: Exception) -> tuple[str, int]:
        return "short and stout", 418

    @app.errorhandler(500)
    def server_error(e: Exception) -> tuple[str, int]:
        return f"handled {type(getattr(e, 'original_exception', e)).__name__}", 500

    @app.get("/teapot")
    async def make_tea() -> str:
        abort(418)

    @app.get("/boom")
    async def boom() -> str:
        raise ValueError("boom")

    client = app.test_client()
    warm(client, bare_taken)
    response = client.get("/teapot")
    assert (response.status_code, response.data) == (418, b"short and stout")
    response = client.get("/boom")
    assert (response.status_code, response.data) == (500, b"handled ValueError")
    assert bare_taken == [True, True]


def test_unhandled_error_propagates_in_testing(app: carboy.Carboy, bare_taken: list[bool]) -> None:
    app.testing = True

    @app.get("/boom")
    async def boom() -> str:
        raise ValueError("boom")

    client = app.test_client()
    warm(client, bare_taken)
    with pytest.raises(ValueError, match="boom"):
        client.get("/boom")
    assert bare_taken == [True]
    assert _cv_request.get(None) is None


def test_head_and_options_take_the_general_path(app: carboy.Carboy, bare_taken: list[bool]) -> None:
    @app.get("/")
    async def index() -> str:
        return "hello"

    client = app.test_client()
    warm(client, bare_taken)
    head = client.head("/")
    assert (head.status_code, head.data, head.headers["Content-Length"]) == (200, b"", "5")
    options = client.options("/")
    assert set(options.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert bare_taken == [False, False]


def test_receiver_connected_after_the_first_request_is_sent(
    app: carboy.Carboy, bare_taken: list[bool]
) -> None:
    @app.get("/")
    async def index() -> str:
        return "hello"

    client = app.test_client()
    warm(client, bare_taken)
    assert client.get("/").data == b"hello"
    sent: list[str] = []

    def started(sender: carboy.Carboy, **extra: t.Any) -> None:
        sent.append("started")

    def finished(sender: carboy.Carboy, response: carboy.Response, **extra: t.Any) -> None:
        sent.append(f"finished {response.status_code}")

    with (
        signals.request_started.connected_to(started, app),
        signals.request_finished.connected_to(finished, app),
    ):
        assert client.get("/").data == b"hello"
    assert sent == ["started", "finished 200"]
    assert client.get("/").data == b"hello"  # disconnected: bare again
    assert bare_taken == [True, False, True]


def test_teardown_functions_keep_requests_off_the_bare_path(
    app: carboy.Carboy, bare_taken: list[bool]
) -> None:
    torn: list[str] = []

    @app.teardown_appcontext
    def app_teardown(exc: BaseException | None) -> None:
        torn.append("app")

    @app.get("/")
    async def index() -> str:
        return "hello"

    client = app.test_client()
    warm(client, bare_taken)
    assert client.get("/").data == b"hello"
    assert torn == ["app", "app"]  # the warm-up request's and this one's
    assert bare_taken == [False]


def test_preserved_context_is_handed_to_the_test_client(
    app: carboy.Carboy, bare_taken: list[bool]
) -> None:
    @app.get("/here")
    async def here() -> str:
        g.value = "kept"
        return "hello"

    with app.test_client() as client:
        warm(client, bare_taken)
        assert client.get("/here?x=1").data == b"hello"
        assert request.path == "/here"
        assert request.args["x"] == "1"
        assert g.value == "kept"
    assert bare_taken == [True]
    assert _cv_request.get(None) is None


def test_quiet_flag_follows_every_way_receivers_come_and_go() -> None:
    def receiver(sender: t.Any, **extra: t.Any) -> None:
        return None

    assert signals._quiet
    signals.appcontext_popped.connect(receiver)
    assert not signals._quiet
    signals.appcontext_popped.disconnect(receiver)
    assert signals._quiet
    with signals.request_tearing_down.connected_to(receiver):
        assert not signals._quiet
    assert signals._quiet

    def connect_a_weak_receiver() -> None:
        def dies_on_return(sender: t.Any, **extra: t.Any) -> None:
            return None

        signals.request_started.connect(dies_on_return)  # weak by default
        assert not signals._quiet

    connect_a_weak_receiver()
    gc.collect()
    assert not signals.request_started.receivers
    assert signals._quiet
    # A signal that is not sent around every request leaves the flag alone.
    with signals.message_flashed.connected_to(receiver):
        assert signals._quiet


def test_request_with_a_body_gets_the_same_answer(
    app: carboy.Carboy, bare_taken: list[bool]
) -> None:
    @app.post("/echo")
    async def echo() -> dict[str, t.Any]:
        return {"form": request.form.to_dict()}

    client = app.test_client()
    warm(client, bare_taken)
    assert client.post("/echo", data={"a": "1"}).json == {"form": {"a": "1"}}
    # Under ASGI a body keeps the request off the bare path before route() is asked; under
    # WSGI the body waits in wsgi.input, and the bare path reads it like the general one.
    assert bare_taken == ([] if isinstance(client, ASGIClient) else [True])


@pytest.mark.parametrize(
    "options",
    [
        {"host_matching": True, "static_folder": None},
        {"subdomain_matching": True},
        {"url_map_class": WerkzeugMap},
    ],
    ids=["host_matching", "subdomain_matching", "werkzeug_map"],
)
@pytest.mark.parametrize("protocol", ["wsgi", "asgi"])
def test_set_up_the_bare_path_does_not_serve(
    protocol: str, options: dict[str, t.Any], bare_taken: list[bool]
) -> None:
    cls = carboy.Carboy
    options = dict(options)  # shared by both protocols' runs
    if "url_map_class" in options:
        cls = type(
            "WerkzeugMapApp", (carboy.Carboy,), {"url_map_class": options.pop("url_map_class")}
        )
    app = cls(__name__, **options)
    app.config["SERVER_NAME"] = "example.test"
    if protocol == "asgi":
        app.test_client_class = ASGIClient

    @app.get("/", host="example.test" if options.get("host_matching") else None)
    async def index() -> str:
        return "hello"

    client = app.test_client()
    warm(client, bare_taken)
    for _ in range(2):
        response = client.get("/")
        assert (response.status_code, response.data) == (200, b"hello")
    assert bare_taken == []


def test_wrapped_asgi_app_sees_every_request(bare_taken: list[bool]) -> None:
    app = carboy.Carboy(__name__)
    app.test_client_class = ASGIClient
    seen: list[str] = []

    @app.get("/")
    async def index() -> str:
        return "hello"

    def wrap() -> None:
        inner = app.asgi_app

        async def middleware(scope: t.Any, receive: t.Any, send: t.Any) -> None:
            seen.append(scope["type"])
            await inner(scope, receive, send)

        app.asgi_app = middleware  # type: ignore[method-assign]

    client = app.test_client()
    warm(client, bare_taken)
    assert client.get("/").data == b"hello"
    assert bare_taken == [True]
    wrap()  # after the first requests: still seen
    assert client.get("/").data == b"hello"
    assert client.get("/").data == b"hello"
    assert seen == ["http", "http"]
    assert bare_taken == [True]


def test_other_scopes_reach_asgi_app_once_the_app_serves(bare_taken: list[bool]) -> None:
    app = carboy.Carboy(__name__)
    app.test_client_class = ASGIClient

    @app.get("/")
    async def index() -> str:
        return "hello"

    @app.websocket("/ws")
    async def echo() -> None:
        await websocket.send(await websocket.receive())

    client = app.test_client()
    warm(client, bare_taken)
    assert client.get("/").data == b"hello"
    with client.websocket("/ws") as ws:
        ws.send("ping")
        assert ws.receive() == "ping"
    assert client.get("/").data == b"hello"
    assert bare_taken == [True, True]


def test_middleware_may_edit_the_short_answers_headers(bare_taken: list[bool]) -> None:
    """The short answer's header pairs are shared between requests (carboy.asgi.short_start);
    the start message and its header list are not, so middleware that edits them in place
    changes one answer only."""
    app = carboy.Carboy(__name__)

    @app.get("/text/<int:n>")
    async def text(n: int) -> str:
        return "x" * n

    @app.get("/json/<int:n>")
    async def data(n: int) -> dict[str, str]:
        return {"x": "y" * n}

    async def ask(path: str, edit: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
        messages: list[dict[str, t.Any]] = []

        async def receive() -> dict[str, t.Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, t.Any]) -> None:
            if edit and message["type"] == "http.response.start":  # the middleware's part
                message["headers"].append((b"x-edited", b"1"))
                message["headers"][0] = (b"content-type", b"text/plain")
            messages.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"host", b"test")], "server": ("test", 80),
        }  # fmt: skip
        await app(scope, receive, send)
        start, body = messages
        return start["headers"], body["body"]

    async def run() -> None:
        await ask("/warm-up", edit=False)
        bare_taken.clear()
        for n in (3, 3, 2000, 3):
            for kind in ("text", "json"):
                headers, body = await ask(f"/{kind}/{n}", edit=True)
                assert headers == [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-edited", b"1"),
                ]
        for kind, content_type in (
            ("text", b"text/html; charset=utf-8"),
            ("json", b"application/json"),
        ):
            headers, body = await ask(f"/{kind}/3", edit=False)
            assert headers == [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ]

    asyncio.run(run())
    assert bare_taken == [True] * 10


def test_path_without_a_leading_slash_is_answered_by_werkzeug(bare_taken: list[bool]) -> None:
    """An empty or slash-less WSGI ``PATH_INFO`` matches no rule of carboy's router, so it
    takes the general path, where Werkzeug redirects ``""`` to ``/`` and matches ``abc``
    as ``/abc``."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    app = carboy.Carboy(__name__)

    @app.get("/")
    async def index() -> str:
        return "root"

    @app.get("/<name>")
    async def named(name: str) -> str:
        return f"named {name}"

    def ask(path: str) -> tuple[str, bytes, str | None]:
        environ = EnvironBuilder(path="/").get_environ()
        environ["PATH_INFO"] = path
        body, status, headers = run_wsgi_app(app, environ)
        return status, b"".join(body), headers.get("Location")

    assert ask("/warm")[1] == b"named warm"
    bare_taken.clear()
    status, _, location = ask("")
    assert (status, location) == ("308 PERMANENT REDIRECT", "http://localhost/")
    assert ask("abc") == ("200 OK", b"named abc", None)
    assert ask("/abc") == ("200 OK", b"named abc", None)
    assert bare_taken == [False, False, True]


def test_request_context_is_made_once_off_the_bare_path(
    monkeypatch: pytest.MonkeyPatch, bare_taken: list[bool]
) -> None:
    """Under ASGI, ``serve_asgi`` makes the request context only for a request that takes the
    bare path: one that goes on to ``asgi_app`` (a cookie, a body, a plain ``def`` view) gets
    only the context ``asgi_app`` makes."""
    app = carboy.Carboy(__name__)
    app.config.update(SECRET_KEY="k")
    app.test_client_class = ASGIClient

    @app.get("/async")
    async def on_the_loop() -> str:
        return "async"

    @app.post("/echo")
    async def echo() -> str:
        return request.get_data(as_text=True)

    @app.get("/sync")
    def in_a_thread() -> str:
        return "sync"

    made: list[str] = []
    init = ScopeRequestContext.__init__

    def counting(self: ScopeRequestContext, *args: t.Any) -> None:
        made.append(args[1]["path"])
        init(self, *args)

    monkeypatch.setattr(ScopeRequestContext, "__init__", counting)
    client = app.test_client()
    warm(client, bare_taken)
    made.clear()
    assert client.get("/async").text == "async"
    assert bare_taken == [True]
    assert client.post("/echo", data="x").text == "x"
    assert client.get("/sync").text == "sync"
    client.set_cookie("k", "v")
    assert client.get("/async").text == "async"
    assert made == ["/async", "/echo", "/sync", "/async"]


def _template_session_app(module: t.Any) -> t.Any:
    """Views that render a template (which gets the session from the default context
    processor) and do one thing more or less with the session each: ``async def`` on carboy
    (to take the bare path under ASGI too), plain on Flask (which needs an extra for async)."""
    app = (module.Flask if module is flask else module.Carboy)(__name__)
    app.config.update(SECRET_KEY="k")
    render, module_session = module.render_template_string, module.session

    def page() -> str:
        return render("<p>{{ n }}</p>", n=1)

    def reads() -> str:
        return render("<p>{{ session.get('user') }}</p>")

    def clears() -> str:
        module_session.clear()
        return render("<p>cleared</p>")

    def writes() -> str:
        module_session["user"] = "ann"
        return render("<p>{{ session['user'] }}</p>")

    for view in (page, reads, clears, writes):
        if module is carboy:
            view = _as_async(view)
        app.add_url_rule(f"/{view.__name__}", view_func=view)
    return app


def _as_async(view: t.Callable[[], str]) -> t.Callable[[], t.Awaitable[str]]:
    async def run() -> str:
        return view()

    run.__name__ = view.__name__
    return run


def _answer(response: t.Any) -> tuple[int, bytes, dict[str, str]]:
    headers = {name.lower(): value for name, value in response.headers.items()}
    if "set-cookie" in headers:  # the signature's timestamp may differ by a second
        headers["set-cookie"] = headers["set-cookie"].split("=", 1)[0]
    return response.status_code, response.data, headers


@pytest.mark.parametrize("path", ["/page", "/reads", "/clears", "/writes"])
def test_a_template_opening_the_session_answers_as_flask(
    app: carboy.Carboy, bare_taken: list[bool], path: str
) -> None:
    mine = _template_session_app(carboy)
    mine.test_client_class = app.test_client_class
    client = mine.test_client()
    warm(client, bare_taken)
    theirs = _template_session_app(flask).test_client()
    assert _answer(client.get(path)) == _answer(theirs.get(path))
    assert bare_taken == [True]


def test_a_session_only_opened_is_not_saved(
    app: carboy.Carboy, bare_taken: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[str] = []
    save = carboy.sessions.SecureCookieSessionInterface.save_session

    def spy(self: t.Any, app: t.Any, session: t.Any, response: t.Any) -> None:
        saved.append(request.path)
        save(self, app, session, response)

    monkeypatch.setattr(carboy.sessions.SecureCookieSessionInterface, "save_session", spy)
    mine = _template_session_app(carboy)
    mine.test_client_class = app.test_client_class
    client = mine.test_client()
    warm(client, bare_taken)
    for path in ("/page", "/reads", "/clears", "/writes"):
        assert client.get(path).status_code == 200
        client.delete_cookie("session")
    # Saving a new session nobody read or changed adds nothing to the response; the others
    # are saved (a read adds Vary, a clear or a write a cookie).
    assert saved == ["/reads", "/clears", "/writes"]


def test_a_template_that_does_not_use_the_session_does_not_open_it(
    app: carboy.Carboy, bare_taken: list[bool]
) -> None:
    # Flask 3.1.3's default context processor no longer passes the session in; only a template
    # that uses the ``session`` global opens it (and marks it accessed).
    mine = _template_session_app(carboy)
    mine.test_client_class = app.test_client_class
    saved: list[bool] = []
    interface = mine.session_interface
    save = interface.save_session

    def spy(app: t.Any, session: t.Any, response: t.Any) -> None:
        saved.append(bool(session))
        save(app, session, response)

    interface.save_session = spy  # type: ignore[method-assign]
    client = mine.test_client()
    warm(client, bare_taken)
    response = client.get("/page")
    assert (response.status_code, response.vary.as_set()) == (200, set())
    assert client.get("/reads").vary.as_set() == {"cookie"}
    assert saved == [False]  # only /reads opened it, and saving the empty session sets nothing
    assert bare_taken == [True, True]
