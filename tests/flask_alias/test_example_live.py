"""The example notes app's live feed (examples/notes/live.py): a public note written by one user
appears on the other users' open pages through Server-Sent Events; a private note never does.

In process on the embedded default (the in-process broadcast backend, one worker), through
the WSGI test client; then served by uvicorn with 2 workers on the machine's Redis (Redis
Streams, database 15, a key prefix of the test's own, removed afterwards): a note created
through one worker arrives on a stream held open on the other.
"""

from __future__ import annotations

import json
import sys
import time
import typing as t
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.notes import create_app, live  # noqa: E402
from notes_client import with_csrf_client  # noqa: E402

from notes_http import csrf, sign_in  # noqa: E402
from redis_servers import MACHINE_URL, machine_redis_or_skip  # noqa: E402
from servers import Server, free_port, tool  # noqa: E402

#: Every wait on a stream is bounded by this (seconds); heartbeats come every second.
DEADLINE = 15.0


def signed_up(client: t.Any, username: str, password: str = "password1") -> None:
    form = {"username": username, "password": password}
    assert client.post("/register", data=form).status_code == 302
    assert client.post("/login", data=form).status_code == 302


def sse_events(chunks: Iterator[bytes]) -> Iterator[dict[str, t.Any]]:
    """Each SSE event's JSON data from a streamed body, skipping heartbeat comments; fails if
    none comes within :data:`DEADLINE` seconds."""
    buffer = ""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        buffer += next(chunks).decode()
        *events, buffer = buffer.split("\n\n")
        for event in events:
            data = [line[6:] for line in event.splitlines() if line.startswith("data: ")]
            if data:
                yield t.cast(dict[str, t.Any], json.loads("\n".join(data)))
                deadline = time.monotonic() + DEADLINE
    pytest.fail("no event within the deadline")


def test_a_public_note_reaches_another_users_open_stream_and_a_private_one_never(
    tmp_path: Path,
) -> None:
    app = with_csrf_client(
        create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "live-secret",
                "INSTANCE_PATH": str(tmp_path / "instance"),
                "BROADCAST_SSE_HEARTBEAT": 1.0,
            }
        )
    )
    assert app.config["BROADCAST_BACKEND"] == "memory"  # the embedded default
    ada, grace = app.test_client(), app.test_client()
    signed_up(ada, "ada")
    signed_up(grace, "grace")
    # An anonymous visitor gets no stream.
    res = app.test_client().get("/api/live")
    assert res.status_code == 401 and res.is_json

    stream = grace.get("/api/live", buffered=False)
    assert stream.status_code == 200
    assert stream.mimetype == "text/event-stream"
    chunks = iter(stream.response)
    try:
        assert next(chunks).startswith(b"retry: ")  # subscribed: what is published now arrives
        # A private note first (it would arrive first if it leaked), then public ones: one by
        # the form, one by the API, with a title that would be markup if read as HTML.
        res = ada.post("/api/notes", json={"title": "my secret", "body": "private body"})
        assert res.status_code == 201 and res.get_json()["public"] is False
        res = ada.post("/notes/new", data={"title": "Hello all", "body": "b1", "public": "1"})
        assert res.status_code == 302
        xss = "<img src=x onerror=alert(1)>"
        res = ada.post("/api/notes", json={"title": xss, "body": "b2", "public": True})
        assert res.status_code == 201 and res.get_json()["public"] is True
        events = sse_events(chunks)
        first, second = next(events), next(events)
    finally:
        stream.close()
    assert set(first) == {"id", "title", "author", "created_at"}  # no body, no owner id
    assert (first["title"], first["author"]) == ("Hello all", "ada")
    assert (second["title"], second["author"]) == (xss, "ada")
    with app.app_context():
        assert live.broadcast.stats()["subscribers"] == 0  # the closed stream left

    # The page lists the public notes (escaped) and adds new ones as text, never as HTML.
    page = grace.get("/").get_data(as_text=True)
    assert '<ul id="live-notes" data-stream="/api/live">' in page
    assert "Hello all" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert xss not in page and "my secret" not in page
    assert "new EventSource(live.dataset.stream)" in page
    assert "title.textContent = note.title" in page and "innerHTML" not in page
    # The API validates the flag.
    res = ada.post("/api/notes", json={"title": "x", "public": "yes"})
    assert res.status_code == 400
    assert res.get_json()["error"]["message"] == "'public' must be true or false."


