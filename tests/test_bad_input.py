"""Bad input gets a clear 4xx, never a 500 or a hang."""

from __future__ import annotations

import io
import json
import logging
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from werkzeug.test import EnvironBuilder

import carboy
from carboy import request
from carboy.testing import ASGIClient
from servers import Server, free_port, tool
from test_asgi import Exchange, scope_for
from test_asgi import run as run_asgi

URLENCODED = "application/x-www-form-urlencoded"


@pytest.fixture
def echo_app(app: carboy.Carboy) -> carboy.Carboy:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/json", methods=["POST"])
    def json_view() -> t.Any:
        return {"got": request.get_json()}

    @app.route("/form", methods=["POST"])
    def form_view() -> t.Any:
        return {"fields": len(request.form), "files": len(request.files)}

    @app.route("/data", methods=["POST"])
    def data_view() -> t.Any:
        return {"size": len(request.get_data())}

    @app.route("/only-get")
    def only_get() -> str:
        return "get"

    return app


def test_malformed_json_is_400(echo_app: carboy.Carboy) -> None:
    rv = echo_app.test_client().post("/json", data="{not json", content_type="application/json")
    assert rv.status_code == 400


def test_wrong_content_type_for_get_json_is_415(echo_app: carboy.Carboy) -> None:
    rv = echo_app.test_client().post("/json", data='{"a": 1}', content_type="text/plain")
    assert rv.status_code == 415


def test_valid_json_is_accepted(echo_app: carboy.Carboy) -> None:
    rv = echo_app.test_client().post("/json", json={"a": 1})
    assert (rv.status_code, rv.json) == (200, {"got": {"a": 1}})


def test_body_over_max_content_length_is_413(echo_app: carboy.Carboy) -> None:
    echo_app.config["MAX_CONTENT_LENGTH"] = 100
    client = echo_app.test_client()
    assert client.post("/data", data=b"x" * 101).status_code == 413
    assert client.post("/form", data={"f": "x" * 200}).status_code == 413
    assert client.post("/data", data=b"x" * 100).json == {"size": 100}


def test_more_form_parts_than_max_form_parts_is_413(echo_app: carboy.Carboy) -> None:
    echo_app.config["MAX_FORM_PARTS"] = 5
    client = echo_app.test_client()
    fields = {f"f{i}": "v" for i in range(6)}
    rv = client.post("/form", data=fields, content_type="multipart/form-data")
    assert rv.status_code == 413
    ok = client.post(
        "/form", data=dict(list(fields.items())[:4]), content_type="multipart/form-data"
    )
    assert ok.json == {"fields": 4, "files": 0}


def test_form_field_over_max_form_memory_size_is_413(echo_app: carboy.Carboy) -> None:
    echo_app.config["MAX_FORM_MEMORY_SIZE"] = 50
    rv = echo_app.test_client().post(
        "/form", data={"big": "x" * 51}, content_type="multipart/form-data"
    )
    assert rv.status_code == 413


