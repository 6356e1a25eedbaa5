"""The example Flask app in examples/flask_journal, which imports ``flask`` only, on carboy.

1. Its own pytest suite passes under ``-p carboy.flask_compat`` (the apps it builds are
   carboy's), and passes on real Flask too, without carboy ever being imported.
2. ``carboy.flask_compat:app`` serves it unmodified under gunicorn (WSGI) and uvicorn (ASGI),
   driven over HTTP with httpx.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import ROOT, Server, free_port, server_env, tool

EXAMPLE = ROOT / "examples" / "flask_journal"
TESTS_DIR = Path(__file__).resolve().parent
SUITE_TIMEOUT = 120.0


def suite_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOURNAL_", "PYTEST_"))}
    for name in ("CARBOY_APP", "FLASK_APP"):
        env.pop(name, None)
    # The probe plugin lives next to this file; the example's pytest.ini puts the app itself on
    # the path. Run from the example's folder, with its own pytest.ini as config, the suite
    # loads nothing else of carboy's tests (not tests/conftest.py).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return env


def run_suite(*plugins: str) -> tuple[str, int]:
    """Run the example's own test suite in a fresh interpreter; return its output and the
    number of tests that passed."""
    options = [opt for plugin in plugins for opt in ("-p", plugin)]
    cmd = [sys.executable, "-m", "pytest", *options, "-p", "journal_probe"]
    cmd += ["-q", "-p", "no:cacheprovider", "tests"]
    proc = subprocess.run(
        cmd, cwd=EXAMPLE, env=suite_env(), capture_output=True, text=True, timeout=SUITE_TIMEOUT
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    summary = re.search(r"^(\d+) passed(?:, (.*))? in ", output, re.MULTILINE)
    assert summary is not None, output
    assert summary.group(2) is None, output  # nothing skipped, failed, xfailed or warned
    return output, int(summary.group(1))


def probe_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("journal-probe:")]


def test_the_apps_own_suite_passes_on_carboy() -> None:
    output, passed = run_suite("carboy.flask_compat")
    assert passed > 0
    probes = probe_lines(output)
    classes = [line for line in probes if " app class " in line]
    # Every app the suite's ``app`` fixture built was a carboy app, none a Flask one.
    assert len(classes) == 1, probes
    assert classes[0].startswith("journal-probe: app class carboy.app.Carboy x"), probes
    assert int(classes[0].rsplit("x", 1)[1]) > 0
    assert "journal-probe: carboy imported True" in probes


def test_the_apps_own_suite_passes_on_real_flask() -> None:
    output, passed = run_suite()
    assert passed > 0
    probes = probe_lines(output)
    classes = [line for line in probes if " app class " in line]
    assert len(classes) == 1, probes
    assert classes[0].startswith("journal-probe: app class flask.app.Flask x"), probes
    assert "journal-probe: carboy imported False" in probes


def test_the_factory_returns_a_carboy_app_under_the_alias(tmp_path: Path) -> None:
    code = (
        "import carboy.flask_compat, carboy, flask, sys\n"
        f"sys.path.insert(0, {str(EXAMPLE)!r})\n"
        "from journal import create_app\n"
        f"app = create_app(instance_path={str(tmp_path)!r})\n"
        "assert flask.Flask is carboy.Carboy\n"
        "assert isinstance(app, carboy.Carboy), type(app)\n"
        "print(type(app).__module__, sorted(app.blueprints))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=suite_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "carboy.app ['api', 'auth', 'entries']"


# -- served over HTTP ------------------------------------------------------------------------


def journal_env(instance: Path) -> dict[str, str]:
    """Server (and CLI) environment: the example on the path, the app string in CARBOY_APP."""
    path = os.pathsep.join([str(EXAMPLE), server_env()["PYTHONPATH"]])
    return {
        "PYTHONPATH": path,
        "CARBOY_APP": f"journal:create_app(instance_path={str(instance)!r})",
        "JOURNAL_SECRET_KEY": "served-journal-secret",
    }


def init_db(instance: Path) -> None:
    """``carboy --app ... init-db``: the app's own click command, run by carboy's CLI."""
    env = server_env(journal_env(instance))
    cmd = [*tool("carboy"), "--app", env["CARBOY_APP"], "init-db"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Initialised the journal database at {instance / 'journal.db'}." in proc.stdout


def serve(tmp_path: Path, cmd: list[str], port: int) -> Iterator[Server]:
    instance = tmp_path / "instance"
    init_db(instance)
    with Server(cmd, port, tmp_path / "server.log", journal_env(instance)) as server:
        server.wait_until_up("/auth/login")
        yield server


@pytest.fixture
def gunicorn_journal(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    cmd = [*tool("gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    yield from serve(tmp_path, [*cmd, "--timeout", "30", "carboy.flask_compat:app"], port)


@pytest.fixture
def uvicorn_journal(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    cmd = [*tool("uvicorn"), "--host", "127.0.0.1", "--port", str(port)]
    yield from serve(tmp_path, [*cmd, "carboy.flask_compat:app"], port)


def sign_up_and_in(http: httpx.Client, username: str, password: str) -> None:
    res = http.post("/auth/register", data={"username": username, "password": password})
    assert res.status_code == 302
    assert res.headers["location"] == "/auth/login"
    res = http.post("/auth/login", data={"username": username, "password": password})
    assert res.status_code == 302
    assert res.headers["location"] == "/"
    assert "session" in http.cookies


def test_gunicorn_serves_the_journal_end_to_end(gunicorn_journal: Server) -> None:
    base = gunicorn_journal.base_url
    with httpx.Client(base_url=base, timeout=10.0) as http:
        page = http.get("/auth/register")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>Create an account · Journal</title>" in page.text
        css = http.get("/static/journal.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")

        res = http.post("/auth/register", data={"username": "kestrel", "password": "hover-high"})
        assert res.status_code == 302
        assert res.headers["location"] == "/auth/login"
        assert "Welcome aboard, kestrel!" in http.get("/auth/login").text  # flashed

        res = http.post("/auth/login", data={"username": "kestrel", "password": "wrong-one"})
        assert res.status_code == 200
        assert "That username and password do not match." in res.text

        res = http.post("/auth/login", data={"username": "kestrel", "password": "hover-high"})
        assert res.status_code == 302
        assert "session" in http.cookies
        home = http.get("/")
        assert home.status_code == 200
        assert '<span class="whoami">kestrel</span>' in home.text
        assert "Signed in as kestrel." in home.text
        assert "Nothing written yet." in home.text

        res = http.post(
            "/entries/new", data={"title": "Over the ridge", "body": "Wind from the west."}
        )
        assert res.status_code == 302
        form_entry = res.headers["location"]
        page = http.get(form_entry)
        assert page.status_code == 200
        assert "Saved “Over the ridge”." in page.text
        assert "Wind from the west." in page.text

        res = http.post("/api/entries", json={"title": "Field notes", "body": "Two voles."})
        assert res.status_code == 201
        api_entry = res.json()
        assert res.headers["location"] == api_entry["url"]
        res = http.post("/api/entries", json={"body": "no title"})
        assert res.status_code == 400
        assert res.json() == {
            "error": "'title' must be a string, and 'body' too if given.",
            "status": 400,
        }

        listing = http.get("/api/entries")
        assert listing.status_code == 200
        assert listing.headers["content-type"] == "application/json"
        body = listing.json()
        assert body["count"] == 2
        assert body["user"] == "kestrel"
        assert [e["title"] for e in body["entries"]] == ["Field notes", "Over the ridge"]
        home = http.get("/")
        assert "Over the ridge" in home.text
        assert "Field notes" in home.text

        res = http.post(f"{form_entry}/edit", data={"title": "Over the ridge, again", "body": ""})
        assert res.status_code == 302
        revised = http.get(f"/api/entries/{form_entry.rsplit('/', 1)[1]}").json()
        assert revised["title"] == "Over the ridge, again"
        assert revised["revised_at"] is not None

        # Someone else may not touch kestrel's entries, over the wire either.
        with httpx.Client(base_url=base, timeout=10.0) as other:
            sign_up_and_in(other, "magpie", "shiny-things")
            assert other.get(api_entry["url"]).status_code == 403
            assert other.post(f"{form_entry}/delete").status_code == 403
            assert other.get("/api/entries").json()["count"] == 0

        res = http.post(f"{form_entry}/delete")
        assert res.status_code == 302
        assert http.get(form_entry).status_code == 404

        res = http.post("/auth/logout")
        assert res.status_code == 302
        assert res.headers["location"] == "/auth/login"
        assert "You have been signed out." in http.get("/auth/login").text
        res = http.get("/api/entries")
        assert res.status_code == 401
        assert res.json() == {"error": "Sign in to use the API.", "status": 401}
        res = http.get("/")
        assert res.status_code == 302
        assert res.headers["location"] == "/auth/login?next=/"


def test_uvicorn_serves_the_journal_over_asgi(uvicorn_journal: Server) -> None:
    with httpx.Client(base_url=uvicorn_journal.base_url, timeout=10.0) as http:
        sign_up_and_in(http, "curlew", "long-bill-1")
        res = http.post("/api/entries", json={"title": "Mudflats", "body": "Low tide."})
        assert res.status_code == 201
        created = res.json()
        listing = http.get("/api/entries").json()
        assert listing["entries"] == [created]
        assert "Mudflats" in http.get("/").text
        res = http.post(
            "/api/entries", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert res.status_code == 400
        assert res.json()["status"] == 400
        assert http.post("/auth/logout").status_code == 302
        res = http.post("/api/entries", json={"title": "after logout"})
        assert res.status_code == 401
        assert res.json()["error"] == "Sign in to use the API."
