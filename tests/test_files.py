"""Sending files: send_file, send_from_directory, static files, caching and ranges."""

from __future__ import annotations

import io
import os
import typing as t
from datetime import timedelta
from pathlib import Path

import pytest
from werkzeug.exceptions import NotFound
from werkzeug.http import http_date

from carboy import Carboy, Response, send_file, send_from_directory
from carboy.files import get_send_file_max_age

HELLO = b"Hello, files! 0123456789\n"
MTIME = 1_700_000_000


@pytest.fixture
def root(tmp_path: Path) -> Path:
    files = {
        "hello.txt": HELLO,
        "secret.txt": b"top secret\n",
        "files/a.txt": b"file a\n",
        "files/sub/b.txt": b"file b\n",
        "files/page.html": b"<p>page</p>\n",
        "static/style.css": b"body { color: red }\n",
    }
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.utime(tmp_path / "hello.txt", (MTIME, MTIME))
    return tmp_path


@pytest.fixture
def app(app: Carboy, root: Path) -> Carboy:
    """conftest's app (both dispatch paths), rooted in a folder with files to serve."""
    app.root_path = str(root)

    @app.route("/hello")
    def hello() -> Response:
        return send_file("hello.txt")

    @app.route("/files/<path:filename>")
    def files(filename: str) -> Response:
        return send_from_directory("files", filename)

    return app


# -- send_file -------------------------------------------------------------------------------


def test_send_file_path(app: Carboy) -> None:
    response = app.test_client().get("/hello")
    assert response.status_code == 200
    assert response.data == HELLO
    assert response.mimetype == "text/plain"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(HELLO))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"]
    assert response.headers["Last-Modified"] == http_date(MTIME)
    assert response.headers["Cache-Control"] == "no-cache"
    assert isinstance(response, app.response_class)


def test_send_file_absolute_path(app: Carboy, root: Path) -> None:
    with app.test_request_context():
        response = send_file(root / "secret.txt")
        response.direct_passthrough = False
        assert response.get_data() == b"top secret\n"
        response.close()


def test_send_file_outside_request_context(app: Carboy) -> None:
    with app.app_context(), pytest.raises(RuntimeError):
        send_file("hello.txt")


def test_send_file_missing_path(app: Carboy) -> None:
    with app.test_request_context(), pytest.raises(FileNotFoundError):
        send_file("nope.txt")