# -- Redis Streams, uvicorn with 2 workers ------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    client = machine_redis_or_skip()
    tag = f"notes-live-{uuid.uuid4().hex[:12]}"
    try:
        yield tag
    finally:
        keys = list(client.scan_iter(match=f"*{tag}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def served(tmp_path: Path, prefix: str) -> Iterator[Server]:
    port = free_port()
    cmd = [
        *tool("uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
        "scale_example_app:app",
    ]  # fmt: skip
    env = {
        "CARBOY_DATABASE": str(tmp_path / "notes.sqlite"),
        "CARBOY_SECRET_KEY": "served-live-secret",
        "CARBOY_REDIS_URL": MACHINE_URL,
        "CARBOY_SESSION_KEY_PREFIX": f"{prefix}:session:",
        "CARBOY_CACHE_KEY_PREFIX": f"{prefix}:cache:",
        "CARBOY_RATELIMIT_KEY_PREFIX": prefix,
        "CARBOY_BROADCAST_KEY_PREFIX": f"{prefix}:broadcast:",
        "CARBOY_BROADCAST_SSE_HEARTBEAT": "1.0",
    }
    with Server(cmd, port, tmp_path / "server.log", env) as server:
        server.wait_until_up("/api/stats")
        yield server


def test_served_by_one_uvicorn_worker_without_redis(tmp_path: Path) -> None:
    """README's setup over real HTTP: one worker, no Redis, the in-process backend."""
    port = free_port()
    cmd = [*tool("uvicorn"), "--host", "127.0.0.1", "--port", str(port), "scale_example_app:app"]
    env = {"CARBOY_SECRET_KEY": "one-worker", "CARBOY_BROADCAST_SSE_HEARTBEAT": "1.0"}
    with Server(cmd, port, tmp_path / "server.log", env) as server:
        server.wait_until_up("/api/stats")
        base = server.base_url
        with (
            httpx.Client(base_url=base, timeout=10.0) as ada,
            httpx.Client(base_url=base, timeout=10.0) as grace,
        ):
            for http, name in ((ada, "ada"), (grace, "grace")):
                sign_in(http, name, "password1")
            token = csrf(ada)
            with grace.stream("GET", "/api/live") as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith("retry: ")
                for title, public in (("hidden", False), ("for all", True)):
                    res = ada.post(
                        "/api/notes", json={"title": title, "public": public}, headers=token
                    )
                    assert res.status_code == 201
                event = sse_data(lines)
        assert (event["title"], event["author"]) == ("for all", "ada")
        assert " 500 " not in server.output()


def sse_data(lines: Iterator[str]) -> dict[str, t.Any]:
    """The next event's JSON data from an httpx line iterator, skipping comments (bounded)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        line = next(lines)
        if line.startswith("data: "):
            return t.cast(dict[str, t.Any], json.loads(line[6:]))
    pytest.fail("no event within the deadline")


def test_with_redis_a_note_made_on_one_worker_reaches_a_stream_held_on_another(
    served: Server, prefix: str
) -> None:
    base = served.base_url
    with (
        httpx.Client(base_url=base, timeout=10.0) as ada,
        httpx.Client(base_url=base, timeout=10.0) as grace,
    ):
        for http, name in ((ada, "ada"), (grace, "grace")):
            sign_in(http, name, "password1")
        token = csrf(ada)
        with grace.stream("GET", "/api/live") as stream:
            assert stream.status_code == 200
            held_on = stream.headers["X-Worker-Pid"]
            lines = stream.iter_lines()
            assert next(lines).startswith("retry: ")
            # A private note, then public ones, each on a new connection, until one is made
            # by the other worker (each connection goes to whichever worker accepts it).
            sent: list[str] = []
            made_on: list[str] = []
            for number in range(40):
                with httpx.Client(base_url=base, cookies=ada.cookies, headers=token) as one:
                    if number == 0:
                        res = one.post("/api/notes", json={"title": "private", "public": False})
                        assert res.status_code == 201
                    title = f"shared {number}"
                    res = one.post("/api/notes", json={"title": title, "public": True})
                assert res.status_code == 201, res.text
                sent.append(title)
                made_on.append(res.headers["X-Worker-Pid"])
                if made_on[-1] != held_on:
                    break
            assert made_on[-1] != held_on, "every note was made on the stream's worker"
            received = [sse_data(lines) for _ in sent]
    assert [event["title"] for event in received] == sent  # in order, the private one never
    assert {event["author"] for event in received} == {"ada"}
    redis = machine_redis_or_skip()
    assert redis.exists(f"{prefix}:broadcast:{live.CHANNEL}")  # carried by a Redis stream
    assert " 500 " not in served.output()
