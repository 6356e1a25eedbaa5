"""The ASGI side of the app object, driven in process with hand-made receive/send callables.

Behaviour shared with WSGI runs through the ``app`` fixture (three ways, ASGI included); this
file covers what only exists or differs under ASGI: where code runs (event loop vs pool),
contexts in tasks and threads, body limits while receiving, spooling, streaming and client
disconnects, lifespan, and WSGI middleware wrapped around the app.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
import io
import json
import tempfile
import threading
import typing as t

import pytest
from werkzeug.middleware.proxy_fix import ProxyFix

import carboy
from carboy import (
    Blueprint,
    copy_current_request_context,
    g,
    render_template_string,
    request,
    send_file,
    session,
    stream_request_body,
    stream_with_context,
)
from carboy.globals import _cv_request
from carboy.lifespan import WorkerStartupError
from carboy.views import MethodView

Message = dict[str, t.Any]


def make_app() -> carboy.Carboy:
    app = carboy.Carboy(__name__)
    app.config.update(TESTING=True, SECRET_KEY="k")
    return app


def scope_for(
    method: str = "GET",
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
) -> Message:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": headers or [(b"host", b"testserver")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }


class Exchange:
    """One ASGI HTTP exchange: the body chunks to deliver, and what the app sent."""

    def __init__(self, chunks: list[bytes] | None = None, disconnect_after: int | None = None):
        self.chunks = list(chunks or [])
        self.receive_calls = 0
        self.sent: list[Message] = []
        self.disconnect_after = disconnect_after
        self.finished = asyncio.Event()

    async def receive(self) -> Message:
        if self.chunks:
            self.receive_calls += 1
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}
        if self.disconnect_after is not None:
            while self.body_messages() < self.disconnect_after:
                await asyncio.sleep(0.001)
            return {"type": "http.disconnect"}
        await self.finished.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.finished.set()

    def body_messages(self) -> int:
        return sum(1 for m in self.sent if m["type"] == "http.response.body")

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def run(app: carboy.Carboy, scope: Message, exchange: Exchange | None = None) -> Exchange:
    exchange = exchange or Exchange()

    async def main() -> None:
        await app(scope, exchange.receive, exchange.send)

    asyncio.run(main())
    return exchange


def json_post(path: str, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> Message:
    headers = [
        (b"host", b"testserver"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    return scope_for("POST", path, headers)


# -- one object, two protocols ---------------------------------------------------------------


def test_app_object_is_wsgi_and_asgi3() -> None:
    app = make_app()

    @app.route("/")
    def index() -> str:
        return "same object"

    assert inspect.iscoroutinefunction(app.__call__)
    assert asyncio.iscoroutinefunction(app.__call__)
    assert run(app, scope_for()).body == b"same object"
    statuses: list[str] = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "x",
                         "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                         "wsgi.input": io.BytesIO()}, lambda s, h: statuses.append(s)))  # fmt: skip
    assert (statuses, body) == (["200 OK"], b"same object")


def test_unknown_scope_type_is_a_clear_error() -> None:
    app = make_app()

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        return None

    with pytest.raises(ValueError, match="scope type 'telepathy'"):
        asyncio.run(app({"type": "telepathy"}, nothing, ignore))


# -- where code runs ---------------------------------------------------------------------------


def test_async_view_runs_on_the_server_loop_and_sync_view_in_the_pool() -> None:
    app = make_app()
    seen: dict[str, t.Any] = {}

    @app.route("/async")
    async def on_loop() -> str:
        seen["view_loop"] = asyncio.get_running_loop()
        return "a"

    @app.route("/sync")
    def in_pool() -> str:
        seen["sync_thread"] = threading.current_thread().name
        return "s"

    async def main() -> None:
        seen["server_loop"] = asyncio.get_running_loop()
        for path in ("/async", "/sync"):
            exchange = Exchange()
            await app(scope_for(path=path), exchange.receive, exchange.send)
            assert exchange.status == 200

    asyncio.run(main())
    assert seen["view_loop"] is seen["server_loop"]
    assert seen["sync_thread"].startswith("carboy-sync-")
    assert seen["sync_thread"] != threading.current_thread().name


def test_sync_pool_is_bounded_by_config() -> None:
    app = make_app()
    app.config["MAX_SYNC_THREADS"] = 2
    names: set[str] = set()
    lock = threading.Lock()

    @app.route("/work")
    def work() -> str:
        with lock:
            names.add(threading.current_thread().name)
        return "done"

    async def main() -> None:
        exchanges = [Exchange() for _ in range(8)]
        await asyncio.gather(*(app(scope_for(path="/work"), e.receive, e.send) for e in exchanges))
        assert all(e.body == b"done" for e in exchanges)

    asyncio.run(main())
    assert 1 <= len(names) <= 2


def test_bad_thread_pool_size_is_a_clear_error() -> None:
    app = make_app()
    app.config["MAX_SYNC_THREADS"] = 0

    @app.route("/")
    def index() -> str:
        return "x"

    with pytest.raises(ValueError, match="MAX_SYNC_THREADS must be a positive integer"):
        run(app, scope_for())


def test_wsgi_async_views_share_one_long_lived_loop_per_thread(app: carboy.Carboy) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    @app.route("/")
    async def index() -> str:
        loops.append(asyncio.get_running_loop())
        return "ok"

    client = app.test_client()
    for _ in range(3):
        assert client.get("/").data == b"ok"
    assert len(loops) == 3
    assert loops[0] is loops[1] is loops[2]
    assert not loops[0].is_closed()


def test_async_everywhere_hooks_handlers_processors(app: carboy.Carboy) -> None:
    calls: list[str] = []
    bp = Blueprint("bp", __name__, url_prefix="/bp")

    @app.before_request
    async def before() -> None:
        await asyncio.sleep(0)
        g.who = "async-before"
        calls.append("before")

    @bp.before_request
    async def bp_before() -> None:
        calls.append("bp_before")

    @app.after_request
    async def after(response: carboy.Response) -> carboy.Response:
        response.headers["X-After"] = "async"
        return response

    @bp.after_request
    async def bp_after(response: carboy.Response) -> carboy.Response:
        response.headers["X-BP-After"] = "async"
        return response

    @app.teardown_request
    async def teardown(exc: BaseException | None) -> None:
        calls.append(f"teardown {type(exc).__name__ if exc else None}")

    @app.context_processor
    async def extra() -> dict[str, str]:
        return {"from_processor": "proc"}

    @app.errorhandler(LookupError)
    async def lookup(e: LookupError) -> tuple[str, int]:
        return f"handled {e}", 409

    @bp.route("/sync")
    def sync_view() -> str:
        return render_template_string("{{ from_processor }} {{ g.who }}")

    @bp.route("/async")
    async def async_view() -> str:
        return render_template_string("{{ from_processor }} {{ g.who }}")

    @app.route("/fail")
    async def fail() -> str:
        raise LookupError("missing")

    app.register_blueprint(bp)
    client = app.test_client()
    for path in ("/bp/sync", "/bp/async"):
        calls.clear()
        rv = client.get(path)
        assert rv.data == b"proc async-before"
        assert rv.headers["X-After"] == "async" and rv.headers["X-BP-After"] == "async"
        assert calls == ["before", "bp_before", "teardown None"]
    rv = client.get("/fail")
    assert (rv.status_code, rv.data) == (409, b"handled missing")


def test_async_method_view(app: carboy.Carboy) -> None:
    class Item(MethodView):
        async def get(self, item_id: int) -> dict[str, t.Any]:
            await asyncio.sleep(0)
            return {"id": item_id, "method": request.method}

        async def post(self, item_id: int) -> tuple[dict[str, t.Any], int]:
            return {"id": item_id, "got": request.get_json()}, 201

    app.add_url_rule("/items/<int:item_id>", view_func=Item.as_view("item"))
    client = app.test_client()
    assert client.get("/items/3").json == {"id": 3, "method": "GET"}
    rv = client.post("/items/4", json={"a": 1})
    assert (rv.status_code, rv.json) == (201, {"id": 4, "got": {"a": 1}})


# -- contexts in tasks and threads -------------------------------------------------------------


def test_context_in_create_task_gather_and_threads() -> None:
    app = make_app()
    gate = asyncio.Event()

    @app.route("/ctx")
    async def ctx_view() -> dict[str, t.Any]:
        g.tag = request.args["tag"]
        session["tag"] = request.args["tag"]

        async def read() -> str:
            await gate.wait()
            return f"{request.args['tag']}/{g.tag}/{session['tag']}/{carboy.current_app.name}"

        task = asyncio.create_task(read())
        gathered = await asyncio.gather(read(), read())

        @copy_current_request_context
        def in_thread(out: list[str]) -> None:
            out.append(request.args["tag"] + "/" + session["tag"])

        out: list[str] = []
        thread = threading.Thread(target=in_thread, args=(out,))
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        return {"task": await task, "gathered": gathered, "thread": out}

    async def main() -> list[Exchange]:
        exchanges = [Exchange() for _ in range(3)]
        calls = [
            app(scope_for(path="/ctx", query=f"tag=t{i}".encode()), e.receive, e.send)
            for i, e in enumerate(exchanges)
        ]
        running = asyncio.gather(*calls)
        await asyncio.sleep(0.01)
        gate.set()  # all three requests wait here together, then read their own context
        await running
        return exchanges

    import json

    for i, exchange in enumerate(asyncio.run(main())):
        data = json.loads(exchange.body)
        expected = f"t{i}/t{i}/t{i}/{__name__}"
        assert data["task"] == expected
        assert data["gathered"] == [expected, expected]
        assert data["thread"] == [f"t{i}/t{i}"]


# -- request bodies ----------------------------------------------------------------------------


def test_async_view_uses_flask_sync_body_api() -> None:
    app = make_app()

    @app.post("/echo")
    async def echo() -> dict[str, t.Any]:
        return {"json": request.get_json(), "data": request.get_data(as_text=True)}

    body = b'{"x": [1, 2]}'
    exchange = run(app, json_post("/echo", body), Exchange([body[:5], body[5:]]))
    assert exchange.status == 200
    assert exchange.body == b'{"data":"{\\"x\\": [1, 2]}","json":{"x":[1,2]}}\n'


def upload_app(kind: str, limit: int) -> carboy.Carboy:
    """An app whose ``POST /up`` echoes the body, from an ``async def`` or a sync view."""
    app = make_app()
    app.config["MAX_CONTENT_LENGTH"] = limit

    def up() -> str:
        return request.get_data(as_text=True)

    async def up_async() -> str:
        return up()

    app.add_url_rule("/up", view_func=up_async if kind == "async" else up, methods=["POST"])
    return app


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_declared_length_over_limit_is_413_without_reading(kind: str) -> None:
    app = upload_app(kind, limit=10)
    exchange = Exchange([b"x" * 50, b"x" * 50])
    run(app, json_post("/up", b"x" * 100), exchange)
    assert exchange.status == 413
    assert exchange.receive_calls == 0


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_undeclared_body_over_limit_stops_reading_at_the_limit(kind: str) -> None:
    app = upload_app(kind, limit=20)
    chunked = scope_for("POST", "/up", [(b"host", b"t"), (b"transfer-encoding", b"chunked")])
    exchange = Exchange([b"a" * 15, b"b" * 15, b"c" * 15, b"d" * 15])
    run(app, chunked, exchange)
    assert exchange.status == 413
    assert exchange.receive_calls < 4  # the rest of the body was never read


def test_large_multipart_upload_spools_to_disk() -> None:
    app = make_app()
    payload = bytes(range(256)) * 8192  # 2 MiB, past the 1 MiB in-memory limit
    seen: dict[str, t.Any] = {}

    @app.post("/upload")
    async def upload() -> dict[str, t.Any]:
        seen["rolled"] = not isinstance(request.environ["wsgi.input"], io.BytesIO)
        data = request.files["f"].read()
        return {"sha": hashlib.sha256(data).hexdigest(), "name": request.form["name"]}

    boundary = b"XyZ"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n--XyZ--\r\n"
    )
    headers = [
        (b"host", b"t"),
        (b"content-type", b"multipart/form-data; boundary=" + boundary),
        (b"content-length", str(len(body)).encode()),
    ]
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    exchange = run(app, scope_for("POST", "/upload", headers), Exchange(chunks))
    assert exchange.status == 200, exchange.body
    assert seen["rolled"] is True
    import json

    assert json.loads(exchange.body) == {
        "sha": hashlib.sha256(payload).hexdigest(),
        "name": "big",
    }


def test_streamed_request_body_is_read_incrementally() -> None:
    app = make_app()
    app.config["MAX_CONTENT_LENGTH"] = 1000
    sizes: list[int] = []

    @app.post("/ingest")
    @stream_request_body
    async def ingest() -> dict[str, int]:
        total = 0
        async for chunk in request.iter_body():
            sizes.append(len(chunk))
            total += len(chunk)
        return {"total": total}

    chunked = [(b"host", b"t"), (b"transfer-encoding", b"chunked")]
    exchange = run(app, scope_for("POST", "/ingest", chunked), Exchange([b"a" * 100] * 5))
    assert exchange.body == b'{"total":500}\n'
    assert sizes == [100] * 5
    over = run(app, scope_for("POST", "/ingest", chunked), Exchange([b"a" * 400] * 5))
    assert over.status == 413


def test_malformed_json_in_async_view_is_400() -> None:
    app = make_app()

    @app.post("/j")
    async def j() -> t.Any:
        return request.get_json()

    assert run(app, json_post("/j", b"{nope"), Exchange([b"{nope"])).status == 400


# -- responses: streaming and disconnects --------------------------------------------------------


def test_sync_async_and_sse_streams_arrive_in_chunks() -> None:
    app = make_app()

    @app.route("/sync")
    def sync_stream() -> t.Any:
        return (f"s{i}" for i in range(3))

    @app.route("/async")
    async def async_stream() -> t.Any:
        async def gen() -> t.AsyncIterator[str]:
            for i in range(3):
                await asyncio.sleep(0)
                yield f"a{i}"

        return gen()

    @app.route("/sse")
    async def sse() -> t.Any:
        async def events() -> t.AsyncIterator[str]:
            for i in range(2):
                yield f"data: {i}\n\n"

        return events(), {"Content-Type": "text/event-stream"}

    @app.route("/ctx")
    def with_ctx() -> t.Any:
        @stream_with_context
        def gen() -> t.Iterator[str]:
            yield request.args["q"]
            yield session.get("missing", "-")

        return gen()

    for path, chunks in (("/sync", [b"s0", b"s1", b"s2"]), ("/async", [b"a0", b"a1", b"a2"])):
        exchange = run(app, scope_for(path=path))
        assert [m["body"] for m in exchange.sent[1:] if m.get("body")] == chunks
        assert exchange.sent[-1] == {"type": "http.response.body", "body": b""}
    sse_exchange = run(app, scope_for(path="/sse"))
    assert sse_exchange.headers[b"content-type"].startswith(b"text/event-stream")
    assert sse_exchange.body == b"data: 0\n\ndata: 1\n\n"
    assert run(app, scope_for(path="/ctx", query=b"q=hi")).body == b"hi-"


@pytest.mark.parametrize("size", [0, 1, 8192, 65536, 65537, 200_000])
def test_file_bodies_arrive_whole(size: int) -> None:
    app = make_app()
    data = bytes(i % 251 for i in range(size))
    opened: list[io.BytesIO] = []

    @app.route("/file")
    def file() -> t.Any:
        opened.append(io.BytesIO(data))
        return send_file(opened[0], mimetype="application/octet-stream")

    exchange = run(app, scope_for(path="/file"))
    assert exchange.status == 200
    assert exchange.headers[b"content-length"] == str(size).encode()
    assert exchange.body == data
    assert not exchange.sent[-1].get("more_body")
    assert opened[0].closed


@pytest.mark.parametrize("source", ["memory", "disk"])
def test_a_file_body_is_sent_in_blocks_of_64_kib_not_8_kib(source: str, tmp_path: t.Any) -> None:
    """Werkzeug reads a file 8 KiB at a time; each step is a trip to the pool, so carboy
    reads just over 64 KiB per trip and sends it as one message; a file that ends within
    the first block is one final message."""
    app = make_app()

    @app.route("/file/<int:size>")
    def file(size: int) -> t.Any:
        if source == "memory":
            return send_file(io.BytesIO(b"x" * size), mimetype="application/octet-stream")
        path = tmp_path / f"{size}.bin"
        path.write_bytes(b"x" * size)
        return send_file(path, mimetype="application/octet-stream")

    def body_sizes(size: int) -> list[tuple[int, bool]]:
        exchange = run(app, scope_for(path=f"/file/{size}"))
        return [(len(m["body"]), bool(m.get("more_body"))) for m in exchange.sent[1:]]

    assert body_sizes(1) == [(1, False)]
    assert body_sizes(65536) == [(65536, False)]
    assert body_sizes(70_000) == [(70_000, False)]
    assert body_sizes(200_000) == [(73728, True), (73728, True), (52544, True), (0, False)]


def test_a_spooled_file_body_stays_in_memory() -> None:
    app = make_app()
    spooled: list[t.Any] = []

    @app.route("/spooled")
    def serve() -> t.Any:
        file = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 (send_file closes it)
        file.write(b"s" * 100_000)
        file.seek(0)
        spooled.append(file)
        return send_file(file, mimetype="application/octet-stream")

    assert run(app, scope_for(path="/spooled")).body == b"s" * 100_000
    assert not spooled[0]._rolled  # never asked for a descriptor, so never written to disk
    assert spooled[0].closed


def test_a_file_that_fails_to_read_is_closed() -> None:
    app = make_app()

    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError("disk gone")

    opened: list[Broken] = []

    @app.route("/broken")
    def broken() -> t.Any:
        opened.append(Broken(b"never read"))
        return send_file(opened[0], mimetype="application/octet-stream")

    with pytest.raises(OSError, match="disk gone"):
        run(app, scope_for(path="/broken"))
    assert opened[0].closed


def test_a_body_is_closed_when_the_start_cannot_be_sent() -> None:
    """A client gone before the response starts is a disconnect, as during the body: the
    body is closed, nothing is raised."""
    app = make_app()
    opened: list[io.BytesIO] = []
    events: list[str] = []

    @app.route("/long")
    def long() -> t.Any:
        opened.append(io.BytesIO(b"l" * 200_000))
        return send_file(opened[0], mimetype="application/octet-stream")

    class Body:
        def __iter__(self) -> Body:
            return self

        def __next__(self) -> bytes:
            return b"never sent"

        def close(self) -> None:
            events.append("closed")

    @app.route("/stream")
    def stream() -> t.Any:
        return carboy.Response(Body())

    class Gone(Exchange):
        async def send(self, message: Message) -> None:
            raise OSError("client gone")

    run(app, scope_for(path="/long"), Gone())
    assert opened[0].closed
    run(app, scope_for(path="/stream"), Gone())
    assert events == ["closed"]


def test_a_trickling_file_body_is_sent_as_it_comes() -> None:
    """A file whose reads come back short (a pipe) is not held back to fill a block."""
    app = make_app()

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.left = [b"first ", b"second ", b"third"]

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: t.Any) -> int:
            if not self.left:
                return 0
            chunk = self.left.pop(0)
            buffer[: len(chunk)] = chunk
            return len(chunk)

    @app.route("/pipe")
    def pipe() -> t.Any:
        return send_file(Trickle(), mimetype="text/plain")

    exchange = run(app, scope_for(path="/pipe"))
    assert [m["body"] for m in exchange.sent[1:]] == [b"first ", b"second ", b"third", b""]


def test_disconnect_closes_sync_stream_and_runs_teardown() -> None:
    app = make_app()
    events: list[str] = []

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        events.append("teardown")

    @app.route("/forever")
    def forever() -> t.Any:
        @stream_with_context
        def gen() -> t.Iterator[str]:
            try:
                while True:
                    yield request.path
            finally:
                events.append("closed")

        return gen()

    run(app, scope_for(path="/forever"), Exchange(disconnect_after=3))
    assert events == ["closed", "teardown"]
    assert _cv_request.get(None) is None


def test_disconnect_closes_async_stream() -> None:
    app = make_app()
    events: list[str] = []

    @app.teardown_request
    async def teardown(exc: BaseException | None) -> None:
        events.append("teardown")

    @app.route("/forever")
    async def forever() -> t.Any:
        async def gen() -> t.AsyncIterator[str]:
            try:
                while True:
                    await asyncio.sleep(0)
                    yield "tick"
            finally:
                events.append("closed")

        return gen()

    exchange = run(app, scope_for(path="/forever"), Exchange(disconnect_after=3))
    assert exchange.status == 200
    assert sorted(events) == ["closed", "teardown"]


# -- lifespan ----------------------------------------------------------------------------------


def lifespan(app: carboy.Carboy, messages: list[str]) -> list[Message]:
    sent: list[Message] = []

    async def main() -> None:
        inbox = [{"type": m} for m in messages]

        async def receive() -> Message:
            return inbox.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    asyncio.run(main())
    return sent


def test_lifespan_runs_startup_and_shutdown_once_in_app_context() -> None:
    app = make_app()
    calls: list[str] = []

    @app.before_serving
    async def open_pool() -> None:
        calls.append(f"async start {carboy.current_app.name}")

    @app.before_serving
    def warm() -> None:
        calls.append("sync start")

    @app.after_serving
    async def close_pool() -> None:
        calls.append("stop")

    sent = lifespan(app, ["lifespan.startup", "lifespan.shutdown"])
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert calls == [f"async start {__name__}", "sync start", "stop"]


def test_failing_startup_reports_the_function() -> None:
    app = make_app()

    @app.before_serving
    def connect_database() -> None:
        raise ConnectionError("db down")

    sent = lifespan(app, ["lifespan.startup"])
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "connect_database" in sent[0]["message"] and "db down" in sent[0]["message"]


def test_wsgi_startup_runs_once_before_the_first_request() -> None:
    app = make_app()
    calls: list[str] = []

    @app.before_serving
    async def start() -> None:
        calls.append("start")

    @app.route("/")
    def index() -> str:
        return str(len(calls))

    client = app.test_client()
    assert client.get("/").data == b"1"
    assert client.get("/").data == b"1"
    assert calls == ["start"]


def test_wsgi_failing_startup_stops_the_worker() -> None:
    app = make_app()

    @app.before_serving
    def load_model() -> None:
        raise RuntimeError("no model file")

    @app.route("/")
    def index() -> str:
        return "never"

    client = app.test_client()
    with pytest.raises(WorkerStartupError) as info:
        client.get("/")
    assert info.value.code == 3
    assert "load_model" in str(info.value) and "no model file" in str(info.value)
    with pytest.raises(WorkerStartupError):
        client.get("/")


# -- WSGI middleware keeps working under ASGI ------------------------------------------------------


def test_wrapped_wsgi_app_applies_under_asgi() -> None:
    app = make_app()

    @app.route("/")
    async def index() -> str:
        return f"{request.remote_addr} {request.scheme}"

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    headers = [
        (b"host", b"t"),
        (b"x-forwarded-for", b"203.0.113.9"),
        (b"x-forwarded-proto", b"https"),
    ]
    assert run(app, scope_for(headers=headers)).body == b"203.0.113.9 https"


def test_context_var_copies_do_not_leak_between_requests() -> None:
    app = make_app()
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")

    @app.route("/set")
    def set_marker() -> str:
        marker.set("set-in-view")
        return marker.get()

    @app.route("/get")
    def get_marker() -> str:
        return marker.get()

    async def main() -> tuple[bytes, bytes]:
        first, second = Exchange(), Exchange()
        await app(scope_for(path="/set"), first.receive, first.send)
        await app(scope_for(path="/get"), second.receive, second.send)
        return first.body, second.body

    assert asyncio.run(main()) == (b"set-in-view", b"unset")


def test_spooled_body_file_is_closed_after_the_response() -> None:
    app = make_app()
    inputs: list[t.Any] = []

    @app.post("/big")
    async def big() -> str:
        inputs.append(request.environ["wsgi.input"])
        return str(len(request.get_data()))

    body = b"z" * (2 * 1024 * 1024)
    headers = [(b"host", b"t"), (b"content-length", str(len(body)).encode())]
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    exchange = run(app, scope_for("POST", "/big", headers), Exchange(chunks))
    assert exchange.body == str(len(body)).encode()
    assert not isinstance(inputs[0], io.BytesIO)  # it went to disk
    assert inputs[0].closed


# -- the environ of an ASGI request is built on first use -------------------------------------


def test_environ_is_built_only_when_the_request_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import carboy.asgi

    built: list[str] = []
    real = carboy.asgi.scope_environ

    def counting(scope: Message, *args: t.Any) -> dict[str, t.Any]:
        built.append(scope["path"])
        return real(scope, *args)

    monkeypatch.setattr(carboy.asgi, "scope_environ", counting)
    app = make_app()

    @app.get("/plain")
    async def plain() -> str:
        return "plain"

    @app.get("/reads/<int:n>")
    async def reads(n: int) -> dict[str, t.Any]:
        return {"n": n, "path": carboy.request.path, "agent": carboy.request.environ["HTTP_X_A"]}

    assert run(app, scope_for(path="/plain")).body == b"plain"
    assert built == []
    ex = run(app, scope_for(path="/reads/7", headers=[(b"host", b"h"), (b"x-a", b"b")]))
    assert ex.status == 200
    assert json.loads(ex.body) == {"n": 7, "path": "/reads/7", "agent": "b"}
    assert built == ["/reads/7"]  # once, however often the request is read


def test_root_path_is_stripped_before_matching_without_an_environ() -> None:
    app = make_app()

    @app.get("/hello")
    async def hello() -> str:
        return "hello"

    @app.get("/where")
    async def where() -> dict[str, str]:
        return {"root": carboy.request.script_root, "path": carboy.request.path}

    scope = scope_for(path="/api/hello")
    scope["root_path"] = "/api"
    assert run(app, scope).body == b"hello"
    scope = scope_for(path="/api/where")
    scope["root_path"] = "/api"
    assert json.loads(run(app, scope).body) == {"root": "/api", "path": "/where"}


def test_get_with_a_body_is_read_for_an_async_view() -> None:
    app = make_app()

    @app.get("/echo")
    async def echo() -> str:
        return carboy.request.get_data(as_text=True)

    headers = [(b"host", b"h"), (b"content-length", b"5")]
    ex = run(app, scope_for(path="/echo", headers=headers), Exchange([b"he", b"llo"]))
    assert (ex.status, ex.body) == (200, b"hello")


def test_websocket_upgrade_over_http_gets_werkzeugs_answer_under_both_protocols() -> None:
    app = make_app()

    @app.get("/page")
    async def page() -> str:
        return "page"

    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    wsgi = app.test_client().get("/page", headers=upgrade)
    raw = [(b"host", b"h"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
    ex = run(app, scope_for(path="/page", headers=raw))
    assert wsgi.status_code == 400  # Werkzeug: a WebSocket handshake to an HTTP rule
    assert ex.status == wsgi.status_code


def test_copied_request_context_of_an_asgi_request_works_in_a_thread() -> None:
    app = make_app()
    seen: list[t.Any] = []

    @app.get("/copy")
    async def copy() -> str:
        @carboy.copy_current_request_context
        def in_thread() -> None:
            seen.append((carboy.request.path, carboy.request.args["q"]))

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        return "ok"

    assert run(app, scope_for(path="/copy", query=b"q=1")).body == b"ok"
    assert seen == [("/copy", "1")]


def test_overridden_request_context_is_used_under_both_protocols() -> None:
    calls: list[str] = []

    class App(carboy.Carboy):
        def request_context(self, environ: t.Any) -> t.Any:
            calls.append(environ["PATH_INFO"])
            return super().request_context(environ)

    app = App(__name__)

    @app.get("/x")
    async def x() -> str:
        return "x"

    client = app.test_client()
    assert client.get("/x").data == b"x"  # the first request decides what is plain
    assert client.get("/x").data == b"x"
    assert run(app, scope_for(path="/x")).body == b"x"
    assert calls == ["/x", "/x", "/x"]
