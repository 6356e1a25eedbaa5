"""WebSocket routes, driven through ``client.websocket()`` (:mod:`carboy.websocket_testing`)."""

from __future__ import annotations

import asyncio
import logging
import typing as t

import pytest

import carboy
from carboy import (
    Blueprint,
    WebSocketDisconnect,
    abort,
    current_app,
    g,
    request,
    session,
    url_for,
    websocket,
)
from carboy.asgi_testing import environ_scope
from carboy.testing import ASGIClient, EnvironBuilder
from carboy.websocket_testing import WebsocketRejected, WebsocketTestSession


def make_app(**config: t.Any) -> carboy.Carboy:
    app = carboy.Carboy(__name__)
    app.config.update({"TESTING": True, "SECRET_KEY": "websocket tests", **config})
    return app


@pytest.fixture
def ws_app() -> carboy.Carboy:
    app = make_app()

    @app.websocket("/echo")
    async def echo() -> None:
        while True:
            await websocket.send(await websocket.receive())

    @app.websocket("/json")
    async def json_echo() -> None:
        data = await websocket.receive_json()
        await websocket.send_json({"got": data, "n": len(data["items"])})

    return app


# -- messages ---------------------------------------------------------------------------------


def test_echo_text_and_bytes(ws_app: carboy.Carboy) -> None:
    with ws_app.test_client().websocket("/echo") as ws:
        ws.send("hello")
        assert ws.receive() == "hello"
        ws.send(b"\x00\xffbin")
        reply = ws.receive()
        assert reply == b"\x00\xffbin"
        assert isinstance(reply, bytes)
        ws.send("")
        assert ws.receive() == ""
        ws.send("héllo ☃")
        assert ws.receive() == "héllo ☃"


def test_send_json_receive_json(ws_app: carboy.Carboy) -> None:
    with ws_app.test_client().websocket("/json") as ws:
        ws.send_json({"items": [1, 2, 3], "name": "ann"})
        assert ws.receive_json() == {"got": {"items": [1, 2, 3], "name": "ann"}, "n": 3}
        # The handler returned: the app closes normally.
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive()
        assert info.value.code == 1000


def test_client_send_rejects_other_types(ws_app: carboy.Carboy) -> None:
    with ws_app.test_client().websocket("/echo") as ws:
        with pytest.raises(TypeError):
            ws.send(123)  # type: ignore[arg-type]
        ws.send("still open")
        assert ws.receive() == "still open"


def test_handler_send_rejects_other_types() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        try:
            await websocket.send(42)  # type: ignore[arg-type]
        except TypeError as e:
            await websocket.send(f"TypeError: {e}")

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "TypeError: websocket.send takes str or bytes, not int."


def test_send_json_uses_app_json_provider() -> None:
    app = make_app()
    app.json.sort_keys = True  # type: ignore[attr-defined]

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send_json({"b": 1, "a": 2})

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == app.json.dumps({"a": 2, "b": 1})


# -- routing and url_for ----------------------------------------------------------------------


def test_rule_converters() -> None:
    app = make_app()

    @app.websocket("/ws/<int:room>")
    async def room(room: int) -> None:
        await websocket.send(f"{type(room).__name__}:{room}")

    client = app.test_client()
    with client.websocket("/ws/42") as ws:
        assert ws.receive() == "int:42"
    with pytest.raises(WebsocketRejected) as info, client.websocket("/ws/abc"):
        pass
    assert info.value.status_code == 404


def test_url_for_websocket_endpoint() -> None:
    app = make_app()

    @app.websocket("/ws/<int:room>")
    async def room(room: int) -> None:
        await websocket.send(url_for("room", room=room + 1))

    with app.test_request_context():
        # WebSocket URLs are always absolute, with the ws scheme matching http/https.
        assert url_for("room", room=3) == "ws://localhost/ws/3"
        assert url_for("room", room=3, _external=True) == "ws://localhost/ws/3"
        assert url_for("room", room=3, _external=True, _scheme="ws") == "ws://localhost/ws/3"
        assert url_for("room", room=3, _external=True, _scheme="https") == "wss://localhost/ws/3"
    with app.test_request_context(base_url="https://example.com"):
        assert url_for("room", room=3) == "wss://example.com/ws/3"

    with app.test_client().websocket("/ws/7") as ws:
        assert ws.receive() == "ws://localhost/ws/8"


def test_wss_scheme_from_https_client() -> None:
    app = make_app(PREFERRED_URL_SCHEME="https")

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send(f"{websocket.scope['scheme']} {request.scheme} {request.url}")

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "wss wss wss://localhost/ws"


