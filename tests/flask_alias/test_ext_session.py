"""Flask-Session with ``SESSION_TYPE="redis"``: the session lives in Redis, the cookie holds its id.

Requests go through carboy's WSGI and ASGI interfaces; the ASGI async view reads the session
on the event-loop path.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import redis
from flask import Flask, session
from flask_session import Session

REDIS_URL = "redis://127.0.0.1:6379"


def create_app(prefix: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="session-test-secret",
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(REDIS_URL),
        SESSION_KEY_PREFIX=f"{prefix}:session:",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=1),
    )
    Session(app)

    @app.post("/cart/<item>")
    def add(item: str) -> dict[str, list[str]]:
        session["cart"] = [*session.get("cart", []), item]
        return {"cart": session["cart"]}

    @app.get("/cart")
    def show() -> dict[str, list[str]]:
        return {"cart": session.get("cart", [])}

    @app.get("/cart/async")
    async def show_async() -> dict[str, list[str]]:
        return {"cart": session.get("cart", [])}

    @app.post("/checkout")
    def checkout() -> dict[str, int]:
        count = len(session.get("cart", []))
        session.clear()
        return {"bought": count}

    return app


@pytest.fixture
def app(redis_prefix: str, client_class: type) -> Flask:
    app = create_app(redis_prefix)
    app.test_client_class = client_class
    return app


def store_key(app: Flask, session_id: str) -> str:
    return app.config["SESSION_KEY_PREFIX"] + session_id


def test_session_is_stored_in_redis(app: Flask, redis_client: redis.Redis) -> None:
    client = app.test_client()
    assert client.get("/cart").json == {"cart": []}
    assert client.get_cookie("session") is None  # nothing stored, nothing sent

    assert client.post("/cart/apples").json == {"cart": ["apples"]}
    cookie = client.get_cookie("session")
    assert cookie is not None
    # The cookie holds the session id only, never the data.
    assert "apples" not in cookie.value
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie.value)  # 32 random bytes, base64url
    key = store_key(app, cookie.value)
    assert redis_client.exists(key)
    assert 0 < redis_client.ttl(key) <= 3600
    raw = redis_client.get(key)
    assert raw is not None
    assert b"apples" in raw
    assert app.session_interface.serializer.decode(raw)["cart"] == ["apples"]

    # The value survives across requests, and the id stays the same.
    client.post("/cart/pears")
    client.post("/cart/plums")
    assert client.get("/cart").json == {"cart": ["apples", "pears", "plums"]}
    assert client.get("/cart/async").json == {"cart": ["apples", "pears", "plums"]}
    assert store_key(app, client.get_cookie("session").value) == key
    assert app.session_interface.serializer.decode(redis_client.get(key))["cart"] == [
        "apples",
        "pears",
        "plums",
    ]


def test_redis_is_the_source_of_truth(app: Flask, redis_client: redis.Redis) -> None:
    client = app.test_client()
    client.post("/cart/bread")
    key = store_key(app, client.get_cookie("session").value)

    # Editing the stored value changes what the app sees: the cookie carries no data.
    data = app.session_interface.serializer.decode(redis_client.get(key))
    data["cart"] = ["bread", "butter"]
    redis_client.set(key, app.session_interface.serializer.encode(data), keepttl=True)
    assert client.get("/cart").json == {"cart": ["bread", "butter"]}

    # Deleting the key ends the session, though the browser still sends the cookie.
    redis_client.delete(key)
    assert client.get_cookie("session") is not None
    assert client.get("/cart/async").json == {"cart": []}


def test_clients_have_separate_sessions_and_clear_deletes(
    app: Flask, redis_client: redis.Redis, redis_prefix: str
) -> None:
    alice = app.test_client()
    bob = app.test_client()
    alice.post("/cart/tea")
    bob.post("/cart/coffee")
    bob.post("/cart/milk")
    assert alice.get("/cart").json == {"cart": ["tea"]}
    assert bob.get("/cart").json == {"cart": ["coffee", "milk"]}
    alice_key = store_key(app, alice.get_cookie("session").value)
    bob_key = store_key(app, bob.get_cookie("session").value)
    assert alice_key != bob_key
    assert len(list(redis_client.scan_iter(match=f"{redis_prefix}:session:*"))) == 2

    assert bob.post("/checkout").json == {"bought": 2}
    assert not redis_client.exists(bob_key)
    assert bob.get_cookie("session") is None
    assert bob.get("/cart").json == {"cart": []}
    assert redis_client.exists(alice_key)


def test_unknown_id_finds_no_session(app: Flask, redis_client: redis.Redis) -> None:
    victim = app.test_client()
    victim.post("/cart/jewels")
    guesser = app.test_client()
    guesser.set_cookie("session", "0" * 43)
    assert guesser.get("/cart").json == {"cart": []}
    # Only the stored id opens the stored session.
    guesser.set_cookie("session", victim.get_cookie("session").value)
    assert guesser.get("/cart").json == {"cart": ["jewels"]}
