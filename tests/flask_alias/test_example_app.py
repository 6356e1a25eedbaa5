"""In-process tests of the example notes service (examples/notes) through the test client.

They run under the ``carboy.flask_compat`` alias (tests/test_flask_alias.py runs this folder in
a pytest process of its own): the app uses Flask-WTF, which imports ``flask``. The test client
sends the session's CSRF token with every write (notes_client.py), as the app's forms do; the
tests of the protection itself send none, or a wrong one.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from examples.notes import create_app as create_notes_app  # noqa: E402
from examples.notes.db import db  # noqa: E402
from notes_client import with_csrf_client  # noqa: E402


def sql(statement, **params):
    """Run *statement* on the app context's ``db.session``."""
    return db.session.execute(sa.text(statement), params)


def create_app(test_config=None):
    """The app, whose test client sends the CSRF token with each write (notes_client.py)."""
    return with_csrf_client(create_notes_app(test_config))


@pytest.fixture
def app(tmp_path):
    return create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret",
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "DATABASE": str(tmp_path / "data" / "notes.sqlite"),
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()


def register(client, username="ada", password="lovelace1"):
    return client.post("/register", data={"username": username, "password": password})


def login(client, username="ada", password="lovelace1"):
    return client.post("/login", data={"username": username, "password": password})


def signed_up(client, username="ada", password="lovelace1"):
    assert register(client, username, password).status_code == 302
    assert login(client, username, password).status_code == 302
    return client


# -- CSRF (Flask-WTF's CSRFProtect, unchanged) --------------------------------------------------


def form_token(html: str) -> str:
    match = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', html)
    assert match, html
    return match.group(1)


def test_the_forms_and_the_api_are_csrf_protected_by_flask_wtf(app):
    from flask_wtf.csrf import CSRFProtect

    assert isinstance(app.extensions["csrf"], CSRFProtect)
    client = app.test_client()
    credentials = {"username": "ada", "password": "lovelace1"}
    # A form sent without its token: Flask-WTF's 400, before the view writes anything.
    res = client.post("/register", data=credentials, csrf=False)
    assert res.status_code == 400
    assert b"The CSRF token is missing." in res.data and b"Form expired" in res.data
    # With the token of the page's own form it goes through, as a browser sends it.
    page = client.get("/register").get_data(as_text=True)
    res = client.post("/register", data={**credentials, "csrf_token": form_token(page)}, csrf=False)
    assert res.status_code == 302
    # A token that is not this session's is refused too.
    other = app.test_client()
    foreign = form_token(other.get("/login").get_data(as_text=True))
    res = client.post("/login", data={**credentials, "csrf_token": foreign}, csrf=False)
    assert res.status_code == 400 and b"The CSRF token" in res.data
    page = client.get("/login").get_data(as_text=True)
    res = client.post("/login", data={**credentials, "csrf_token": form_token(page)}, csrf=False)
    assert res.status_code == 302
    # Logged in: the new-note form and logout need the token too (the login renewed it).
    res = client.post("/notes/new", data={"title": "forged"}, csrf=False)
    assert res.status_code == 400
    page = client.get("/notes/new").get_data(as_text=True)
    res = client.post(
        "/notes/new", data={"title": "mine", "csrf_token": form_token(page)}, csrf=False
    )
    assert res.status_code == 302
    # The JSON API, authenticated by the same cookie: the X-CSRFToken header, or a JSON 400.
    res = client.post("/api/notes", json={"title": "forged"}, csrf=False)
    assert res.status_code == 400 and res.is_json
    assert res.get_json()["error"] == {"status": 400, "message": "The CSRF token is missing."}
    assert client.delete("/api/notes/1", csrf=False).status_code == 400
    token = client.get("/api/csrf").get_json()["csrf_token"]
    res = client.post("/api/notes", json={"title": "sent"}, headers={"X-CSRFToken": token})
    assert res.status_code == 201
    titles = [n["title"] for n in client.get("/api/notes").get_json()["notes"]]
    assert titles == ["sent", "mine"]  # nothing forged was written
    assert client.post("/logout", csrf=False).status_code == 400
    assert client.get("/api/notes").status_code == 200  # still logged in


def test_factory_creates_instance_folder_and_schema(app, tmp_path):
    assert Path(app.instance_path) == tmp_path / "instance"
    assert Path(app.instance_path).is_dir()
    db_path = tmp_path / "data" / "notes.sqlite"
    assert app.config["DATABASE"] == str(db_path)
    assert app.config["SECRET_KEY"] == "test-secret"
    with sqlite3.connect(db_path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        heads = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"account", "note"} <= tables
    assert heads == [("0003",)]  # made by the migrations, up to the latest