def test_blueprint_routes_and_before_websocket() -> None:
    app = make_app()
    calls: list[str] = []
    bp = Blueprint("chat", __name__, url_prefix="/chat")

    @app.before_websocket
    def app_hook() -> None:
        calls.append(f"app:{request.endpoint}")

    @bp.before_websocket
    def bp_hook() -> None:
        calls.append(f"bp:{request.endpoint}")
        g.room_checked = True

    @bp.websocket("/<name>")
    async def room(name: str) -> None:
        await websocket.send(f"{request.blueprint}:{name}:{g.room_checked}")
        await websocket.send(url_for(".room", name="other"))

    @app.websocket("/plain")
    async def plain() -> None:
        await websocket.send(f"plain:{g.get('room_checked', False)}")

    app.register_blueprint(bp)
    client = app.test_client()

    with client.websocket("/chat/lobby") as ws:
        assert ws.receive() == "chat:lobby:True"
        assert ws.receive() == "ws://localhost/chat/other"
    assert calls == ["app:chat.room", "bp:chat.room"]

    calls.clear()
    with client.websocket("/plain") as ws:
        assert ws.receive() == "plain:False"
    # The blueprint's hook runs only for its own routes.
    assert calls == ["app:plain"]

    with pytest.raises(WebsocketRejected) as info, client.websocket("/lobby"):
        pass
    assert info.value.status_code == 404


def test_before_request_does_not_run_for_websockets() -> None:
    app = make_app()
    calls: list[str] = []

    @app.before_request
    def before() -> None:
        calls.append("before_request")

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send("ok")

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "ok"
    assert calls == []


def test_nested_blueprint_before_websocket_order() -> None:
    app = make_app()
    calls: list[str] = []
    outer = Blueprint("outer", __name__, url_prefix="/outer")
    inner = Blueprint("inner", __name__, url_prefix="/inner")

    @app.before_websocket
    def app_hook() -> None:
        calls.append("app")

    @outer.before_websocket
    def outer_hook() -> None:
        calls.append("outer")

    @inner.before_websocket
    def inner_hook() -> None:
        calls.append("inner")

    @inner.websocket("/ws")
    async def handler() -> None:
        await websocket.send(request.endpoint or "")

    outer.register_blueprint(inner)
    app.register_blueprint(outer)
    with app.test_client().websocket("/outer/inner/ws") as ws:
        assert ws.receive() == "outer.inner.handler"
    assert calls == ["app", "outer", "inner"]


def test_url_value_preprocessors_and_defaults() -> None:
    app = make_app()
    bp = Blueprint("lang", __name__, url_prefix="/<lang>")

    @bp.url_value_preprocessor
    def pull_lang(endpoint: str | None, values: dict[str, t.Any] | None) -> None:
        assert values is not None
        g.lang = values.pop("lang")

    @bp.url_defaults
    def add_lang(endpoint: str, values: dict[str, t.Any]) -> None:
        values.setdefault("lang", g.lang)

    @bp.before_websocket
    def check() -> t.Any:
        return ("unsupported", 404) if g.lang not in ("en", "fr") else None

    @bp.websocket("/ws/<room>")
    async def room(room: str) -> None:
        await websocket.send(f"{g.lang}:{room} {url_for('.room', room='next')}")

    app.register_blueprint(bp)
    client = app.test_client()
    with client.websocket("/fr/ws/lobby") as ws:
        assert ws.receive() == "fr:lobby ws://localhost/fr/ws/next"
    with pytest.raises(WebsocketRejected) as info, client.websocket("/de/ws/lobby"):
        pass
    assert (info.value.status_code, info.value.body) == (404, b"unsupported")


def test_unknown_path_rejected_404(ws_app: carboy.Carboy) -> None:
    with pytest.raises(WebsocketRejected) as info, ws_app.test_client().websocket("/nope"):
        pass
    assert info.value.status_code == 404
    assert b"Not Found" in info.value.body
    assert info.value.headers["Content-Type"].startswith("text/html")


def test_http_route_rejects_websocket_400() -> None:
    app = make_app()

    @app.route("/page")
    def page() -> str:
        return "page"

    with pytest.raises(WebsocketRejected) as info, app.test_client().websocket("/page"):
        pass
    assert info.value.status_code == 400


# -- the handshake ----------------------------------------------------------------------------


