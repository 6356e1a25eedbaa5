"""Flask-Login, with users stored by Flask-SQLAlchemy in an in-memory SQLite database."""

from __future__ import annotations

from collections.abc import Iterator

import flask_sqlalchemy
import pytest
from flask import Flask, jsonify, request
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash


class Base(DeclarativeBase):
    pass


db = flask_sqlalchemy.SQLAlchemy(model_class=Base)
login_manager = LoginManager()


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))


# Hashed once: each app under test stores the same two users.
PASSWORD_HASHES = {
    "ada": generate_password_hash("lovelace"),
    "grace": generate_password_hash("hopper"),
}


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="login-test-secret",
        SQLALCHEMY_DATABASE_URI="sqlite:///:memory:",
    )
    db.init_app(app)
    login_manager.init_app(app)

    @app.post("/login")
    def login() -> tuple[dict[str, str], int] | dict[str, str]:
        name = request.form["name"]
        user = db.session.scalars(select(User).where(User.name == name)).first()
        if user is None or not check_password_hash(user.password_hash, request.form["password"]):
            return {"error": "bad credentials"}, 401
        login_user(user, remember=request.form.get("remember") == "yes")
        return {"logged_in": user.name}

    @app.get("/me")
    @login_required
    def me() -> object:
        return jsonify(id=current_user.id, name=current_user.name)

    @app.get("/me/async")
    @login_required
    async def me_async() -> dict[str, object]:
        return {"name": current_user.name}

    @app.get("/whoami")
    def whoami() -> dict[str, object]:
        return {
            "authenticated": current_user.is_authenticated,
            "name": getattr(current_user, "name", None),
        }

    @app.post("/logout")
    @login_required
    def logout() -> dict[str, bool]:
        logout_user()
        return {"logged_out": True}

    with app.app_context():
        db.create_all()
        db.session.add_all(
            [User(name=name, password_hash=hashed) for name, hashed in PASSWORD_HASHES.items()]
        )
        db.session.commit()
    return app


@pytest.fixture
def app(client_class: type) -> Iterator[Flask]:
    app = create_app()
    app.test_client_class = client_class
    yield app
    with app.app_context():
        db.drop_all()


def test_login_persists_across_requests_until_logout(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/me").status_code == 401
    assert client.get("/whoami").json == {"authenticated": False, "name": None}

    response = client.post("/login", data={"name": "ada", "password": "lovelace"})
    assert response.status_code == 200
    assert response.json == {"logged_in": "ada"}

    # Three separate requests: the session cookie alone keeps the user logged in.
    for _ in range(3):
        response = client.get("/me")
        assert response.status_code == 200
        assert response.json["name"] == "ada"
    assert client.get("/me/async").json == {"name": "ada"}
    assert client.get("/whoami").json == {"authenticated": True, "name": "ada"}
    with client.session_transaction() as sess:
        assert sess["_user_id"] == str(response.json["id"])

    assert client.post("/logout").json == {"logged_out": True}
    assert client.get("/me").status_code == 401
    assert client.get("/me/async").status_code == 401
    assert client.get("/whoami").json == {"authenticated": False, "name": None}
    with client.session_transaction() as sess:
        assert "_user_id" not in sess


def test_wrong_password_and_separate_clients(app: Flask) -> None:
    ada = app.test_client()
    grace = app.test_client()
    assert ada.post("/login", data={"name": "ada", "password": "nope"}).status_code == 401
    assert ada.get("/me").status_code == 401

    assert ada.post("/login", data={"name": "ada", "password": "lovelace"}).status_code == 200
    assert grace.post("/login", data={"name": "grace", "password": "hopper"}).status_code == 200
    assert ada.get("/me").json["name"] == "ada"
    assert grace.get("/me").json["name"] == "grace"
    grace.post("/logout")
    assert grace.get("/me").status_code == 401
    assert ada.get("/me").json["name"] == "ada"


def test_remember_cookie_restores_the_login(app: Flask) -> None:
    client = app.test_client()
    response = client.post(
        "/login", data={"name": "grace", "password": "hopper", "remember": "yes"}
    )
    assert response.status_code == 200
    remember = client.get_cookie("remember_token")
    assert remember is not None

    # A new browser session: only the remember cookie, no session cookie.
    fresh = app.test_client()
    fresh.set_cookie("remember_token", remember.value)
    assert fresh.get_cookie("session") is None
    assert fresh.get("/me").json["name"] == "grace"
    # Flask-Login put the user back into the new session.
    with fresh.session_transaction() as sess:
        assert sess["_user_id"] == str(fresh.get("/me").json["id"])

    # Logging out also tells the browser to drop the remember cookie.
    fresh.post("/logout")
    assert fresh.get_cookie("remember_token") is None
    assert fresh.get("/me").status_code == 401


def test_login_required_uses_login_view(app: Flask) -> None:
    login_manager.login_view = "login"
    try:
        response = app.test_client().get("/me")
    finally:
        login_manager.login_view = None
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_session_marks_fresh_login(app: Flask) -> None:
    client = app.test_client()
    client.post("/login", data={"name": "ada", "password": "lovelace"})
    with client.session_transaction() as sess:
        assert sess["_fresh"] is True
        assert sess["_id"]  # Flask-Login's session identifier
