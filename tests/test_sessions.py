from __future__ import annotations

import hashlib
import typing as t
from datetime import timedelta

import flask
import itsdangerous
import pytest

import carboy
from carboy import flash, get_flashed_messages, session


def _session_app(module: t.Any) -> t.Any:
    app = (module.Flask if module is flask else module.Carboy)("session_app")
    session = module.session
    app.config["SECRET_KEY"] = "shared secret"

    @app.route("/set/<value>")
    def set_value(value: str) -> str:
        session["value"] = value
        session["items"] = [1, (2, 3), b"\x00bytes"]
        return "ok"

    @app.route("/get")
    def get_value() -> t.Any:
        return {"value": session.get("value"), "items": repr(session.get("items"))}

    return app


def test_session_round_trip_and_vary_cookie(app: carboy.Carboy, client) -> None:
    @app.route("/login")
    def login() -> str:
        session["user"] = "ann"
        return "in"

    @app.route("/me")
    def me() -> str:
        return session.get("user", "nobody")

    @app.route("/plain")
    def plain() -> str:
        return "plain"

    @app.route("/logout")
    def logout() -> str:
        session.clear()
        return "out"

    rv = client.get("/login")
    assert "session=" in rv.headers["Set-Cookie"]
    assert "HttpOnly" in rv.headers["Set-Cookie"]
    assert "Cookie" in rv.headers.get("Vary", "")
    rv = client.get("/me")
    assert rv.data == b"ann"
    assert "Cookie" in rv.headers["Vary"]
    plain_rv = client.get("/plain")
    assert "Vary" not in plain_rv.headers and "Set-Cookie" not in plain_rv.headers
    rv = client.get("/logout")
    assert "Expires=Thu, 01 Jan 1970" in rv.headers["Set-Cookie"]
    assert client.get("/me").data == b"nobody"


def test_permanent_session_and_cookie_settings(app: carboy.Carboy, client) -> None:
    app.config.update(
        PERMANENT_SESSION_LIFETIME=timedelta(hours=1),
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_PATH="/app",
    )

    @app.route("/")
    def index() -> str:
        session.permanent = True
        session["x"] = 1
        return "x"

    cookie = client.get("/").headers["Set-Cookie"]
    for part in ["sid=", "Expires=", "Secure", "SameSite=Lax", "Path=/app"]:
        assert part in cookie, part


def test_permanent_cookie_refreshed_without_touching_session(app: carboy.Carboy) -> None:
    @app.route("/start")
    def start() -> str:
        session.permanent = True
        session["x"] = 1
        return "x"

    @app.route("/untouched")
    def untouched() -> str:
        return "u"

    client = app.test_client()
    client.get("/start")
    assert "session=" in client.get("/untouched").headers.get("Set-Cookie", "")
    app2 = carboy.Carboy(__name__)
    app2.config.update(SECRET_KEY="k", SESSION_REFRESH_EACH_REQUEST=False)
    app2.add_url_rule("/start", "start", start)
    app2.add_url_rule("/untouched", "untouched", untouched)
    client2 = app2.test_client()
    client2.get("/start")
    assert "Set-Cookie" not in client2.get("/untouched").headers


def test_no_secret_key_gives_clear_error(app: carboy.Carboy) -> None:
    app.config["SECRET_KEY"] = None

    @app.route("/")
    def index() -> str:
        session["x"] = 1
        return "x"

    with pytest.raises(RuntimeError, match="secret key"):
        app.test_client().get("/")


def test_secret_key_fallbacks(app: carboy.Carboy) -> None:
    old = _session_app(carboy)
    client = old.test_client()
    client.get("/set/rotated")
    new = _session_app(carboy)
    new.config.update(SECRET_KEY="new secret", SECRET_KEY_FALLBACKS=["shared secret"])
    new_client = new.test_client()
    cookie = client.get_cookie("session")
    assert cookie is not None
    new_client.set_cookie("session", cookie.value)
    assert new_client.get("/get").json["value"] == "rotated"


def test_one_signing_serializer_until_what_it_is_made_from_changes() -> None:
    app = _session_app(carboy)
    interface = carboy.sessions.SecureCookieSessionInterface()
    app.session_interface = interface
    client = app.test_client()
    client.get("/set/one")
    for _ in range(3):
        assert client.get("/get").json["value"] == "one"
    first = interface._serializer(app)
    assert interface._serializer(app) is first
    # A new key signs from now on; the old cookie no longer opens.
    app.config["SECRET_KEY"] = "next secret"
    assert interface._serializer(app) is not first
    assert client.get("/get").json["value"] is None
    # The old key, added in place to the fallbacks, opens the old cookie again.
    app.config["SECRET_KEY_FALLBACKS"] = fallbacks = []
    client.get("/get")
    fallbacks.append("shared secret")
    old = app.test_client()
    old.set_cookie("session", _signed_with_shared_secret())
    assert old.get("/get").json["value"] == "one"
    # So does a changed salt, on the instance.
    interface.salt = "another salt"
    assert old.get("/get").json["value"] is None


