"""Property: a request body gets the same answer under ASGI, cut into any ``http.request``
messages, as under WSGI for the same bytes.

Bodies are multipart forms (hostile shapes included: data after the closing delimiter, no final
CRLF, no closing delimiter, delimiter-like bytes inside part data, preambles, many parts),
urlencoded forms, JSON and raw bytes. Each is sent in messages cut at random places (1-byte
messages and empty messages with ``more_body=True`` included), with ``Content-Length`` or
chunked, under a ``MAX_CONTENT_LENGTH`` around its size or none, to a sync and an ``async
def`` view; the status and what the view parsed (fields, file contents, JSON, data) must be
the WSGI answer. Werkzeug's multipart parser answers differently for differently cut input, so
this holds only if the ASGI input reads as a WSGI input does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import typing as t
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

import carboy
import carboy.app
import carboy.asgi
from carboy import request
from test_asgi import Exchange, scope_for

BOUNDARIES = [b"B", b"----x7MA4YWxkTrZu0gW", b"a-b"]
# Bytes that look like parts of the multipart syntax, so that part data holds near-delimiters.
PIECES = [
    b"\r",
    b"\n",
    b"\r\n",
    b"-",
    b"--",
    b"--B",
    b"\r\n--B",
    b"\r\n--B-",
    b"--B--",
    b"x",
    b"\x00",
]


def describe() -> dict[str, t.Any]:
    """What the view saw of the body."""
    out: dict[str, t.Any] = {}
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        out["form"] = list(request.form.items(multi=True))
        out["files"] = [
            (name, f.filename, f.content_type, f.read().hex())
            for name, f in request.files.items(multi=True)
        ]
    elif request.is_json:
        out["json"] = request.get_json(silent=True)
    out["data"] = request.get_data().hex()
    return out


async def describe_async() -> dict[str, t.Any]:
    return describe()


_APP: list[carboy.Carboy] = []


def the_app() -> carboy.Carboy:
    if not _APP:
        app = carboy.Carboy(__name__)
        # Errors are answers here (a 500 as much as a 413), not exceptions for the test.
        app.config.update(TESTING=False, PROPAGATE_EXCEPTIONS=False)
        app.add_url_rule("/sync", "sync", describe, methods=["POST"])
        app.add_url_rule("/async", "async", describe_async, methods=["POST"])
        app.logger.disabled = True
        _APP.append(app)
    return _APP[0]


part_data = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=20)), max_size=8).map(
    b"".join
)


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    boundary = draw(st.sampled_from(BOUNDARIES))
    delimiter = b"--" + boundary
    parts = []
    for i in range(draw(st.integers(0, 40))):
        name = draw(st.sampled_from([b"a", b"b", b"f%d" % i, b"\xc3\xa9"]))
        headers = b'Content-Disposition: form-data; name="' + name + b'"'
        if draw(st.booleans()):
            headers += b'; filename="' + draw(st.sampled_from([b"a.txt", b"", b"x y"])) + b'"'
            if draw(st.booleans()):
                headers += b"\r\nContent-Type: " + draw(st.sampled_from([b"text/plain", b"x/y"]))
        data = draw(part_data).replace(delimiter + b"\r\n", b"")  # not a real delimiter
        if draw(st.integers(0, 9)) == 0:
            data += b"z" * draw(st.integers(10_000, 40_000))  # past FORM_IN_POOL_SIZE
        parts.append(delimiter + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n")
    body = draw(st.sampled_from([b"", b"preamble\r\n", b"\r\n"])) + b"".join(parts)
    ending = draw(
        st.sampled_from(
            [
                delimiter + b"--\r\n",  # well formed
                delimiter + b"--",  # no final CRLF
                delimiter + b"--\r\nepilogue",
                delimiter
                + b"--\r\n"
                + delimiter
                + b'\r\nContent-Disposition: form-data; name="late"\r\n\r\nx\r\n'
                + delimiter
                + b"--\r\n",  # a part after the end
                delimiter + b"-",
                b"",  # never closed
            ]
        )
    )
    return body + ending, "multipart/form-data; boundary=" + boundary.decode()


urlencoded = st.lists(
    st.one_of(
        st.sampled_from([b"&", b"=", b"%", b"%2", b"%41", b"+", b";"]), st.binary(max_size=8)
    ),
    max_size=30,
).map(lambda pieces: (b"".join(pieces), "application/x-www-form-urlencoded"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)
json_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=50),  # not JSON at all
).map(lambda body: (body, "application/json"))
raw = st.binary(max_size=300).map(lambda body: (body, "application/octet-stream"))


@st.composite
def messages(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """*body* cut into message bodies; empty ones may come anywhere."""
    if body and len(body) <= 3000 and draw(st.integers(0, 5)) == 0:
        chunks = [body[i : i + 1] for i in range(len(body))]
    else:
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(body) - 1)), max_size=12)))
        edges = [0, *(c for c in cuts if c < len(body)), len(body)]
        chunks = [body[a:b] for a, b in itertools.pairwise(edges)]
    for _ in range(draw(st.integers(0, 3))):
        chunks.insert(draw(st.integers(0, len(chunks))), b"")
    return chunks or [b""]


def wsgi_answer(app: carboy.Carboy, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    response = app.test_client().post(path, data=body, content_type=content_type)
    return response.status_code, response.get_data()


def asgi_answer(
    app: carboy.Carboy, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    exchange = Exchange(chunks)

    async def main() -> None:
        await asyncio.wait_for(
            app(scope_for("POST", path, headers), exchange.receive, exchange.send), 30
        )

    asyncio.run(main())
    return exchange.status, exchange.body


@pytest.mark.fuzz
@given(data=st.data())
def test_a_body_parses_the_same_under_asgi_whatever_the_messages(data: st.DataObject) -> None:
    body, content_type = data.draw(st.one_of(multipart(), urlencoded, json_bodies, raw))
    chunks = data.draw(messages(body))
    declared = data.draw(st.booleans())
    limit = data.draw(st.one_of(st.none(), st.integers(max(0, len(body) - 3), len(body) + 3)))
    parts = data.draw(st.sampled_from([1000, 5]))
    ahead = data.draw(st.booleans())  # parse every form and JSON body in the pool
    app = the_app()
    app.config.update(MAX_CONTENT_LENGTH=limit, MAX_FORM_PARTS=parts)
    headers = [(b"host", b"localhost"), (b"content-type", content_type.encode())]
    if declared:
        headers.append((b"content-length", str(len(body)).encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    with (
        mock.patch.object(
            carboy.app, "FORM_IN_POOL_SIZE", 0 if ahead else carboy.asgi.FORM_IN_POOL_SIZE
        ),
        mock.patch.object(
            carboy.asgi, "FORM_IN_POOL_SIZE", 0 if ahead else carboy.asgi.FORM_IN_POOL_SIZE
        ),
        mock.patch.object(
            carboy.asgi, "JSON_IN_POOL_SIZE", 0 if ahead else carboy.asgi.JSON_IN_POOL_SIZE
        ),
    ):
        for path in ("/sync", "/async"):
            expected = wsgi_answer(app, path, body, content_type)
            got = asgi_answer(app, path, list(chunks), headers)
            assert got == expected, (path, chunks)
            assert expected[0] in (200, 400, 413), expected