def test_accept_with_subprotocol_and_headers() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        offered = websocket.subprotocols
        await websocket.accept(subprotocol=offered[-1], headers={"X-Room": "lobby"})
        await websocket.send(",".join(offered))

    client = app.test_client()
    with client.websocket("/ws", subprotocols=["chat.v2", "chat.v1"]) as ws:
        assert ws.accepted_subprotocol == "chat.v1"
        assert ws.accept_headers["X-Room"] == "lobby"
        assert ws.receive() == "chat.v2,chat.v1"
    assert ws.scope["subprotocols"] == ["chat.v2", "chat.v1"]
    assert (b"sec-websocket-protocol", b"chat.v2, chat.v1") in ws.scope["headers"]


def test_accept_headers_as_pairs() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.accept(headers=[("X-A", "1"), ("X-A", "2")])
        await websocket.send("ok")

    with app.test_client().websocket("/ws") as ws:
        assert ws.accept_headers.getlist("X-A") == ["1", "2"]
        assert ws.accepted_subprotocol is None
        assert ws.receive() == "ok"


def test_accept_twice_raises() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.accept()
        try:
            await websocket.accept()
        except RuntimeError as e:
            await websocket.send(str(e))

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "The WebSocket handshake was already answered."


def test_auto_accept_on_first_send() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        assert not websocket.accepted
        await websocket.send("first")
        await websocket.send(str(websocket.accepted))

    with app.test_client().websocket("/ws") as ws:
        assert ws.accepted_subprotocol is None
        assert list(ws.accept_headers) == []
        assert ws.receive() == "first"
        assert ws.receive() == "True"


def test_auto_accept_on_first_receive() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        message = await websocket.receive()
        await websocket.send(f"got {message!r}")

    with app.test_client().websocket("/ws") as ws:
        ws.send("x")
        assert ws.receive() == "got 'x'"


def test_app_close_code_and_reason() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send("bye")
        await websocket.close(4001, "room closed")
        await websocket.close(4002, "ignored")  # a second close does nothing

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "bye"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive()
        assert (info.value.code, info.value.reason) == (4001, "room closed")
        assert ws.closed
        with pytest.raises(RuntimeError):
            ws.send("too late")


def test_handler_send_after_close_raises() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.accept()
        await websocket.close(1000)
        try:
            await websocket.send("x")
        except RuntimeError as e:
            g.error = str(e)

    errors: list[str] = []

    @app.teardown_request
    def record(exc: BaseException | None) -> None:
        errors.append(g.get("error", ""))

    with app.test_client().websocket("/ws") as ws, pytest.raises(WebSocketDisconnect):
        ws.receive()
    assert errors == ["The WebSocket connection is closed."]


def test_long_close_reason_is_cut_to_fit() -> None:
    app = make_app()
    reason = "é" * 100  # 200 bytes of UTF-8

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.accept()
        await websocket.close(4000, reason)

    with app.test_client().websocket("/ws") as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive()
    assert info.value.code == 4000
    assert info.value.reason == "é" * 61
    assert len(info.value.reason.encode()) <= 123


# -- the request context ----------------------------------------------------------------------


def test_session_g_current_app_and_args() -> None:
    app = make_app()

    @app.before_websocket
    def load_user() -> None:
        g.user = session.get("user")

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send_json(
            {
                "user": g.user,
                "session": session.get("user"),
                "app": current_app.name,
                "room": request.args.get("room"),
                "all": request.args.getlist("tag"),
                "header": request.headers.get("X-Token"),
                "path": request.path,
                "upgrade": request.headers.get("Upgrade"),
            }
        )

    client = app.test_client()
    with client.session_transaction() as sess:
        sess["user"] = "ann"
    with client.websocket(
        "/ws", query_string={"room": "lobby", "tag": ["a", "b"]}, headers={"X-Token": "t0k"}
    ) as ws:
        assert ws.receive_json() == {
            "user": "ann",
            "session": "ann",
            "app": app.name,
            "room": "lobby",
            "all": ["a", "b"],
            "header": "t0k",
            "path": "/ws",
            "upgrade": "websocket",
        }


def test_query_string_on_path() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send(request.args["q"])

    with app.test_client().websocket("/ws?q=hi+there") as ws:
        assert ws.receive() == "hi there"


def test_no_session_cookie_without_login() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send(repr(session.get("user")))

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "None"


def test_websocket_proxy_outside_handler() -> None:
    app = make_app()

    @app.route("/")
    def index() -> str:
        return str(websocket.accepted)

    with pytest.raises(RuntimeError, match="only available inside a WebSocket handler"):
        app.test_client().get("/")
    with pytest.raises(RuntimeError, match="only available inside a WebSocket handler"):
        websocket.accepted  # noqa: B018


