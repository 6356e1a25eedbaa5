"""Serve the example notes app over real HTTP (gunicorn, then ``carboy run``) and drive it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from notes_http import csrf

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["CARBOY_DATABASE"] = str(tmp_path / "served-notes.sqlite")
    env["CARBOY_SECRET_KEY"] = "served-test-secret"
    env.pop("CARBOY_APP", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until_up(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            httpx.get(base_url + "/login", timeout=2.0)
        except httpx.TransportError:
            time.sleep(0.1)
        else:
            return
    pytest.fail(f"server did not answer within {STARTUP_TIMEOUT}s:\n{log.read_text()}")


def run_server(cmd: list[str], tmp_path: Path, port: int) -> Iterator[str]:
    log = tmp_path / "server.log"
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=server_env(tmp_path), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_until_up(proc, base_url, log)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def gunicorn_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--timeout",
        "30",
        "examples.notes:create_app()",
    ]
    yield from run_server(cmd, tmp_path, port)


def carboy_command() -> list[str]:
    script = Path(sys.executable).with_name("carboy")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from carboy.cli import main; main()"]


@pytest.fixture
def carboy_run_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    cmd = [*carboy_command(), "--app", "examples.notes", "run", "--port", str(port)]
    yield from run_server(cmd, tmp_path, port)


def test_readme_first_command_serves_in_debug_mode_without_a_secret_key(tmp_path: Path) -> None:
    """README's first command (with ``--no-reload`` so the test stops one process): debug mode
    accepts the development secret key; without ``--debug`` the app refuses it, saying how to
    set one."""
    env = server_env(tmp_path)
    env.pop("CARBOY_SECRET_KEY")
    env.pop("CARBOY_DEBUG", None)
    env.pop("FLASK_DEBUG", None)
    refused = subprocess.run(
        [*carboy_command(), "--app", "examples.notes", "run", "--port", str(free_port())],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "set CARBOY_SECRET_KEY" in refused.stdout + refused.stderr
    port = free_port()
    cmd = [*carboy_command(), "--app", "examples.notes", "run", "--debug", "--no-reload"]
    log = tmp_path / "debug.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_until_up(proc, f"http://127.0.0.1:{port}", log)
            res = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
            assert res.status_code == 200 and "Create an account" in res.text
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_gunicorn_serves_notes_end_to_end(gunicorn_url: str) -> None:
    with httpx.Client(base_url=gunicorn_url, timeout=10.0) as http:
        # Every write without its session's CSRF token is refused (Flask-WTF's 400).
        res = http.post("/register", data={"username": "linus", "password": "penguin!"})
        assert res.status_code == 400
        assert "The CSRF token is missing." in res.text
        res = http.post(
            "/register", data={"username": "linus", "password": "penguin!"}, headers=csrf(http)
        )
        assert res.status_code == 302
        assert res.headers["location"].endswith("/login")

        res = http.post(
            "/login", data={"username": "linus", "password": "wrong"}, headers=csrf(http)
        )
        assert res.status_code == 200
        assert "Unknown username or wrong password." in res.text

        res = http.post(
            "/login", data={"username": "linus", "password": "penguin!"}, headers=csrf(http)
        )
        assert res.status_code == 302
        assert "session" in http.cookies

        token = csrf(http)  # the session's token, kept until it ends
        res = http.post(
            "/notes/new", data={"title": "Over the wire", "body": "via gunicorn"}, headers=token
        )
        assert res.status_code == 302
        note_path = httpx.URL(res.headers["location"]).path
        page = http.get(note_path)
        assert page.status_code == 200
        assert "via gunicorn" in page.text

        res = http.post("/api/notes", json={"title": "JSON over the wire"})
        assert res.status_code == 400 and res.json()["error"]["status"] == 400  # no token
        res = http.post("/api/notes", json={"title": "JSON over the wire"}, headers=token)
        assert res.status_code == 201
        api_note = res.json()

        index = http.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert "Over the wire" in index.text
        assert "JSON over the wire" in index.text

        listing = http.get("/api/notes")
        assert listing.status_code == 200
        assert listing.headers["content-type"] == "application/json"
        body = listing.json()
        assert body["count"] == 2
        assert {n["title"] for n in body["notes"]} == {"Over the wire", "JSON over the wire"}
        assert http.get(f"/api/notes/{api_note['id']}").json() == api_note

        missing = http.get("/definitely/not/here")
        assert missing.status_code == 404
        assert "Page not found" in missing.text

        res = http.post("/logout", headers=token)
        assert res.status_code == 302
        res = http.get("/api/notes")
        assert res.status_code == 401
        assert res.json()["error"]["status"] == 401
        assert http.get("/notes/new").status_code == 302  # signed out: sent to log in


def test_carboy_run_serves_a_page(carboy_run_url: str) -> None:
    res = httpx.get(carboy_run_url + "/login", timeout=10.0)
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    assert "<title>Log in · Notes</title>" in res.text
    assert httpx.get(carboy_run_url + "/api/notes", timeout=10.0).status_code == 401


def test_the_app_refuses_to_load_after_the_real_flask(tmp_path: Path) -> None:
    """The app runs Flask-WTF and the other extensions through carboy's ``flask`` alias:
    imported after the real Flask, it stops with a message saying how to serve or test it;
    imported first, it installs the alias itself (any server can load it)."""
    env = server_env(tmp_path)
    after = subprocess.run(
        [sys.executable, "-c", "import flask; import examples.notes"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert after.returncode != 0
    assert "the real Flask was imported first" in after.stderr
    assert "carboy --app examples.notes run" in after.stderr
    script = "import examples.notes, flask, carboy; print(flask.Flask is carboy.Carboy)"
    first = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "True"