def test_if_none_match_gives_304(app: Carboy) -> None:
    client = app.test_client()
    etag = client.get("/hello").headers["ETag"]
    response = client.get("/hello", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == etag
    other = client.get("/hello", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200
    assert other.data == HELLO


def test_if_modified_since_gives_304(app: Carboy) -> None:
    client = app.test_client()
    response = client.get("/hello", headers={"If-Modified-Since": http_date(MTIME)})
    assert response.status_code == 304
    assert response.data == b""
    older = client.get("/hello", headers={"If-Modified-Since": http_date(MTIME - 3600)})
    assert older.status_code == 200
    assert older.data == HELLO


def test_unconditional_ignores_conditional_headers(app: Carboy) -> None:
    @app.route("/plain")
    def plain() -> Response:
        return send_file("hello.txt", conditional=False)

    client = app.test_client()
    response = client.get(
        "/plain", headers={"If-Modified-Since": http_date(MTIME), "Range": "bytes=0-1"}
    )
    assert response.status_code == 200
    assert response.data == HELLO


def test_etag_options(app: Carboy) -> None:
    @app.route("/no-etag")
    def no_etag() -> Response:
        return send_file("hello.txt", etag=False)

    @app.route("/fixed-etag")
    def fixed_etag() -> Response:
        return send_file("hello.txt", etag="v1")

    client = app.test_client()
    assert "ETag" not in client.get("/no-etag").headers
    assert client.get("/fixed-etag").headers["ETag"] == '"v1"'
    assert client.get("/fixed-etag", headers={"If-None-Match": '"v1"'}).status_code == 304


def test_range_request_gives_206(app: Carboy) -> None:
    client = app.test_client()
    response = client.get("/hello", headers={"Range": "bytes=0-4"})
    assert response.status_code == 206
    assert response.data == HELLO[:5]
    assert response.headers["Content-Range"] == f"bytes 0-4/{len(HELLO)}"
    assert response.headers["Content-Length"] == "5"

    suffix = client.get("/hello", headers={"Range": "bytes=-3"})
    assert suffix.status_code == 206
    assert suffix.data == HELLO[-3:]

    open_ended = client.get("/hello", headers={"Range": "bytes=7-"})
    assert open_ended.status_code == 206
    assert open_ended.data == HELLO[7:]


def test_unsatisfiable_range_gives_416(app: Carboy) -> None:
    response = app.test_client().get("/hello", headers={"Range": "bytes=1000-2000"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(HELLO)}"


def test_if_range_with_stale_etag_gives_full_file(app: Carboy) -> None:
    response = app.test_client().get(
        "/hello", headers={"Range": "bytes=0-4", "If-Range": '"stale"'}
    )
    assert response.status_code == 200
    assert response.data == HELLO


def test_attachment_and_download_name(app: Carboy) -> None:
    @app.route("/download")
    def download() -> Response:
        return send_file("hello.txt", as_attachment=True, download_name="report.csv")

    @app.route("/unicode")
    def unicode_name() -> Response:
        return send_file("hello.txt", as_attachment=True, download_name="résumé.txt")

    client = app.test_client()
    response = client.get("/download")
    assert response.headers["Content-Disposition"] == "attachment; filename=report.csv"
    assert response.mimetype == "text/csv"
    disposition = client.get("/unicode").headers["Content-Disposition"]
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.txt" in disposition


def test_send_file_object(app: Carboy) -> None:
    @app.route("/memory")
    def memory() -> Response:
        return send_file(io.BytesIO(b"in memory"), mimetype="application/octet-stream")

    @app.route("/named")
    def named() -> Response:
        return send_file(io.BytesIO(b"{}"), download_name="data.json")

    client = app.test_client()
    response = client.get("/memory")
    assert response.data == b"in memory"
    assert response.mimetype == "application/octet-stream"
    named_response = client.get("/named")
    assert named_response.mimetype == "application/json"
    assert named_response.data == b"{}"


def test_send_file_object_without_mimetype_or_name(app: Carboy) -> None:
    with app.test_request_context(), pytest.raises(TypeError):
        send_file(io.BytesIO(b"?"))


def test_use_x_sendfile(app: Carboy, root: Path) -> None:
    app.config["USE_X_SENDFILE"] = True
    response = app.test_client().get("/hello")
    assert response.status_code == 200
    assert response.headers["X-Sendfile"] == str(root / "hello.txt")
    assert response.data == b""


def test_custom_response_class(app: Carboy) -> None:
    class MyResponse(Response):
        pass

    app.response_class = MyResponse
    with app.test_request_context():
        response = send_file("hello.txt")
        assert isinstance(response, MyResponse)
        response.close()


# -- cache max-age ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, None), (60, 60), (timedelta(hours=1), 3600), (timedelta(seconds=90.7), 90)],
)
def test_get_send_file_max_age(app: Carboy, setting: t.Any, expected: int | None) -> None:
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = setting
    assert get_send_file_max_age(app, "x.txt") == expected
    with app.app_context():
        assert app.get_send_file_max_age("x.txt") == expected


def test_max_age_from_config(app: Carboy) -> None:
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = timedelta(minutes=2)
    response = app.test_client().get("/hello")
    assert response.cache_control.max_age == 120
    assert response.cache_control.public


def test_max_age_argument_wins(app: Carboy) -> None:
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 10

    @app.route("/fixed")
    def fixed() -> Response:
        return send_file("hello.txt", max_age=30)

    @app.route("/computed")
    def computed() -> Response:
        return send_from_directory("files", "a.txt", max_age=lambda path: len(path or ""))

    client = app.test_client()
    assert client.get("/fixed").cache_control.max_age == 30
    response = client.get("/computed")
    assert response.cache_control.max_age == len(os.path.join(app.root_path, "files", "a.txt"))


def test_subclass_can_override_get_send_file_max_age(root: Path) -> None:
    class ShortCache(Carboy):
        def get_send_file_max_age(self, filename: str | None) -> int | None:
            if filename is not None and filename.endswith(".css"):
                return 5
            return 50

    app = ShortCache(__name__, root_path=str(root))

    @app.route("/hello")
    def hello() -> Response:
        return send_file("hello.txt")

    client = app.test_client()
    assert client.get("/hello").cache_control.max_age == 50
    assert client.get("/static/style.css").cache_control.max_age == 5


# -- send_from_directory and traversal -------------------------------------------------------


def test_send_from_directory(app: Carboy) -> None:
    client = app.test_client()
    response = client.get("/files/a.txt")
    assert (response.status_code, response.data) == (200, b"file a\n")
    nested = client.get("/files/sub/b.txt")
    assert (nested.status_code, nested.data) == (200, b"file b\n")
    html = client.get("/files/page.html")
    assert html.mimetype == "text/html"


@pytest.mark.parametrize("url", ["/files/missing.txt", "/files/sub", "/files/sub/"])
def test_missing_file_or_directory_is_404(app: Carboy, url: str) -> None:
    assert app.test_client().get(url).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/files/../secret.txt",
        "/files/sub/../../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/..%2fsecret.txt",
        "/files/%2E%2E%2Fsecret.txt",
        "/files/sub/%2e%2e/%2e%2e/secret.txt",
        "/files/..%5csecret.txt",
        "/files/../hello.txt",
    ],
)
def test_traversal_is_404(app: Carboy, url: str) -> None:
    response = app.test_client().get(url)
    assert response.status_code == 404
    assert b"secret" not in response.data


@pytest.mark.parametrize(
    "url",
    ["/files//etc/passwd", "/files/%2Fetc%2Fpasswd", "/files//{root}/secret.txt"],
)
def test_absolute_path_is_not_served(app: Carboy, root: Path, url: str) -> None:
    response = app.test_client().get(url.format(root=str(root).lstrip("/")), follow_redirects=True)
    assert response.status_code == 404
    assert b"secret" not in response.data
    assert b"root:" not in response.data


@pytest.mark.parametrize(
    "path", ["../secret.txt", "sub/../../secret.txt", "/etc/passwd", "", ".", "sub/../.."]
)
def test_send_from_directory_rejects_escapes(app: Carboy, root: Path, path: str) -> None:
    with app.test_request_context(), pytest.raises(NotFound):
        send_from_directory("files", path)
    with app.test_request_context(), pytest.raises(NotFound):
        send_from_directory(root / "files", str(root / "secret.txt"))


# -- static files ----------------------------------------------------------------------------


def test_static_files(app: Carboy) -> None:
    client = app.test_client()
    response = client.get("/static/style.css")
    assert response.status_code == 200
    assert response.data == b"body { color: red }\n"
    assert response.mimetype == "text/css"
    etag = response.headers["ETag"]
    assert client.get("/static/style.css", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/static/missing.css").status_code == 404
    assert client.get("/static/../secret.txt").status_code == 404
    assert client.get("/static/%2e%2e/secret.txt").status_code == 404


def test_static_files_use_max_age_config(app: Carboy) -> None:
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 300
    response = app.test_client().get("/static/style.css")
    assert response.cache_control.max_age == 300