def test_unsupported_method_is_405_with_allow(echo_app: carboy.Carboy) -> None:
    rv = echo_app.test_client().delete("/only-get")
    assert rv.status_code == 405
    assert set(rv.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


@pytest.mark.parametrize(
    "path",
    [
        "/static/../conftest.py",
        "/static/..%2fconftest.py",
        "/static/%2e%2e/conftest.py",
        "/static/%2e%2e%2fconftest.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/..\\conftest.py",
        "/static/sub/../../conftest.py",
    ],
)
def test_static_path_traversal_is_404(echo_app: carboy.Carboy, path: str) -> None:
    client = echo_app.test_client()
    assert client.get("/static/style.css").status_code == 200
    # Merged slashes answer a redirect to the same path inside /static/ (as in Flask); it must
    # end in 404 and never serve a file from outside the folder.
    rv = client.get(path, follow_redirects=True)
    assert rv.status_code == 404, (path, rv.status_code, rv.data[:80])
    assert all(urlsplit(r.headers["Location"]).path.startswith("/static/") for r in rv.history)


def test_tampered_session_cookie_gives_empty_session(app: carboy.Carboy) -> None:
    @app.route("/set")
    def set_value() -> str:
        carboy.session["user"] = "ann"
        return "set"

    @app.route("/get")
    def get_value() -> str:
        return repr(dict(carboy.session))

    client = app.test_client()
    client.get("/set")
    cookie = client.get_cookie("session")
    assert cookie is not None
    value = cookie.value
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    client.set_cookie("session", tampered)
    rv = client.get("/get")
    assert (rv.status_code, rv.data) == (200, b"{}")
    client.set_cookie("session", "garbage-not-even-base64!!")
    assert client.get("/get").data == b"{}"


def test_invalid_percent_encoding_and_unicode_paths(echo_app: carboy.Carboy) -> None:
    client = echo_app.test_client()
    for path in ["/%ff%fe", "/only-get%00", "/\u00e9\u00e8"]:
        assert client.get(path).status_code == 404


def test_untrusted_host_is_400(echo_app: carboy.Carboy) -> None:
    echo_app.config["TRUSTED_HOSTS"] = ["good.test"]
    client = echo_app.test_client()
    assert client.get("/only-get", base_url="http://good.test").status_code == 200
    assert client.get("/only-get", base_url="http://evil.test").status_code == 400


def _get_raw_query(app: carboy.Carboy, path: str, query: bytes) -> tuple[int, bytes]:
    """GET *path* with *query* passed on as raw bytes, as a lax server would (the test client
    re-encodes a query string), over ASGI when the app's test client is the ASGI one, else
    over WSGI. Returns the status code and the body."""
    if app.test_client_class is ASGIClient:
        exchange = run_asgi(app, scope_for(path=path, query=query))
        return exchange.status, exchange.body
    environ = EnvironBuilder(path).get_environ()
    environ["QUERY_STRING"] = query.decode("latin-1")  # PEP 3333: bytes as latin-1
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    return int(status[0].split()[0]), body


def test_query_string_bytes_that_are_not_utf8_stay_percent_encoded(
    echo_app: carboy.Carboy,
) -> None:
    """Werkzeug decodes the query string strictly, so raw bytes that are not UTF-8 made
    ``request.args`` and ``request.full_path`` raise (a 500). They now parse as Werkzeug
    parses their percent-encoded form."""

    @echo_app.route("/query")
    def query() -> t.Any:
        return {"args": request.args.to_dict(flat=False), "full_path": request.full_path}

    status, body = _get_raw_query(echo_app, "/query", b"a=\xff&b=%ff&c=caf\xc3\xa9&d=\xc3")
    assert status == 200
    assert json.loads(body) == {
        "args": {"a": ["%FF"], "b": ["%FF"], "c": ["caf\u00e9"], "d": ["%C3"]},
        "full_path": "/query?a=%FF&b=%ff&c=caf\u00e9&d=%C3",
    }


# -- issue 18: where Flask is lenient and carboy is safe ---------------------------------------


def _exchange(
    app: carboy.Carboy,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    chunks: list[bytes] | None = None,
    *,
    chunked: bool = False,
    protocol: str = "HTTP/1.1",
) -> tuple[int, bytes]:
    """Send one request to *app* as a server would, over ASGI when the app's test client is
    the ASGI one, else over WSGI; returns the status code and the body.

    :param headers: the request headers (``Host`` among them, or none when left out).
    :param chunks: the body, in the pieces the server passes on.
    :param chunked: send the body as ``Transfer-Encoding: chunked`` (no ``Content-Length``);
        a WSGI server that dechunks it sets ``wsgi.input_terminated``.
    :param protocol: the HTTP version.
    """
    headers = dict(headers or {})
    body = b"".join(chunks or [])
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    elif chunks is not None:
        headers["Content-Length"] = str(len(body))
    if app.test_client_class is ASGIClient:
        scope = scope_for(
            method, path, [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        )
        scope["http_version"] = protocol.partition("/")[2]
        exchange = run_asgi(app, scope, Exchange(chunks))
        return exchange.status, exchange.body
    environ = EnvironBuilder(path, method=method).get_environ()
    for key in ("HTTP_HOST", "CONTENT_LENGTH", "CONTENT_TYPE"):
        environ.pop(key, None)
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    environ["SERVER_PROTOCOL"] = protocol
    environ["wsgi.input"] = io.BytesIO(body)
    if chunked:
        environ["wsgi.input_terminated"] = True
    status: list[str] = []
    answer = app(environ, lambda s, h, e=None: status.append(s))
    try:
        data = b"".join(answer)
    finally:
        getattr(answer, "close", lambda: None)()
    return int(status[0].split()[0]), data


# 8. Deeply nested JSON: RecursionError is not a ValueError, so Werkzeug let it out (500).


def test_deeply_nested_json_is_400(echo_app: carboy.Carboy) -> None:
    @echo_app.route("/json-attr", methods=["POST"])
    def json_attr() -> t.Any:
        return {"got": request.json}

    @echo_app.route("/json-silent", methods=["POST"])
    def json_silent() -> t.Any:
        return {"got": request.get_json(silent=True)}

    client = echo_app.test_client()
    for body in ("[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1"):
        for path in ("/json", "/json-attr"):
            rv = client.post(path, data=body, content_type="application/json")
            assert rv.status_code == 400, (path, body[:5], rv.status_code)
        rv = client.post("/json-silent", data=body, content_type="application/json")
        assert (rv.status_code, rv.json) == (200, {"got": None})
    # Nesting the parser handles is still parsed.
    rv = client.post("/json", data="[" * 100 + "]" * 100, content_type="application/json")
    assert rv.status_code == 200


def test_deeply_nested_json_goes_through_on_json_loading_failed(app: carboy.Carboy) -> None:
    class Lenient(carboy.Request):
        def on_json_loading_failed(self, e: ValueError | None) -> t.Any:
            return {"failed": str(e)}

    app.request_class = Lenient

    @app.route("/json", methods=["POST"])
    def json_view() -> t.Any:
        return {"got": request.get_json()}

    rv = app.test_client().post("/json", data="[" * 100_000, content_type="application/json")
    assert rv.status_code == 200
    assert "nested too deeply" in rv.json["got"]["failed"]


# 9. A chunked body over MAX_CONTENT_LENGTH, on a WSGI server that ends the body itself
# (wsgi.input_terminated), reached the view cut to exactly the limit.


@pytest.fixture
def limited_app(echo_app: carboy.Carboy) -> carboy.Carboy:
    echo_app.config["MAX_CONTENT_LENGTH"] = 100

    @echo_app.route("/stream", methods=["POST"])
    def stream_view() -> t.Any:
        return {"size": len(request.stream.read())}

    @echo_app.route("/stream-parts", methods=["POST"])
    def stream_parts() -> t.Any:
        size = 0
        while chunk := request.stream.read(7):
            size += len(chunk)
        return {"size": size}

    return echo_app


@pytest.mark.parametrize("path", ["/data", "/form", "/json", "/stream", "/stream-parts"])
def test_chunked_body_over_max_content_length_is_413(limited_app: carboy.Carboy, path: str) -> None:
    types = {"/form": "application/x-www-form-urlencoded", "/json": "application/json"}
    headers = {"Host": "localhost", "Content-Type": types.get(path, "application/octet-stream")}

    def body(size: int) -> bytes:
        if path == "/json":
            return b'"' + b"x" * (size - 2) + b'"'
        return b"f=" + b"x" * (size - 2)

    for size in (101, 150, 5000):
        data = body(size)
        status, answer = _exchange(
            limited_app, "POST", path, headers, [data[:60], data[60:]], chunked=True
        )
        assert status == 413, (size, status, answer[:80])
    # Exactly the limit, and under it, arrive whole.
    for size in (100, 99):
        data = body(size)
        status, answer = _exchange(
            limited_app, "POST", path, headers, [data[:60], data[60:]], chunked=True
        )
        expected = {
            "/form": {"fields": 1, "files": 0},
            "/json": {"got": "x" * (size - 2)},
        }.get(path, {"size": size})
        assert (status, json.loads(answer)) == (200, expected), size


def test_chunked_body_of_exactly_the_limit_is_read_whole(limited_app: carboy.Carboy) -> None:
    headers = {"Host": "localhost", "Content-Type": "application/octet-stream"}
    for chunks in ([b"x" * 100], [b"x" * 50, b"x" * 50], [b"x"] * 100):
        for path in ("/data", "/stream", "/stream-parts"):
            status, answer = _exchange(limited_app, "POST", path, headers, chunks, chunked=True)
            assert (status, json.loads(answer)) == (200, {"size": 100}), path


@pytest.mark.parametrize("server", ["gunicorn", "dev-server", "granian-wsgi"])
def test_chunked_body_over_max_content_length_is_413_on_wsgi_servers(
    server: str, tmp_path: Path
) -> None:
    """End to end: the body sent with ``Transfer-Encoding: chunked`` by httpx."""
    port = free_port()
    target = "input_limits:app"
    commands = {
        "gunicorn": [*tool("gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", target],
        "dev-server": [
            *tool("carboy"),
            *("--app", target, "run", "--port", str(port), "--no-reload", "--no-debugger"),
        ],
        "granian-wsgi": [
            *tool("granian"),
            *("--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port), target),
        ],
    }
    with Server(commands[server], port, tmp_path / f"{server}.log") as running:
        running.wait_until_up("/sync")
        with httpx.Client(base_url=running.base_url, timeout=10.0) as http:
            for path, content_type, body in [
                ("/data", "application/octet-stream", b"x" * 150),
                ("/stream", "application/octet-stream", b"x" * 101),
                ("/form", "application/x-www-form-urlencoded", b"f=" + b"x" * 148),
                ("/json", "application/json", b'"' + b"x" * 148 + b'"'),
            ]:
                pieces = iter([body[:60], body[60:]])
                rv = http.post(path, content=pieces, headers={"Content-Type": content_type})
                assert rv.request.headers.get("Transfer-Encoding") == "chunked"
                assert rv.status_code == 413, (path, rv.status_code, rv.text[:80])
            whole = iter([b"x" * 60, b"x" * 40])
            rv = http.post("/data", content=whole)
            assert (rv.status_code, rv.json()) == (200, {"size": 100})


# 11. Control characters in a path were written raw into the error log.


@pytest.mark.parametrize(
    ("path", "raw", "escaped"),
    [
        ("/boom/%1b[31mred", "\x1b", "\\x1b[31mred"),
        ("/boom/a%0d%0a[ERROR] forged", "\r\n", "a\\x0d\\x0a[ERROR] forged"),
        ("/boom/nul%00byte", "\x00", "nul\\x00byte"),
        ("/boom/%e2%80%aeevil", "\u202e", "\\u202eevil"),
        ("/boom/back%5cslash%5cx1b", None, "back\\\\slash\\\\x1b"),
    ],
)
def test_control_characters_of_a_path_are_escaped_in_the_error_log(
    echo_app: carboy.Carboy,
    caplog: pytest.LogCaptureFixture,
    path: str,
    raw: str | None,
    escaped: str,
) -> None:
    @echo_app.before_request
    def boom() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger=echo_app.logger.name):
        assert echo_app.test_client().get(path).status_code == 500
    messages = [r.getMessage() for r in caplog.records if r.name == echo_app.logger.name]
    assert len(messages) == 1
    assert messages[0] == f"Exception on /boom/{escaped} [GET]"
    if raw is not None:
        assert raw not in messages[0]


def test_loggable_keeps_printable_text() -> None:
    from carboy.logging import loggable

    for text in ("/plain/path", "/caf\u00e9/\u65e5\u672c", ""):
        assert loggable(text) is text
    assert loggable("a\tb\x7f\x9b\U000e0001") == "a\\x09b\\x7f\\x9b\\U000e0001"


# 12. A Host header that names no host was accepted, with request.host == "" and
# request.url == "http:///...".


@pytest.fixture
def host_app(app: carboy.Carboy) -> carboy.Carboy:
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/sync")
    def sync_view() -> str:
        return f"{request.host} {request.url}"

    @app.route("/async")
    async def async_view() -> str:
        return f"{request.host} {request.url}"

    @app.route("/plain")
    def plain() -> str:  # reads no request: the bare path
        return "plain"

    @app.route("/aplain")
    async def aplain() -> str:
        return "aplain"

    return app


@pytest.mark.parametrize(
    "host",
    [
        "bad host",
        "a@evil.example",
        "evil.example/../x",
        "evil.example\x1b[31m",
        "evil.example\r\nX-Injected: 1",
        "evil.example\x00",
        "",
        " ",
        "a.example,b.example",  # two Host headers, joined
        "example.com:99999",
        "example.com:0",
        "example.com:",
        "[::1",
        "caf\u00e9 .example",
        "caf\u00e9.example/x",
        "caf\u00e9\x1b.example",
    ],
)
def test_host_that_names_no_host_is_400(host_app: carboy.Carboy, host: str) -> None:
    for path in ("/sync", "/async", "/plain", "/aplain"):
        status, body = _exchange(host_app, "GET", path, {"Host": host})
        assert status == 400, (path, status, body[:80])
        # Again: nothing (a cache, the bare path) lets a bad host through the second time.
        assert _exchange(host_app, "GET", path, {"Host": host})[0] == 400


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", "localhost"),
        ("example.com", "example.com"),
        ("Example.COM.", "Example.COM."),
        ("sub-1.example.com:8080", "sub-1.example.com:8080"),
        ("example.com:80", "example.com"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("[::1]", "[::1]"),
        ("[2001:db8::1]:8443", "[2001:db8::1]:8443"),
    ],
)
def test_valid_host_is_served(host_app: carboy.Carboy, host: str, expected: str) -> None:
    for path in ("/sync", "/async"):
        for _ in range(2):
            status, body = _exchange(host_app, "GET", path, {"Host": host})
            assert (status, body.decode()) == (200, f"{expected} http://{expected.lower()}{path}")
    for path in ("/plain", "/aplain"):
        assert _exchange(host_app, "GET", path, {"Host": host})[0] == 200


def test_internationalized_host_is_served_as_in_flask(host_app: carboy.Carboy) -> None:
    """Flask's own suite serves a Host in Unicode (test_environ_for_valid_idna_completes);
    Werkzeug gives it ``request.host == ""``, as in Flask."""
    for host in (
        "\u0105\u015b\u017a\u00e4\u00fc\u0436\u0160\u00df\u044f.com",
        "caf\u00e9.example:8080",
    ):
        for path in ("/sync", "/async", "/plain", "/aplain"):
            assert _exchange(host_app, "GET", path, {"Host": host})[0] == 200


def test_missing_host_falls_back_to_the_server_address(host_app: carboy.Carboy) -> None:
    server = "testserver" if host_app.test_client_class is ASGIClient else "localhost"
    for protocol in ("HTTP/1.0", "HTTP/1.1"):
        status, body = _exchange(host_app, "GET", "/sync", protocol=protocol)
        assert (status, body.decode()) == (200, f"{server} http://{server}/sync")
        assert _exchange(host_app, "GET", "/aplain", protocol=protocol)[0] == 200


def test_test_client_default_host(host_app: carboy.Carboy) -> None:
    rv = host_app.test_client().get("/sync")
    assert (rv.status_code, rv.text) == (200, "localhost http://localhost/sync")


def test_bad_host_goes_to_the_400_handler(host_app: carboy.Carboy) -> None:
    @host_app.errorhandler(400)
    def bad(e: Exception) -> tuple[str, int]:
        return f"handled {type(e).__name__}", 400

    status, body = _exchange(host_app, "GET", "/plain", {"Host": "bad host"})
    assert (status, body) == (400, b"handled BadHost")


def test_bad_host_with_trusted_hosts_is_400(host_app: carboy.Carboy) -> None:
    host_app.config["TRUSTED_HOSTS"] = [".example.com"]
    assert _exchange(host_app, "GET", "/sync", {"Host": "a.example.com"})[0] == 200
    assert _exchange(host_app, "GET", "/sync", {"Host": "a.example.com/x"})[0] == 400
    assert _exchange(host_app, "GET", "/sync", {"Host": "evil.test"})[0] == 400


# 13. Urlencoded bodies had no field-count or field-size limit; a multipart body without a
# usable boundary gave an empty form.


def test_urlencoded_fields_over_max_form_parts_is_413(echo_app: carboy.Carboy) -> None:
    client = echo_app.test_client()
    many = "&".join(f"f{i}=v" for i in range(5000))
    assert client.post("/form", data=many, content_type=URLENCODED).status_code == 413
    limit = "&".join(f"f{i}=v" for i in range(1000))  # MAX_FORM_PARTS's default
    rv = client.post("/form", data=limit, content_type=URLENCODED)
    assert (rv.status_code, rv.json) == (200, {"fields": 1000, "files": 0})
    echo_app.config["MAX_FORM_PARTS"] = 3
    assert client.post("/form", data="a=1&b=2&c=3&d=4", content_type=URLENCODED).status_code == 413
    # Empty pieces are not fields.
    rv = client.post("/form", data="a=1&&b=2&&&c=3&", content_type=URLENCODED)
    assert (rv.status_code, rv.json) == (200, {"fields": 3, "files": 0})
    echo_app.config["MAX_FORM_PARTS"] = None
    assert client.post("/form", data=many, content_type=URLENCODED).json["fields"] == 5000


def test_urlencoded_field_over_max_form_memory_size_is_413(echo_app: carboy.Carboy) -> None:
    client = echo_app.test_client()
    big = "a=1&big=" + "x" * 600_000
    assert client.post("/form", data=big, content_type=URLENCODED).status_code == 413
    assert client.post("/form", data="x" * 600_000, content_type=URLENCODED).status_code == 413
    ok = "a=1&big=" + "x" * 500_000  # MAX_FORM_MEMORY_SIZE's default, exactly
    assert client.post("/form", data=ok, content_type=URLENCODED).json == {"fields": 2, "files": 0}
    # Measured decoded: 200,000 bytes sent as 600,000 percent-encoded ones fit.
    encoded = "big=" + "%C3%A9" * 100_000
    rv = client.post("/form", data=encoded, content_type=URLENCODED)
    assert (rv.status_code, rv.json) == (200, {"fields": 1, "files": 0})
    echo_app.config["MAX_FORM_MEMORY_SIZE"] = 10
    assert client.post("/form", data="a=" + "x" * 11, content_type=URLENCODED).status_code == 413
    assert client.post("/form", data="a=" + "%41" * 11, content_type=URLENCODED).status_code == 413
    assert client.post("/form", data="a=" + "%41" * 10, content_type=URLENCODED).status_code == 200


def test_urlencoded_limits_apply_under_asgi_chunked_too(echo_app: carboy.Carboy) -> None:
    echo_app.config["MAX_FORM_PARTS"] = 3
    headers = {"Host": "localhost", "Content-Type": URLENCODED}
    status, _ = _exchange(
        echo_app, "POST", "/form", headers, [b"a=1&b=2", b"&c=3&d=4"], chunked=True
    )
    assert status == 413
    status, body = _exchange(
        echo_app, "POST", "/form", headers, [b"a=1&b=2", b"&c=3"], chunked=True
    )
    assert (status, json.loads(body)) == (200, {"fields": 3, "files": 0})


def test_urlencoded_bytes_that_are_not_utf8_stay_percent_encoded(echo_app: carboy.Carboy) -> None:
    @echo_app.route("/form-echo", methods=["POST"])
    def form_echo() -> t.Any:
        return request.form.to_dict(flat=False)

    rv = echo_app.test_client().post(
        "/form-echo", data=b"a=\xff&b=%ff&c=caf\xc3\xa9", content_type=URLENCODED
    )
    assert (rv.status_code, rv.json) == (200, {"a": ["%FF"], "b": ["%FF"], "c": ["caf\u00e9"]})


MULTIPART_BODY = b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--xyz--\r\n'


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", MULTIPART_BODY),  # no boundary parameter
        ("multipart/form-data; boundary=", MULTIPART_BODY),
        ("multipart/form-data; boundary=other", MULTIPART_BODY),  # never appears
        ("multipart/form-data; boundary=xyz", b"not multipart at all"),
        ("multipart/form-data; boundary=xyz", MULTIPART_BODY[:-12]),  # cut short
    ],
)
def test_multipart_body_that_cannot_be_parsed_is_400(
    echo_app: carboy.Carboy, content_type: str, body: bytes
) -> None:
    rv = echo_app.test_client().post("/form", data=body, content_type=content_type)
    assert rv.status_code == 400, rv.data[:200]


def test_multipart_bodies_that_parse_still_do(echo_app: carboy.Carboy) -> None:
    client = echo_app.test_client()
    rv = client.post("/form", data=MULTIPART_BODY, content_type="multipart/form-data; boundary=xyz")
    assert rv.json == {"fields": 1, "files": 0}
    # An empty body is an empty form, with or without a boundary.
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=xyz"):
        rv = client.post("/form", data=b"", content_type=content_type)
        assert (rv.status_code, rv.json) == (200, {"fields": 0, "files": 0})


def test_websocket_handshake_with_a_bad_host_is_refused_400() -> None:
    from carboy.websocket_testing import WebsocketRejected

    app = carboy.Carboy(__name__)
    app.config["TESTING"] = True

    @app.websocket("/ws")
    async def ws() -> None:
        await carboy.websocket.send("hi")

    client = app.test_client()
    with client.websocket("/ws", headers={"Host": "good.example"}) as conn:
        assert conn.receive() == "hi"
    bad = client.websocket("/ws", headers={"Host": "bad host"})
    with pytest.raises(WebsocketRejected) as info, bad:
        pass
    assert info.value.status_code == 400
