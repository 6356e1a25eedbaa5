from __future__ import annotations

import pytest
from flask import g, session
from journal.storage import connection
from werkzeug.security import check_password_hash


def stored_account(app, username):
    with app.app_context():
        return (
            connection().execute("SELECT * FROM account WHERE username = ?", (username,)).fetchone()
        )


def test_register_page(client):
    res = client.get("/auth/register")
    assert res.status_code == 200
    assert "<title>Create an account · Journal</title>" in res.text
    assert 'name="password"' in res.text


def test_register_stores_a_password_hash(app, client):
    res = client.post("/auth/register", data={"username": "heron", "password": "tall-grass"})
    assert res.status_code == 302
    assert res.headers["Location"] == "/auth/login"

    account = stored_account(app, "heron")
    assert account is not None
    assert account["password_hash"] != "tall-grass"
    assert check_password_hash(account["password_hash"], "tall-grass")
    assert not check_password_hash(account["password_hash"], "tall-grasS")


def test_register_then_sign_in_shows_the_welcome_flash(client):
    res = client.post(
        "/auth/register",
        data={"username": "heron", "password": "tall-grass"},
        follow_redirects=True,
    )
    assert res.request.path == "/auth/login"
    assert "Welcome aboard, heron! Sign in to start writing." in res.text
    # A flashed message is shown once.
    assert "Welcome aboard" not in client.get("/auth/login").text

    res = client.post("/auth/login", data={"username": "heron", "password": "tall-grass"})
    assert res.status_code == 302


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("", "long-enough", "Choose a username."),
        ("   ", "long-enough", "Choose a username."),
        ("heron", "short", "Passwords need at least 8 characters."),
        ("wren", "another-password", "The username &#39;wren&#39; is already taken."),
    ],
)
def test_register_rejects(client, people, username, password, message):
    res = client.post("/auth/register", data={"username": username, "password": password})
    assert res.status_code == 400
    assert message in res.text
    assert 'class="notice notice-error"' in res.text


def test_sign_in_sets_the_session_and_g_user(client, sign_in, people):
    with client:
        res = sign_in("wren")
        assert res.status_code == 302
        assert res.headers["Location"] == "/"
        assert session["account_id"] == people["wren"]["id"]

        page = client.get("/")
        assert g.user["username"] == "wren"
        assert g.user["id"] == people["wren"]["id"]
    assert "Signed in as wren." in page.text
    assert '<span class="whoami">wren</span>' in page.text


@pytest.mark.parametrize(
    ("username", "password"), [("wren", "otter-whiskers"), ("nobody", "wren-feathers")]
)
def test_sign_in_rejects_bad_credentials(client, sign_in, username, password):
    with client:
        res = sign_in(username, password=password)
        assert res.status_code == 200
        assert "account_id" not in session
    assert "That username and password do not match." in res.text
    assert f'value="{username}"' in res.text


def test_anonymous_visitors_are_sent_to_sign_in(client):
    res = client.get("/entries/new")
    assert res.status_code == 302
    assert res.headers["Location"] == "/auth/login?next=/entries/new"

    page = client.get(res.headers["Location"])
    assert "Please sign in first." in page.text
    assert 'name="next" value="/entries/new"' in page.text


def test_sign_in_returns_to_the_page_asked_for(client, people):
    res = client.post(
        "/auth/login",
        data={"username": "wren", "password": "wren-feathers", "next": "/entries/new"},
    )
    assert res.headers["Location"] == "/entries/new"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", ""])
def test_sign_in_ignores_foreign_targets(client, people, target):
    res = client.post(
        "/auth/login", data={"username": "otter", "password": "otter-whiskers", "next": target}
    )
    assert res.headers["Location"] == "/"


def test_sign_out(wren):
    with wren:
        res = wren.post("/auth/logout", follow_redirects=True)
        assert "account_id" not in session
        assert g.user is None
    assert res.request.path == "/auth/login"
    assert "You have been signed out." in res.text
    assert wren.get("/").status_code == 302


def test_sign_out_needs_post(wren):
    assert wren.get("/auth/logout").status_code == 405
    assert wren.get("/").status_code == 200


def test_stale_session_means_anonymous(app, wren, people):
    with app.app_context():
        conn = connection()
        conn.execute("DELETE FROM account WHERE id = ?", (people["wren"]["id"],))
        conn.commit()
    assert wren.get("/").status_code == 302