# -- rejections -------------------------------------------------------------------------------


def test_before_websocket_rejects_403_with_body() -> None:
    app = make_app()
    handled: list[str] = []

    @app.before_websocket
    def guard() -> t.Any:
        if request.args.get("token") != "ok":
            return "no", 403, {"X-Why": "token"}
        return None

    @app.websocket("/ws")
    async def handler() -> None:
        handled.append("ran")
        await websocket.send("welcome")

    client = app.test_client()
    with pytest.raises(WebsocketRejected) as info, client.websocket("/ws"):
        pass
    assert info.value.status_code == 403
    assert info.value.body == b"no"
    assert info.value.headers["X-Why"] == "token"
    assert handled == []

    with client.websocket("/ws", query_string="token=ok") as ws:
        assert ws.receive() == "welcome"
    assert handled == ["ran"]


def test_abort_401_in_before_websocket() -> None:
    app = make_app()

    @app.before_websocket
    def guard() -> None:
        abort(401)

    @app.websocket("/ws")
    async def handler() -> None:  # pragma: no cover - never reached
        await websocket.send("welcome")

    with pytest.raises(WebsocketRejected) as info, app.test_client().websocket("/ws"):
        pass
    assert info.value.status_code == 401
    assert b"Unauthorized" in info.value.body


def test_abort_uses_error_handler() -> None:
    app = make_app()

    @app.errorhandler(403)
    def forbidden(e: Exception) -> tuple[str, int]:
        return "custom forbidden", 403

    @app.websocket("/ws")
    async def handler() -> None:
        abort(403)

    with pytest.raises(WebsocketRejected) as info, app.test_client().websocket("/ws"):
        pass
    assert (info.value.status_code, info.value.body) == (403, b"custom forbidden")


def test_async_before_websocket() -> None:
    app = make_app()

    @app.before_websocket
    async def guard() -> t.Any:
        await asyncio.sleep(0)
        return "later", 429

    @app.websocket("/ws")
    async def handler() -> None:  # pragma: no cover - never reached
        await websocket.send("welcome")

    with pytest.raises(WebsocketRejected) as info, app.test_client().websocket("/ws"):
        pass
    assert (info.value.status_code, info.value.body) == (429, b"later")


def test_handler_returns_custom_status_418() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> t.Any:
        return "I'm a teapot", 418

    with pytest.raises(WebsocketRejected) as info, app.test_client().websocket("/ws"):
        pass
    assert info.value.status_code == 418
    assert info.value.body == b"I'm a teapot"


def test_return_value_after_accept_is_ignored() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> t.Any:
        await websocket.send("hi")
        return "ignored", 418

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "hi"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive()
        assert info.value.code == 1000


def test_abort_after_accept_closes_1008() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send("hi")
        abort(403, "room is full")

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "hi"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive()
    assert (info.value.code, info.value.reason) == (1008, "room is full")


def test_abort_after_accept_with_long_description() -> None:
    # Unauthorized's default description is longer than a close frame can carry.
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.accept()
        abort(401)

    with app.test_client().websocket("/ws") as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive()
    assert info.value.code == 1008
    assert info.value.reason.startswith("The server could not verify")
    assert len(info.value.reason.encode()) <= 123


def test_close_before_accept_without_http_response_extension() -> None:
    # Servers without the extension turn a close before accepting into a bare 403.
    app = make_app()

    @app.before_websocket
    def guard() -> t.Any:
        return "no", 403

    @app.websocket("/ws")
    async def handler() -> None:  # pragma: no cover - never reached
        await websocket.send("welcome")

    scope = environ_scope(EnvironBuilder(app, "/ws").get_environ(), "websocket")
    session = WebsocketTestSession(app, scope, http_response=False)
    assert "websocket.http.response" not in scope["extensions"]
    with pytest.raises(WebsocketRejected) as info, session:
        pass
    assert (info.value.status_code, info.value.body) == (403, b"")
    assert list(info.value.headers) == []


