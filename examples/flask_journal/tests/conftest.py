from __future__ import annotations

import pytest
from journal import create_app
from journal.storage import connection, create_tables
from werkzeug.security import generate_password_hash

PASSWORDS = {"wren": "wren-feathers", "otter": "otter-whiskers"}


@pytest.fixture
def app(tmp_path):
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "only-for-tests", "DATABASE": str(tmp_path / "test.db")},
        instance_path=str(tmp_path / "instance"),
    )
    with app.app_context():
        create_tables()
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def people(app):
    """Two accounts, ``wren`` and ``otter``, with one entry each.

    Returns ``{name: {"id": account id, "entry": that account's entry id}}``.
    """
    found = {}
    with app.app_context():
        conn = connection()
        for name, password in PASSWORDS.items():
            # A cheap hash keeps the suite quick; check_password_hash reads the method back.
            digest = generate_password_hash(password, method="pbkdf2:sha256:1000")
            account_id = conn.execute(
                "INSERT INTO account (username, password_hash) VALUES (?, ?)", (name, digest)
            ).lastrowid
            entry_id = conn.execute(
                "INSERT INTO entry (owner_id, title, body) VALUES (?, ?, ?)",
                (account_id, f"{name.title()}'s first day", f"{name} wrote this by the river."),
            ).lastrowid
            found[name] = {"id": account_id, "entry": entry_id}
        conn.commit()
    return found


@pytest.fixture
def sign_in(client, people):
    """Sign *client* in as one of the :func:`people` (``wren`` by default)."""

    def sign_in(name="wren", *, password=None, **kwargs):
        data = {"username": name, "password": password or PASSWORDS[name]}
        return client.post("/auth/login", data=data, **kwargs)

    return sign_in


@pytest.fixture
def wren(client, sign_in):
    """The test client, signed in as ``wren``."""
    assert sign_in("wren").status_code == 302
    return client