def test_default_database_is_in_memory_shared_by_threads_and_per_app(tmp_path):
    """README's first command serves the app on its defaults: SQLite in memory, one database
    per app, seen by every thread of the process (the dev server's threads), no file."""
    app = create_app({"INSTANCE_PATH": str(tmp_path / "inst"), "TESTING": True})
    assert app.config["DATABASE"] == ":memory:"
    assert app.config["SECRET_KEY"] == "dev"
    signed_up(app.test_client())

    seen: list[str] = []

    def other_thread() -> None:
        with app.app_context():
            seen.extend(r[0] for r in sql("SELECT username FROM account"))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen == ["ada"]
    assert list((tmp_path / "inst").iterdir()) == []  # no database file

    other = create_app({"INSTANCE_PATH": str(tmp_path / "other"), "TESTING": True})
    with other.app_context():
        assert sql("SELECT COUNT(*) FROM account").fetchone()[0] == 0


def test_in_memory_writers_wait_for_each_other(tmp_path):
    """Two connections to the in-memory database lock as files do: a second writer waits
    for the first to commit (its timeout), rather than failing at once. (Each thread has a
    connection of its own: SQLite's memdb VFS, not one connection shared by all threads.)"""
    app = create_app({"INSTANCE_PATH": str(tmp_path / "inst"), "TESTING": True})
    with app.app_context():
        assert not isinstance(db.engine.pool, sa.pool.StaticPool)
        first = db.engine.raw_connection()
        first.execute("BEGIN IMMEDIATE")
        first.execute("INSERT INTO account (username, password_hash) VALUES ('a', 'x')")
        done: list[int] = []

        def second_writer() -> None:
            with app.app_context():
                sql("INSERT INTO account (username, password_hash) VALUES ('b', 'x')")
                db.session.commit()
                done.append(sql("SELECT COUNT(*) FROM account").fetchone()[0])

        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join(0.2)
        assert thread.is_alive() and done == []  # waiting on the first writer's lock
        first.commit()
        first.close()
        thread.join()
    assert done == [2]


def test_workers_booting_together_migrate_the_schema_once(tmp_path):
    """A server's workers each build the app on a new database file at the same time: the
    migrations run once (a file lock next to the database; one process at a time), the
    others wait and find the database at the head, and every worker boots. (Without the lock
    the later ones failed on 'table account already exists'.)"""
    path = tmp_path / "notes.sqlite"
    booted: list[object] = []
    start = threading.Barrier(3)

    def boot() -> None:
        start.wait()
        try:
            booted.append(create_app({"DATABASE": str(path), "TESTING": True}))
        except BaseException as exc:  # reported by the assertion below (SystemExit included)
            booted.append(exc)

    threads = [threading.Thread(target=boot) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30.0)
    assert not any(thread.is_alive() for thread in threads)
    assert len(booted) == 3 and not any(isinstance(b, BaseException) for b in booted), booted
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"account", "note", "note_word"} <= tables


