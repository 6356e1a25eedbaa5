"""Request bodies under ASGI: the same answer as WSGI whatever the message boundaries, body
limits that refuse (413) rather than cut, routing errors before body errors, and large bodies
of ``async def`` views parsed off the event loop.

Driven in process with hand-made receive/send callables (``test_asgi``'s), which choose the
``http.request`` message boundaries exactly; ``test_asgi_body_fuzz`` draws them at random.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
import typing as t

import pytest

import carboy
from carboy import request, stream_request_body
from carboy.json.provider import DefaultJSONProvider
from servers import Server, free_port, tool
from test_asgi import Exchange, make_app, run, scope_for

LIMIT = 1024 * 1024
BLOCK = 64 * 1024  # granian's and hypercorn's message size: 16 of them make LIMIT exactly


def chunked(content_type: bytes = b"application/octet-stream") -> list[tuple[bytes, bytes]]:
    return [(b"host", b"t"), (b"transfer-encoding", b"chunked"), (b"content-type", content_type)]


def blocks(body: bytes, size: int = BLOCK) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


# -- a multipart body cut inside its closing delimiter -----------------------------------------

FORM = (
    b'--X\r\nContent-Disposition: form-data; name="a"\r\n\r\nabc\r\n'
    b'--X\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n'
    b"123456789\r\n--X--\r\n"
)


def form_app(kind: str) -> carboy.Carboy:
    app = make_app()

    def echo() -> dict[str, t.Any]:
        files = {k: f.read().decode("latin-1") for k, f in request.files.items()}
        return {"form": request.form.to_dict(), "files": files}

    async def echo_async() -> dict[str, t.Any]:
        return echo()

    view = echo_async if kind == "async" else echo
    app.add_url_rule("/form", view_func=view, methods=["POST"])
    return app


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_multipart_parses_the_same_wherever_the_messages_split(kind: str) -> None:
    # A message ending between "--X-" and "-\r\n" made the last part "123456789\r" (10
    # bytes) for sync views: Werkzeug's parser got one read per message.
    app = form_app(kind)
    expected = app.test_client().post(
        "/form", data=FORM, content_type="multipart/form-data; boundary=X"
    )
    assert expected.get_json() == {"form": {"a": "abc"}, "files": {"f": "123456789"}}
    headers = [
        (b"host", b"t"),
        (b"content-type", b"multipart/form-data; boundary=X"),
        (b"content-length", str(len(FORM)).encode()),
    ]
    for cut in range(1, len(FORM)):
        exchange = run(app, scope_for("POST", "/form", headers), Exchange([FORM[:cut], FORM[cut:]]))
        assert (exchange.status, json.loads(exchange.body)) == (200, expected.get_json()), cut
    one_byte = Exchange([FORM[i : i + 1] for i in range(len(FORM))])
    exchange = run(app, scope_for("POST", "/form", headers), one_byte)
    assert json.loads(exchange.body) == expected.get_json()


# -- MAX_CONTENT_LENGTH with a chunked body ----------------------------------------------------


def _read_get_data() -> int:
    return len(request.get_data())


def _read_stream_at_once() -> int:
    return len(request.stream.read())


def _read_stream_in_pieces() -> int:
    size = 0
    while piece := request.stream.read(5000):
        size += len(piece)
    return size


def _read_form() -> int:
    return len(request.form["v"])


def _read_json() -> int:
    return len(request.get_json())


READERS: dict[str, tuple[t.Callable[[], int], bytes, t.Callable[[int], bytes]]] = {
    # name → (view body, content type, a body of n bytes for it)
    "get_data": (_read_get_data, b"application/octet-stream", lambda n: b"a" * n),
    "stream.read()": (_read_stream_at_once, b"application/octet-stream", lambda n: b"a" * n),
    "stream.read(n)": (_read_stream_in_pieces, b"application/octet-stream", lambda n: b"a" * n),
    "form": (_read_form, b"application/x-www-form-urlencoded", lambda n: b"v=" + b"a" * (n - 2)),
    "get_json": (_read_json, b"application/json", lambda n: b'"' + b"a" * (n - 2) + b'"'),
}


def limited_app(reader: t.Callable[[], int], kind: str) -> carboy.Carboy:
    app = make_app()
    app.config.update(MAX_CONTENT_LENGTH=LIMIT, MAX_FORM_MEMORY_SIZE=None)

    async def view_async() -> dict[str, int]:
        return {"size": reader()}

    def view() -> dict[str, int]:
        return {"size": reader()}

    app.add_url_rule("/up", view_func=view_async if kind == "async" else view, methods=["POST"])
    return app


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("name", list(READERS))
def test_a_chunked_body_over_the_limit_is_refused_not_cut(name: str, kind: str) -> None:
    # 64 KiB messages line up with a 1 MiB limit: a sync view got the first 1,048,576 bytes
    # of a 2 MiB body, with 200.
    reader, content_type, make = READERS[name]
    app = limited_app(reader, kind)
    for size, split in [
        (2 * LIMIT, BLOCK),
        (LIMIT + 1, BLOCK),
        (LIMIT + BLOCK, BLOCK),
        (LIMIT + 1, LIMIT),
        (LIMIT + 10, 1000),
    ]:
        exchange = Exchange(blocks(make(size), split))
        run(app, scope_for("POST", "/up", chunked(content_type)), exchange)
        assert exchange.status == 413, (size, split, exchange.body[:80])


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("name", list(READERS))
def test_a_chunked_body_of_exactly_the_limit_passes(name: str, kind: str) -> None:
    reader, content_type, make = READERS[name]
    app = limited_app(reader, kind)
    body = make(LIMIT)
    expected = {"size": len(body) - (2 if name in ("form", "get_json") else 0)}
    for chunks in [blocks(body), [*blocks(body), b""], [body], blocks(body, 1000)]:
        exchange = run(app, scope_for("POST", "/up", chunked(content_type)), Exchange(chunks))
        assert (exchange.status, json.loads(exchange.body)) == (200, expected)


def test_iter_body_and_streamed_views_refuse_a_chunked_body_over_the_limit() -> None:
    app = make_app()
    app.config["MAX_CONTENT_LENGTH"] = LIMIT

    async def count() -> dict[str, int]:
        size = 0
        async for chunk in request.iter_body():
            size += len(chunk)
        return {"size": size}

    app.add_url_rule("/received", "received", count, methods=["POST"])
    app.add_url_rule("/streamed", "streamed", stream_request_body(count), methods=["POST"])
    for path in ("/received", "/streamed"):
        over = run(app, scope_for("POST", path, chunked()), Exchange(blocks(b"a" * 2 * LIMIT)))
        assert over.status == 413, path
        exact = run(app, scope_for("POST", path, chunked()), Exchange(blocks(b"a" * LIMIT)))
        assert (exact.status, json.loads(exact.body)) == (200, {"size": LIMIT}), path


def test_the_refusal_holds_under_wsgi_too(client: t.Any) -> None:
    # Werkzeug's stream stops at MAX_CONTENT_LENGTH and get_data hands on the body cut there.
    app = client.application
    app.config["MAX_CONTENT_LENGTH"] = 100

    @app.post("/up")
    def up() -> str:
        return str(len(request.get_data()))

    for size, status in [(99, 200), (100, 200), (101, 413), (300, 413)]:
        response = client.post(
            "/up",
            input_stream=io.BytesIO(b"a" * size),
            headers={"Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
        assert response.status_code == status, size
        if status == 200:
            assert response.data == str(size).encode()


# -- routing errors before body errors ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_routing_errors_come_before_body_errors(client: t.Any, kind: str) -> None:
    # Flask answers 405 for a POST with a body over the limit to a GET-only route (the body
    # is never read); carboy under ASGI answered 413, reading the body first.
    app = client.application
    app.config["MAX_CONTENT_LENGTH"] = 10

    if kind == "async":

        @app.get("/only-get")
        async def only_get() -> str:
            return "got"

    else:

        @app.get("/only-get")
        def only_get() -> str:
            return "got"

    big = b"a" * 100
    assert client.post("/only-get", data=big).status_code == 405
    assert client.post("/nowhere", data=big).status_code == 404
    assert client.get("/only-get").data == b"got"


@pytest.mark.parametrize("hook", ["sync", "async"])
def test_a_hook_that_reads_the_body_of_an_unrouted_request_gets_413(hook: str) -> None:
    # Flask runs before_request functions before raising the routing error; one that reads
    # the body meets the limit first.
    app = make_app()
    app.config["MAX_CONTENT_LENGTH"] = 10
    seen: list[int] = []

    def read() -> None:
        seen.append(len(request.get_data()))

    async def read_async() -> None:
        read()

    app.before_request(read_async if hook == "async" else read)
    over = [(b"host", b"t"), (b"content-length", b"100")]
    assert run(app, scope_for("POST", "/nowhere", over), Exchange([b"a" * 100])).status == 413
    exchange = run(app, scope_for("POST", "/nowhere", chunked()), Exchange([b"a" * 5] * 3))
    assert exchange.status == 413
    fits = run(app, scope_for("POST", "/nowhere", chunked()), Exchange([b"a" * 5, b"a" * 5]))
    assert fits.status == 404
    assert seen == [10]


def test_an_async_endpoint_meets_the_limit_only_when_it_reads_the_body(client: t.Any) -> None:
    # As under WSGI: a before-request answer or a view that ignores the body wins; reading
    # it raises 413. Under ASGI the body was refused while being received, before the view.
    app = client.application
    app.config["MAX_CONTENT_LENGTH"] = 10

    @app.before_request
    async def members_only() -> t.Any:
        if request.args.get("member") != "yes":
            return "members only", 401
        return None

    @app.post("/ignore")
    async def ignore() -> str:
        return "ignored"

    @app.post("/read")
    async def read() -> str:
        return request.get_data(as_text=True)

    @app.errorhandler(404)
    async def not_found(e: Exception) -> t.Any:
        return f"no page for {len(request.get_data())} bytes", 404

    big = b"a" * 100
    assert client.post("/read", data=big).status_code == 401
    assert client.post("/ignore?member=yes", data=big).data == b"ignored"
    assert client.post("/read?member=yes", data=big).status_code == 413
    assert client.post("/read?member=yes", data=b"a" * 10).data == b"a" * 10
    assert client.post("/nowhere?member=yes", data=b"abc").data == b"no page for 3 bytes"


def test_a_refused_body_is_not_received_further() -> None:
    app = make_app()
    app.config["MAX_CONTENT_LENGTH"] = 10

    @app.post("/ignore")
    async def ignore() -> str:
        return "ignored"

    declared = [(b"host", b"t"), (b"content-length", b"400")]
    for headers, calls in [(chunked(), 1), (declared, 0)]:
        for path, status in [("/ignore", 200), ("/only-get", 404)]:
            exchange = Exchange([b"a" * 100] * 4)
            run(app, scope_for("POST", path, headers), exchange)
            assert (exchange.status, exchange.receive_calls) == (status, calls)


# -- large bodies of async views parsed off the loop -------------------------------------------


def many_fields(count: int) -> bytes:
    return (
        b"".join(
            b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n' % i + b"v" * 100 + b"\r\n"
            for i in range(count)
        )
        + b"--B--\r\n"
    )


def test_a_large_form_in_an_async_view_does_not_hold_up_the_loop() -> None:
    # A 50 MB upload parsed in an async view stalled the worker's other requests 94-141 ms.
    # Counted, not timed: while the form is parsed, the loop must go on answering. Parsed on
    # the loop, nothing else runs there until the parse ends.
    app = make_app()
    app.config["MAX_FORM_PARTS"] = None
    body = many_fields(12_000)  # ~1.6 MB; Werkzeug takes ~350 ms here
    sizes: list[int] = []
    window: list[float] = []  # when the form parse started and ended

    class Timed(carboy.Request):
        def make_form_data_parser(self) -> t.Any:
            parser = super().make_form_data_parser()
            parse = parser.parse

            def timed(*args: t.Any, **kwargs: t.Any) -> t.Any:
                window.append(time.perf_counter())
                try:
                    return parse(*args, **kwargs)
                finally:
                    window.append(time.perf_counter())

            parser.parse = timed  # type: ignore[method-assign]
            return parser

    app.request_class = Timed

    @app.post("/upload")
    async def upload() -> str:
        sizes.append(len(request.form))
        return "ok"

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    headers = [
        (b"host", b"t"),
        (b"content-type", b"multipart/form-data; boundary=B"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def main() -> tuple[list[float], list[float]]:
        done = asyncio.Event()
        ticks: list[float] = []
        pings: list[float] = []

        async def heartbeat() -> None:
            while not done.is_set():
                await asyncio.sleep(0.001)
                ticks.append(time.perf_counter())

        async def pinger() -> None:
            while not done.is_set():
                exchange = Exchange()
                await app(scope_for("GET", "/ping"), exchange.receive, exchange.send)
                assert exchange.body == b"pong"
                pings.append(time.perf_counter())
                await asyncio.sleep(0.001)

        async def upload() -> None:
            exchange = Exchange(blocks(body))
            await app(scope_for("POST", "/upload", headers), exchange.receive, exchange.send)
            assert exchange.body == b"ok"
            done.set()

        await asyncio.wait_for(asyncio.gather(heartbeat(), pinger(), upload()), timeout=60)
        return ticks, pings

    ticks, pings = asyncio.run(main())
    assert sizes == [12_000]
    assert len(window) == 2, "the form was parsed once"
    start, end = window
    assert end - start > 0.02, f"the parse took {(end - start) * 1000:.0f} ms: too short to tell"
    # In the pool the loop only shares the GIL (switched every 5 ms): it ticks and answers
    # pings throughout the parse. On the loop: no tick, no ping, until the parse ends.
    assert sum(start < tick < end for tick in ticks) >= 3
    assert sum(start < answer < end for answer in pings) >= 1


@pytest.mark.parametrize("kind", ["form", "json"])
def test_a_body_parsed_off_the_loop_reads_as_it_would_on_it(kind: str) -> None:
    app = make_app()
    seen: dict[str, t.Any] = {"threads": set()}

    class Parsing(carboy.Request):
        def make_form_data_parser(self) -> t.Any:
            seen["threads"].add(threading.current_thread())
            return super().make_form_data_parser()

    class Loading(DefaultJSONProvider):
        def loads(self, s: str | bytes, **kwargs: t.Any) -> t.Any:
            seen["threads"].add(threading.current_thread())
            return super().loads(s, **kwargs)

    app.request_class = Parsing
    app.json = Loading(app)
    fields = {f"k{i}": "v" * 50 for i in range(900)}  # under MAX_FORM_PARTS (1000)
    if kind == "form":
        from urllib.parse import urlencode

        body = urlencode(fields).encode()
        content_type = b"application/x-www-form-urlencoded"
    else:
        body = json.dumps(fields).encode() + b" " * 300_000
        content_type = b"application/json"

    @app.post("/a")
    async def parsed() -> str:
        value = request.form.to_dict() if kind == "form" else request.get_json()
        seen["value"] = value
        seen["again"] = request.form.to_dict() if kind == "form" else request.get_json()
        seen["data"] = request.get_data()
        return "ok"

    @app.post("/raw")
    async def raw() -> str:
        seen["raw"] = request.stream.read()
        seen["raw_value"] = request.form.to_dict() if kind == "form" else request.get_json()
        return "ok"

    length = str(len(body)).encode()
    headers = [(b"host", b"t"), (b"content-type", content_type), (b"content-length", length)]
    loop_thread = threading.current_thread()
    assert run(app, scope_for("POST", "/a", headers), Exchange(blocks(body))).body == b"ok"
    assert seen["value"] == seen["again"] == fields
    assert len(seen["threads"]) == 1 and loop_thread not in seen["threads"]  # parsed once
    # As in Flask: after a form is parsed the body is spent; JSON keeps it as data.
    assert seen["data"] == (b"" if kind == "form" else body)
    # A view that reads the stream first gets the body whole, as in Flask.
    if kind == "form":
        assert run(app, scope_for("POST", "/raw", headers), Exchange([body])).body == b"ok"
        assert seen["raw"] == body and seen["raw_value"] == {}


# -- end to end, under real servers ------------------------------------------------------------


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn", "granian"])
def body_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[Server]:
    port = free_port()
    target = "body_demo:app"
    host = ("--host", "127.0.0.1", "--port", str(port))
    cmd = {
        "uvicorn": [*tool("uvicorn"), *host, target],
        "hypercorn": [*tool("hypercorn"), "--bind", f"127.0.0.1:{port}", target],
        "granian": [*tool("granian"), "--interface", "asgi", *host, target],
    }[request.param]
    log = tmp_path_factory.mktemp("body") / f"{request.param}.log"
    with Server(cmd, port, log) as server:
        server.wait_until_up("/ping")
        yield server


def exchange_raw(server: Server, head: bytes, pieces: list[bytes]) -> tuple[int, bytes]:
    """Send *head* then each of *pieces* in its own TCP segment (with a pause between, so the
    server reads them apart); return the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head)
        try:
            for piece in pieces:
                time.sleep(0.02)
                sock.sendall(piece)
        except OSError:
            pass  # the server answered and closed before the whole body was sent
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers.lower():
        body = dechunk(body)
    return int(status_line.split()[1]), body


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def in_chunks(pieces: list[bytes]) -> list[bytes]:
    """*pieces* in HTTP/1.1 chunked framing, one chunk each, then the last chunk."""
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_served_multipart_split_in_its_closing_delimiter(body_server: Server, kind: str) -> None:
    head = (
        b"POST /form/%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=X\r\nContent-Length: %d\r\n\r\n"
    ) % (kind.encode(), len(FORM))
    cut = FORM.index(b"--X--") + 4
    status, body = exchange_raw(body_server, head, [FORM[:cut], FORM[cut:]])
    assert (status, json.loads(body)) == (200, {"form": {"a": "abc"}, "files": {"f": "123456789"}})


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_served_chunked_body_over_the_limit_is_refused(body_server: Server, kind: str) -> None:
    head = (
        b"POST /size/%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ) % kind.encode()
    exact = in_chunks(blocks(b"a" * LIMIT))
    assert exchange_raw(body_server, head, exact) == (200, b'{"size":%d}\n' % LIMIT)
    over = in_chunks(blocks(b"a" * 2 * LIMIT))
    assert exchange_raw(body_server, head, over)[0] == 413