def _signed_with_shared_secret() -> str:
    app = _session_app(carboy)
    client = app.test_client()
    client.get("/set/one")
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_an_own_get_signing_serializer_is_called_every_time() -> None:
    calls: list[str] = []

    class Own(carboy.sessions.SecureCookieSessionInterface):
        def get_signing_serializer(self, app: t.Any) -> t.Any:
            calls.append("made")
            return super().get_signing_serializer(app)

    app = _session_app(carboy)
    app.session_interface = Own()
    client = app.test_client()
    client.get("/set/one")
    assert client.get("/get").json["value"] == "one"
    # Opened and saved on the write, opened on the read (nothing to save).
    assert calls == ["made", "made", "made"]


def test_each_signing_key_is_derived_once(monkeypatch: pytest.MonkeyPatch) -> None:
    derived: list[t.Any] = []
    original = itsdangerous.Signer.derive_key

    def counting(self: t.Any, secret_key: t.Any = None) -> bytes:
        derived.append(secret_key)
        return original(self, secret_key)

    monkeypatch.setattr(itsdangerous.Signer, "derive_key", counting)
    app = _session_app(carboy)
    client = app.test_client()
    client.get("/set/one")
    assert client.get("/get").json["value"] == "one"
    after_first = len(derived)
    assert after_first > 0
    for value in ("two", "three", "four"):
        client.get(f"/set/{value}")
        assert client.get("/get").json["value"] == value
    # itsdangerous derives the key on every sign and verify: two more per round trip.
    assert len(derived) == after_first


def test_signing_serializer_signs_as_itsdangerous_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time", lambda: 1_800_000_000.0)
    app = _session_app(carboy)
    app.config["SECRET_KEY_FALLBACKS"] = ["old secret"]
    interface = carboy.sessions.SecureCookieSessionInterface()
    mine = interface.get_signing_serializer(app)
    assert isinstance(mine, itsdangerous.URLSafeTimedSerializer)
    theirs = itsdangerous.URLSafeTimedSerializer(
        ["old secret", "shared secret"],
        salt="cookie-session",
        serializer=carboy.sessions.session_json_serializer,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
    )
    data = {"value": "x", "items": [1, (2, 3)]}
    for _ in range(2):  # the second time with the kept signer and key
        assert mine.dumps(data) == theirs.dumps(data)
    old = itsdangerous.URLSafeTimedSerializer(
        "old secret",
        salt="cookie-session",
        serializer=carboy.sessions.session_json_serializer,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
    )
    for _ in range(2):
        assert mine.loads(old.dumps(data)) == data
    with pytest.raises(itsdangerous.BadSignature):
        mine.loads(theirs.dumps(data)[:-1] + "A")
    # Another salt, given per call, is honoured and not kept.
    assert mine.dumps(data, salt="other") == theirs.dumps(data, salt="other")
    assert mine.make_signer("other") is not mine.make_signer("other")
    assert mine.make_signer() is mine.make_signer("cookie-session")


@pytest.mark.parametrize(("writer", "reader"), [(flask, carboy), (carboy, flask)])
def test_session_cookie_interoperates_with_flask(writer: t.Any, reader: t.Any) -> None:
    writer_client = _session_app(writer).test_client()
    writer_client.get("/set/shared")
    cookie = writer_client.get_cookie("session")
    assert cookie is not None
    reader_client = _session_app(reader).test_client()
    reader_client.set_cookie("session", cookie.value)
    data = reader_client.get("/get").json
    assert data == {"value": "shared", "items": repr([1, (2, 3), b"\x00bytes"])}


def test_flash_with_categories(app: carboy.Carboy, client) -> None:
    @app.route("/add")
    def add() -> str:
        flash("saved")
        flash("careful", "warning")
        flash("broken", "error")
        return "added"

    @app.route("/show")
    def show() -> t.Any:
        return {
            "all": get_flashed_messages(with_categories=True),
            "again": get_flashed_messages(),
            "errors": get_flashed_messages(category_filter=["error"]),
        }

    client.get("/add")
    data = client.get("/show").json
    assert data["all"] == [["message", "saved"], ["warning", "careful"], ["error", "broken"]]
    assert data["again"] == ["saved", "careful", "broken"]
    assert data["errors"] == ["broken"]
    assert client.get("/show").json["all"] == []


def test_flashed_messages_in_template(app: carboy.Carboy, client) -> None:
    @app.route("/")
    def index() -> str:
        flash("<b>hi</b>")
        return carboy.render_template_string(
            "{% for m in get_flashed_messages() %}[{{ m }}]{% endfor %}"
        )

    assert client.get("/").data == b"[&lt;b&gt;hi&lt;/b&gt;]"