def test_prefixed_env_overrides_defaults(monkeypatch, tmp_path):
    db_path = tmp_path / "env.sqlite"
    monkeypatch.setenv("CARBOY_SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("CARBOY_DATABASE", str(db_path))
    app = create_app()
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert app.config["DATABASE"] == str(db_path)
    assert db_path.is_file()


def test_connection_is_shared_per_context_and_closed_on_teardown(app):
    with app.app_context():
        session = db.session()
        assert db.session() is session  # one session per app context
        conn = session.connection()
        assert session.connection() is conn
    assert conn.closed  # the session was removed, its connection given back


def test_register_then_login_flow(client):
    res = register(client)
    assert res.status_code == 302
    assert res.headers["Location"].endswith("/login")

    page = client.get("/login")
    assert b"Account created" in page.data

    res = login(client)
    assert res.status_code == 302
    assert res.headers["Location"].endswith("/")
    with client.session_transaction() as sess:
        assert isinstance(sess["account_id"], int)

    index = client.get("/")
    assert index.status_code == 200
    assert b"Welcome back, ada." in index.data
    assert b'<span id="who">ada</span>' in index.data
    assert b"No notes yet." in index.data


def test_register_rejects_duplicates_and_short_passwords(client):
    register(client)
    res = register(client, password="another1")
    assert res.status_code == 200
    assert b"already taken" in res.data
    res = register(client, username="bob", password="x")
    assert res.status_code == 200
    assert b"at least 4 characters" in res.data


def test_wrong_password_flashes_and_stays_anonymous(client):
    register(client)
    res = login(client, password="not-it")
    assert res.status_code == 200
    assert b"Unknown username or wrong password." in res.data
    assert b'class="flash flash-error"' in res.data
    with client.session_transaction() as sess:
        assert "account_id" not in sess
    assert b"Create an account" in client.get("/").data  # the welcome: signed out


def test_a_first_visit_is_a_welcome_not_an_error(client):
    res = client.get("/")
    assert res.status_code == 200
    assert b"Create an account" in res.data and b'href="/register"' in res.data
    assert b'class="flash flash-error"' not in res.data
    # A page that needs an account still sends a visitor to log in, saying why.
    res = client.get("/notes/new")
    assert res.status_code == 302 and res.headers["Location"].endswith("/login")
    assert b"Please log in first." in client.get("/login").data


@pytest.mark.parametrize("path", ["/notes/99999999999999999999999", "/api/notes/9" + "9" * 40])
def test_ids_beyond_sqlite_integers_are_404_not_500(client, path):
    signed_up(client)
    res = client.get(path)
    assert res.status_code == 404
    if path.startswith("/api/"):
        assert res.is_json and res.get_json()["error"]["status"] == 404
    largest = f"/api/notes/{2**63 - 1}"  # the largest id SQLite holds: looked up, not found
    assert client.get(largest).status_code == 404


def test_every_api_error_is_json_with_its_headers(client):
    res = client.put("/api/notes")  # a routing error (405), raised before any blueprint
    assert res.status_code == 405
    assert res.is_json
    assert res.get_json() == {
        "error": {"status": 405, "message": res.get_json()["error"]["message"]}
    }
    assert set(res.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    res = client.put("/notes/new")  # outside /api: the HTML page as before
    assert res.status_code == 405 and not res.is_json


def test_refuses_the_development_secret_key_outside_debug_and_testing(tmp_path):
    with pytest.raises(RuntimeError, match="CARBOY_SECRET_KEY"):
        create_app({"INSTANCE_PATH": str(tmp_path / "a")})
    assert create_app({"INSTANCE_PATH": str(tmp_path / "b"), "DEBUG": True}).debug
    app = create_app({"INSTANCE_PATH": str(tmp_path / "c"), "SECRET_KEY": "a-real-one"})
    assert not app.debug and not app.testing


def test_create_view_list_and_delete_note_via_pages(client):
    signed_up(client)
    assert client.get("/notes/new").status_code == 200

    res = client.post("/notes/new", data={"title": "Groceries", "body": "eggs\nflour"})
    assert res.status_code == 302
    note_url = res.headers["Location"]
    assert "/notes/" in note_url

    page = client.get(note_url)
    assert page.status_code == 200
    assert b"Note saved." in page.data
    assert b"Groceries" in page.data
    assert b"eggs\nflour" in page.data

    listing = client.get("/")
    assert b"Groceries" in listing.data
    assert b"No notes yet." not in listing.data

    res = client.post(note_url.rstrip("/") + "/delete")
    assert res.status_code == 302
    listing = client.get("/")
    assert b"Note deleted." in listing.data
    assert b"No notes yet." in listing.data
    assert client.get(note_url).status_code == 404


def test_note_without_title_is_rejected(client):
    signed_up(client)
    res = client.post("/notes/new", data={"title": "   ", "body": "kept"})
    assert res.status_code == 200
    assert b"A note needs a title." in res.data
    assert b"kept" in res.data


def test_templates_autoescape_user_content(client):
    signed_up(client)
    client.post("/notes/new", data={"title": "<script>alert(1)</script>", "body": "<b>hi</b>"})
    listing = client.get("/").data
    assert b"<script>alert(1)</script>" not in listing
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in listing


def test_json_api_round_trip(client):
    signed_up(client)
    assert client.get("/api/notes").get_json() == {"notes": [], "count": 0}

    res = client.post("/api/notes", json={"title": "From JSON", "body": "api body"})
    assert res.status_code == 201
    created = res.get_json()
    assert created["title"] == "From JSON"
    assert created["body"] == "api body"
    assert res.headers["Location"].endswith(f"/api/notes/{created['id']}")

    client.post("/notes/new", data={"title": "From a form", "body": ""})
    listing = client.get("/api/notes")
    assert listing.status_code == 200
    assert listing.mimetype == "application/json"
    data = listing.get_json()
    assert data["count"] == 2
    assert [n["title"] for n in data["notes"]] == ["From a form", "From JSON"]

    one = client.get(f"/api/notes/{created['id']}")
    assert one.status_code == 200
    assert one.get_json() == created

    assert client.delete(f"/api/notes/{created['id']}").status_code == 204
    gone = client.get(f"/api/notes/{created['id']}")
    assert gone.status_code == 404
    assert gone.get_json()["error"]["status"] == 404
    assert client.delete(f"/api/notes/{created['id']}").status_code == 404


def test_a_write_does_not_wait_for_readers_of_the_database_file(client, app):
    """Readers in other workers do not hold up a write (the file is in WAL mode): under
    saturation, writers waiting for a moment without readers answered 500 'database is
    locked' after the busy timeout."""
    signed_up(client)
    reader = sqlite3.connect(app.config["DATABASE"], isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM note").fetchone() == (0,)  # a read, open
        answers = []
        writer = threading.Thread(
            target=lambda: answers.append(client.post("/api/notes", json={"title": "during"}))
        )
        writer.start()
        writer.join(3.0)  # far below the busy timeout: the write must not be waiting
        assert not writer.is_alive() and [res.status_code for res in answers] == [201]
        # The open read still sees the database as it was when it began.
        assert reader.execute("SELECT COUNT(*) FROM note").fetchone() == (0,)
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM note").fetchone() == (1,)
    finally:
        reader.close()
        writer.join()


def test_json_api_validates_input(client):
    signed_up(client)
    res = client.post("/api/notes", data="not json", content_type="application/json")
    assert res.status_code == 400
    assert "JSON object" in res.get_json()["error"]["message"]
    res = client.post("/api/notes", json={"title": ""})
    assert res.status_code == 400
    assert res.get_json()["error"]["message"] == "A note needs a title."
    res = client.post("/api/notes", json={"title": "ok", "body": 5})
    assert res.status_code == 400


def test_json_api_requires_login(client):
    for method, url in [
        ("get", "/api/notes"),
        ("post", "/api/notes"),
        ("get", "/api/notes/1"),
        ("delete", "/api/notes/1"),
    ]:
        res = getattr(client, method)(url, json={"title": "x"} if method == "post" else None)
        assert res.status_code == 401, (method, url)
        assert res.mimetype == "application/json"
        assert res.get_json()["error"]["status"] == 401


def test_users_only_see_their_own_notes(client, app):
    signed_up(client, "ada")
    note_id = client.post("/api/notes", json={"title": "private"}).get_json()["id"]
    client.post("/logout")

    signed_up(client, "grace", "hopper12")
    assert client.get("/api/notes").get_json()["count"] == 0
    assert client.get(f"/api/notes/{note_id}").status_code == 404
    assert client.get(f"/notes/{note_id}").status_code == 404
    assert client.post(f"/notes/{note_id}/delete").status_code == 404


def test_logout_clears_session(client):
    signed_up(client)
    client.post("/api/notes", json={"title": "before logout"})
    res = client.post("/logout")
    assert res.status_code == 302
    assert res.headers["Location"].endswith("/login")
    assert b"You have been logged out." in client.get("/login").data
    with client.session_transaction() as sess:
        assert "account_id" not in sess
    assert b"Create an account" in client.get("/").data  # the welcome: signed out
    assert client.get("/api/notes").status_code == 401


def test_logout_is_post_only(client):
    assert client.get("/logout").status_code == 405


def test_404_page_is_html_and_api_404_is_json(client):
    res = client.get("/no/such/page")
    assert res.status_code == 404
    assert res.mimetype == "text/html"
    assert b"Page not found" in res.data
    assert b"<code>/no/such/page</code>" in res.data

    res = client.get("/api/nothing-here")
    assert res.status_code == 404
    assert res.get_json() == {"error": {"status": 404, "message": "No such API endpoint."}}


def test_500_page(tmp_path):
    app = create_app(
        {
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SECRET_KEY": "a-real-one",
            "PROPAGATE_EXCEPTIONS": False,
        }
    )

    @app.get("/explode")
    def explode():
        raise RuntimeError("boom")

    res = app.test_client().get("/explode")
    assert res.status_code == 500
    assert b"Something went wrong" in res.data
    assert b"boom" not in res.data


def test_init_db_command_resets_data(app, client):
    signed_up(client)
    client.post("/api/notes", json={"title": "doomed"})
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "Empty notes database ready" in result.output
    with app.app_context():
        assert sql("SELECT COUNT(*) FROM note").fetchone()[0] == 0
        assert sql("SELECT COUNT(*) FROM account").fetchone()[0] == 0