def test_explicit_close_before_accept_is_403() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.close(1008)

    with pytest.raises(WebsocketRejected) as info, app.test_client().websocket("/ws"):
        pass
    assert info.value.status_code == 403


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("testing", [True, False])
def test_handler_exception_closes_1011_and_logs(
    testing: bool, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(TESTING=testing)
    torn_down: list[BaseException | None] = []

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        torn_down.append(exc)

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.receive()
        raise ValueError("handler broke")

    with caplog.at_level(logging.ERROR), app.test_client().websocket("/ws") as ws:
        ws.send("trigger")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive()
    # Leaving the block raised nothing: the error is logged, not propagated.
    assert (info.value.code, info.value.reason) == (1011, "internal error")
    records = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ValueError]
    assert len(records) == 1
    assert records[0].name == app.logger.name
    assert "Exception on /ws" in records[0].getMessage()
    assert len(torn_down) == 1
    assert isinstance(torn_down[0], ValueError)


def test_handler_exception_before_accept_rejects_500(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        raise KeyError("early")

    with (
        caplog.at_level(logging.ERROR),
        pytest.raises(WebsocketRejected) as info,
        app.test_client().websocket("/ws"),
    ):
        pass
    assert info.value.status_code == 500
    assert b"Internal Server Error" in info.value.body
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_exception_propagated_by_app_is_raised_on_exit() -> None:
    app = make_app()
    app_teardowns: list[str] = []

    @app.teardown_request
    def broken_teardown(exc: BaseException | None) -> None:
        raise RuntimeError("teardown broke")

    @app.teardown_appcontext
    def app_teardown(exc: BaseException | None) -> None:
        app_teardowns.append("ran")

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send("hi")

    with (
        pytest.raises(RuntimeError, match="teardown broke"),
        app.test_client().websocket("/ws") as ws,
    ):
        assert ws.receive() == "hi"
    # The contexts were still popped, so the app context's teardown ran.
    assert app_teardowns == ["ran"]


def test_exception_in_error_handler_is_raised_on_enter() -> None:
    app = make_app()

    @app.errorhandler(403)
    def broken(e: Exception) -> str:
        raise LookupError("handler broke")

    @app.before_websocket
    def guard() -> None:
        abort(403)

    @app.websocket("/ws")
    async def handler() -> None:  # pragma: no cover - never reached
        await websocket.send("welcome")

    with pytest.raises(LookupError, match="handler broke"), app.test_client().websocket("/ws"):
        pass


def test_app_that_never_answers_times_out() -> None:
    app = make_app()
    cancelled: list[bool] = []

    @app.websocket("/ws")
    async def handler() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    scope = environ_scope(EnvironBuilder(app, "/ws").get_environ(), "websocket")
    with (
        pytest.raises(TimeoutError, match="did not answer the WebSocket handshake"),
        WebsocketTestSession(app, scope, timeout=0.2),
    ):
        pass  # pragma: no cover - entering fails
    assert cancelled == [True]


def test_receive_times_out() -> None:
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.accept()
        await websocket.receive()

    with app.test_client().websocket("/ws") as ws:
        with pytest.raises(TimeoutError, match="sent no WebSocket message"):
            ws.receive(timeout=0.05)
        ws.close()


def _raw_scope(path: str = "/raw") -> dict[str, t.Any]:
    return environ_scope(EnvironBuilder(make_app(), path).get_environ(), "websocket")


def test_session_with_raw_asgi_app_error_raised_once() -> None:
    async def raw(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        raise RuntimeError("raw app broke")

    # Raised by receive(), and not a second time when leaving the block.
    with WebsocketTestSession(raw, _raw_scope()) as ws:
        with pytest.raises(RuntimeError, match="raw app broke"):
            ws.receive()
        assert ws.closed


def test_session_with_raw_asgi_app_ending_without_close() -> None:
    async def raw(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "p"})
        await send({"type": "websocket.send", "bytes": b"only"})

    with WebsocketTestSession(raw, _raw_scope()) as ws:
        assert ws.accepted_subprotocol == "p"
        assert ws.receive() == b"only"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive()
        assert info.value.code == 1000


def test_session_with_raw_asgi_app_bad_handshake_answer() -> None:
    async def raw(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        await receive()
        await send({"type": "websocket.send", "text": "too early"})

    with (
        pytest.raises(RuntimeError, match=r"instead of 'websocket\.accept'"),
        WebsocketTestSession(raw, _raw_scope()),
    ):
        pass  # pragma: no cover - entering fails


def test_session_with_raw_asgi_app_streamed_rejection() -> None:
    async def raw(scope: t.Any, receive: t.Any, send: t.Any) -> None:
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 409,
                "headers": [(b"x-a", b"1")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"con", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"flict"})

    with pytest.raises(WebsocketRejected) as info, WebsocketTestSession(raw, _raw_scope()):
        pass  # pragma: no cover - entering fails
    assert (info.value.status_code, info.value.body) == (409, b"conflict")
    assert info.value.headers["X-A"] == "1"


def test_session_enters_once(ws_app: carboy.Carboy) -> None:
    session = ws_app.test_client().websocket("/echo")
    with session:
        pass
    with pytest.raises(RuntimeError, match="only be entered once"):
        session.__enter__()


# -- client disconnects -----------------------------------------------------------------------


def test_client_disconnect_reaches_handler_and_teardown_runs() -> None:
    app = make_app()
    events: list[t.Any] = []

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        events.append(("teardown", exc))

    @app.websocket("/ws")
    async def handler() -> None:
        await websocket.send("ready")
        try:
            while True:
                await websocket.receive()
        except WebSocketDisconnect as e:
            events.append(("disconnect", e.code, e.reason))
            raise

    with app.test_client().websocket("/ws") as ws:
        assert ws.receive() == "ready"
        ws.close(4005, "leaving")
        # close() waits for the app to finish.
        assert events == [("disconnect", 4005, "leaving"), ("teardown", None)]
        ws.close()  # closing twice does nothing
    assert len(events) == 2


def test_leaving_the_block_disconnects_with_1000() -> None:
    app = make_app()
    codes: list[int] = []

    @app.websocket("/ws")
    async def handler() -> None:
        try:
            await websocket.receive()
        except WebSocketDisconnect as e:
            codes.append(e.code)
            # A receive after the disconnect sees it again instead of hanging.
            try:
                await websocket.receive()
            except WebSocketDisconnect as again:
                codes.append(again.code)

    with app.test_client().websocket("/ws"):
        pass
    assert codes == [1000, 1000]


# -- registration and HTTP --------------------------------------------------------------------


def test_websocket_decorator_requires_async_function() -> None:
    app = make_app()
    with pytest.raises(TypeError, match="must be an 'async def' function"):

        @app.websocket("/ws")
        def handler() -> None:  # pragma: no cover - never called
            pass

    bp = Blueprint("bp", __name__)
    with pytest.raises(TypeError, match="must be an 'async def' function"):

        @bp.websocket("/ws")
        def bp_handler() -> None:  # pragma: no cover - never called
            pass

    assert "handler" not in app.view_functions


def test_plain_get_to_websocket_route_is_400(app: carboy.Carboy) -> None:
    # ``app`` runs this three ways: WSGI short path, WSGI method chain, ASGI.
    @app.websocket("/ws")
    async def handler() -> None:  # pragma: no cover - never reached
        await websocket.send("hi")

    response = app.test_client().get("/ws")
    assert response.status_code == 400


def test_plain_get_to_websocket_route_is_400_asgi_client() -> None:
    app = make_app()
    app.test_client_class = ASGIClient

    @app.websocket("/ws")
    async def handler() -> None:  # pragma: no cover - never reached
        await websocket.send("hi")

    client = app.test_client()
    assert isinstance(client, ASGIClient)
    assert client.get("/ws").status_code == 400


def test_wsgi_upgrade_request_to_websocket_route() -> None:
    # A WebSocket handshake that reaches the app over WSGI matches the route but cannot be
    # served; the error says an ASGI server is needed.
    app = make_app()

    @app.websocket("/ws")
    async def handler() -> None:  # pragma: no cover - never reached
        await websocket.send("hi")

    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    for testing in (True, False):
        app.config["TESTING"] = testing
        response = app.test_client().get("/ws", headers=upgrade)
        assert response.status_code == 501
        assert b"ASGI server" in response.data


def test_http_and_websocket_routes_side_by_side() -> None:
    app = make_app()

    @app.route("/feed")
    def feed_page() -> str:
        return "page"

    @app.websocket("/feed", endpoint="feed_ws")
    async def feed_ws() -> None:
        await websocket.send("stream")

    client = app.test_client()
    assert client.get("/feed").get_data(as_text=True) == "page"
    with client.websocket("/feed") as ws:
        assert ws.receive() == "stream"
    with app.test_request_context():
        assert url_for("feed_page") == "/feed"
        assert url_for("feed_ws") == "ws://localhost/feed"


def test_upgrade_header_to_http_route_is_400_like_flask(app: carboy.Carboy) -> None:
    # Werkzeug's matcher answers a WebSocket handshake that matches only HTTP rules with 400.
    @app.route("/page")
    def page() -> str:
        return "page"

    client = app.test_client()
    assert client.get("/page").status_code == 200
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    assert client.get("/page", headers=upgrade).status_code == 400
