"""Session objects and the signed-cookie interface, interoperating with Flask's cookies."""

from __future__ import annotations

import time
import typing as t
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import UUID

import flask
import flask.sessions as flask_sessions
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from markupsafe import Markup
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from carboy.config import DEFAULT_CONFIG, Config
from carboy.globals import _cv_app
from carboy.json.provider import DefaultJSONProvider
from carboy.sessions import (
    NullSession,
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionInterface,
    SessionMixin,
    session_json_serializer,
)

SECRET = "correct horse battery staple"


class FakeApp:
    """The attributes the session interface reads from the app."""

    response_class = Response
    debug = False

    def __init__(self, secret_key: str | bytes | None = SECRET, **config: t.Any) -> None:
        self.config = Config(".", DEFAULT_CONFIG)
        self.config["SECRET_KEY"] = secret_key
        self.config.update(config)
        self.json = DefaultJSONProvider(self)  # type: ignore[arg-type]

    @property
    def secret_key(self) -> str | bytes | None:
        return t.cast("str | bytes | None", self.config["SECRET_KEY"])

    @property
    def permanent_session_lifetime(self) -> timedelta:
        value = self.config["PERMANENT_SESSION_LIFETIME"]
        return value if isinstance(value, timedelta) else timedelta(seconds=value)


@pytest.fixture
def app() -> Iterator[FakeApp]:
    """A fake app, made current for the duration of the test (as during a request)."""
    fake = FakeApp()
    token = _cv_app.set(SimpleNamespace(app=fake))  # type: ignore[arg-type]
    try:
        yield fake
    finally:
        _cv_app.reset(token)


def flask_app(**config: t.Any) -> flask.Flask:
    reference = flask.Flask(__name__)
    reference.secret_key = SECRET
    reference.config.update(config)
    return reference


def request_with_cookie(value: str | None, name: str = "session") -> Request:
    headers = {"Cookie": f"{name}={value}"} if value is not None else {}
    return EnvironBuilder(headers=headers).get_request()


def cookie_value(response: Response, name: str = "session") -> str:
    for header in response.headers.getlist("Set-Cookie"):
        first = header.split(";", 1)[0]
        key, _, value = first.partition("=")
        if key == name:
            return value
    raise AssertionError(f"no {name} cookie set")


def carboy_cookie(app: FakeApp, data: dict[str, t.Any], **config: t.Any) -> str:
    app.config.update(config)
    session = SecureCookieSession(data)
    session.modified = True
    response = Response()
    SecureCookieSessionInterface().save_session(app, session, response)  # type: ignore[arg-type]
    return cookie_value(response)


def flask_cookie(data: dict[str, t.Any], **config: t.Any) -> str:
    reference = flask_app(**config)
    session = flask_sessions.SecureCookieSession(data)
    session.modified = True
    response = Response()
    with reference.app_context():
        reference.session_interface.save_session(reference, session, response)  # type: ignore[arg-type]
    return cookie_value(response)


RICH = {
    "user_id": 7,
    "name": "zoë",
    "flags": (True, None),
    "raw": b"\x00\x01",
    "html": Markup("<b>x</b>"),
    "uuid": UUID(int=99),
    "when": datetime(2022, 6, 1, 12, 0, tzinfo=UTC),
    "nested": {" t": [1, {"k": (2,)}]},
}


# -- session objects ---------------------------------------------------------------------------


def test_secure_cookie_session_tracking() -> None:
    session = SecureCookieSession({"a": 1})
    assert not session.modified
    assert not session.accessed
    assert not session.new
    assert session["a"] == 1
    assert session.accessed
    assert not session.modified

    session = SecureCookieSession()
    assert session.get("missing", 5) == 5
    assert session.accessed and not session.modified

    session = SecureCookieSession()
    assert session.setdefault("k", []) == []
    assert session.accessed

    session = SecureCookieSession()
    session["x"] = 1
    assert session.modified and session.accessed

    for mutate in (
        lambda s: s.pop("a"),
        lambda s: s.update(b=2),
        lambda s: s.clear(),
        lambda s: s.__delitem__("a"),
        lambda s: s.popitem(),
    ):
        session = SecureCookieSession({"a": 1})
        mutate(session)
        assert session.modified, mutate


def test_nested_mutation_is_not_detected() -> None:
    session = SecureCookieSession({"items": [1]})
    session["items"].append(2)
    assert not session.modified
    assert session.accessed


def test_permanent_property() -> None:
    session = SecureCookieSession()
    assert session.permanent is False
    assert not session.modified
    session.permanent = 1  # type: ignore[assignment]
    assert session["_permanent"] is True
    assert session.permanent is True
    assert session.modified
    session.permanent = False
    assert session["_permanent"] is False


def test_session_mixin_defaults() -> None:
    class DictSession(dict[str, t.Any], SessionMixin):
        pass

    session = DictSession()
    assert session.new is False
    assert session.modified is True
    assert session.accessed is False  # set by the request context (Flask 3.1.3)
    session.permanent = True
    assert session == {"_permanent": True}


def test_null_session() -> None:
    session = NullSession()
    assert session.get("x") is None
    assert "x" not in session
    assert len(session) == 0
    message = "The session is unavailable because no secret key was set"
    for write in (
        lambda: session.__setitem__("x", 1),
        lambda: session.__delitem__("x"),
        lambda: session.clear(),
        lambda: session.pop("x"),
        lambda: session.popitem(),
        lambda: session.update({"x": 1}),
        lambda: session.setdefault("x", 1),
    ):
        with pytest.raises(RuntimeError, match=message):
            write()
    with pytest.raises(RuntimeError, match=message):
        session.permanent = True


# -- the interface's configuration helpers ------------------------------------------------------


def test_cookie_helpers_read_config() -> None:
    interface = SessionInterface()
    app = FakeApp(
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN=".example.com",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PARTITIONED=True,
    )
    a = t.cast(t.Any, app)
    assert interface.get_cookie_name(a) == "sid"
    assert interface.get_cookie_domain(a) == ".example.com"
    assert interface.get_cookie_path(a) == "/app"
    assert interface.get_cookie_httponly(a) is False
    assert interface.get_cookie_secure(a) is True
    assert interface.get_cookie_samesite(a) == "Lax"
    assert interface.get_cookie_partitioned(a) is True


def test_cookie_path_falls_back_to_application_root() -> None:
    interface = SessionInterface()
    app = t.cast(t.Any, FakeApp(APPLICATION_ROOT="/root"))
    assert interface.get_cookie_path(app) == "/root"
    assert interface.get_cookie_domain(app) is None


def test_null_session_helpers() -> None:
    interface = SessionInterface()
    null = interface.make_null_session(t.cast(t.Any, FakeApp()))
    assert isinstance(null, NullSession)
    assert interface.is_null_session(null)
    assert not interface.is_null_session(SecureCookieSession())
    assert interface.pickle_based is False


def test_base_interface_not_implemented() -> None:
    interface = SessionInterface()
    app = t.cast(t.Any, FakeApp())
    with pytest.raises(NotImplementedError):
        interface.open_session(app, request_with_cookie(None))
    with pytest.raises(NotImplementedError):
        interface.save_session(app, SecureCookieSession(), Response())


def test_expiration_time() -> None:
    interface = SessionInterface()
    app = t.cast(t.Any, FakeApp(PERMANENT_SESSION_LIFETIME=timedelta(hours=1)))
    session = SecureCookieSession()
    assert interface.get_expiration_time(app, session) is None
    session.permanent = True
    before = datetime.now(UTC)
    expires = interface.get_expiration_time(app, session)
    after = datetime.now(UTC)
    assert expires is not None
    assert expires.tzinfo is not None
    assert before + timedelta(hours=1) <= expires <= after + timedelta(hours=1)


@pytest.mark.parametrize(
    ("modified", "permanent", "refresh", "expected"),
    [
        (True, False, False, True),
        (False, False, True, False),
        (False, True, True, True),
        (False, True, False, False),
    ],
)
def test_should_set_cookie(modified: bool, permanent: bool, refresh: bool, expected: bool) -> None:
    app = t.cast(t.Any, FakeApp(SESSION_REFRESH_EACH_REQUEST=refresh))
    session = SecureCookieSession({"_permanent": permanent})
    session.modified = modified
    assert SessionInterface().should_set_cookie(app, session) is expected


# -- signed cookies -----------------------------------------------------------------------------


def test_signing_serializer_settings(app: FakeApp) -> None:
    interface = SecureCookieSessionInterface()
    assert interface.salt == "cookie-session"
    assert interface.key_derivation == "hmac"
    assert interface.serializer is session_json_serializer
    assert interface.digest_method().name == "sha1"
    signer = interface.get_signing_serializer(app)  # type: ignore[arg-type]
    assert isinstance(signer, URLSafeTimedSerializer)
    app.config["SECRET_KEY_FALLBACKS"] = ["old1", "old2"]
    signer = interface.get_signing_serializer(app)  # type: ignore[arg-type]
    assert signer is not None
    assert signer.secret_keys == [b"old1", b"old2", SECRET.encode()]


def test_no_secret_key() -> None:
    interface = SecureCookieSessionInterface()
    for key in (None, ""):
        app = t.cast(t.Any, FakeApp(secret_key=key))
        assert interface.get_signing_serializer(app) is None
        assert interface.open_session(app, request_with_cookie("x")) is None


def test_open_without_cookie(app: FakeApp) -> None:
    interface = SecureCookieSessionInterface()
    for value in (None, ""):
        session = interface.open_session(app, request_with_cookie(value))  # type: ignore[arg-type]
        assert isinstance(session, SecureCookieSession)
        assert dict(session) == {}
        assert not session.modified


def test_round_trip(app: FakeApp) -> None:
    value = carboy_cookie(app, RICH)
    interface = SecureCookieSessionInterface()
    session = interface.open_session(app, request_with_cookie(value))  # type: ignore[arg-type]
    assert session is not None
    assert dict(session) == RICH
    assert not session.modified
    assert not session.accessed


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v.rsplit(".", 1)[0] + "." + "A" * 27,
        lambda v: "eyJ1c2VyX2lkIjoyfQ" + v[v.index(".") :],
        lambda v: "x" + v,
        lambda v: v.split(".", 1)[1],
        lambda v: "not-a-signed-value",
        lambda v: "....",
        lambda v: "%%%",
    ],
)
def test_tampered_cookie_gives_empty_session(app: FakeApp, tamper: t.Any) -> None:
    value = carboy_cookie(app, {"user_id": 1})
    interface = SecureCookieSessionInterface()
    tampered = tamper(value)
    assert tampered != value
    session = interface.open_session(app, request_with_cookie(tampered))  # type: ignore[arg-type]
    assert isinstance(session, SecureCookieSession)
    assert dict(session) == {}


def test_wrong_key_gives_empty_session(app: FakeApp) -> None:
    value = carboy_cookie(app, {"user_id": 1})
    other = FakeApp(secret_key="another key")
    session = SecureCookieSessionInterface().open_session(
        other,  # type: ignore[arg-type]
        request_with_cookie(value),
    )
    assert session is not None
    assert dict(session) == {}


def _old_cookie(app: FakeApp, data: dict[str, t.Any], age: int) -> str:
    """Sign *data* like the interface does, but stamped *age* seconds in the past."""

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age

    interface = SecureCookieSessionInterface()
    serializer = URLSafeTimedSerializer(
        t.cast(str, app.secret_key),
        salt=interface.salt,
        serializer=interface.serializer,
        signer=PastSigner,
        signer_kwargs={
            "key_derivation": interface.key_derivation,
            "digest_method": interface.digest_method,
        },
    )
    return serializer.dumps(data)


def test_expired_cookie_gives_empty_session(app: FakeApp) -> None:
    interface = SecureCookieSessionInterface()
    value = _old_cookie(app, {"user_id": 1}, age=3600)
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=2)
    fresh = interface.open_session(app, request_with_cookie(value))  # type: ignore[arg-type]
    assert fresh is not None and dict(fresh) == {"user_id": 1}
    app.config["PERMANENT_SESSION_LIFETIME"] = 60  # seconds, as Flask accepts
    expired = interface.open_session(app, request_with_cookie(value))  # type: ignore[arg-type]
    assert expired is not None and dict(expired) == {}


def test_secret_key_fallbacks(app: FakeApp) -> None:
    interface = SecureCookieSessionInterface()
    old_value = carboy_cookie(FakeApp(secret_key="old"), {"v": "old"})
    app.config["SECRET_KEY_FALLBACKS"] = ["old"]
    session = interface.open_session(app, request_with_cookie(old_value))  # type: ignore[arg-type]
    assert session is not None and dict(session) == {"v": "old"}

    # New cookies are signed with the current key, not a fallback.
    new_value = carboy_cookie(app, {"v": "new"})
    current_only = FakeApp()
    session = interface.open_session(current_only, request_with_cookie(new_value))  # type: ignore[arg-type]
    assert session is not None and dict(session) == {"v": "new"}
    old_only = FakeApp(secret_key="old")
    session = interface.open_session(old_only, request_with_cookie(new_value))  # type: ignore[arg-type]
    assert session is not None and dict(session) == {}


# -- interoperability with Flask ----------------------------------------------------------------


def test_flask_cookie_opens_in_carboy(app: FakeApp) -> None:
    value = flask_cookie(RICH)
    session = SecureCookieSessionInterface().open_session(app, request_with_cookie(value))  # type: ignore[arg-type]
    assert session is not None
    assert dict(session) == RICH


def test_carboy_cookie_opens_in_flask(app: FakeApp) -> None:
    value = carboy_cookie(app, RICH)
    reference = flask_app()
    with reference.test_request_context(headers={"Cookie": f"session={value}"}):
        opened = reference.session_interface.open_session(reference, flask.request)
    assert opened is not None
    assert dict(opened) == RICH


def test_payload_bytes_match_flask(app: FakeApp) -> None:
    ours = carboy_cookie(app, RICH)
    theirs = flask_cookie(RICH)
    # The payload segment is deterministic; the timestamp and signature may differ by a second.
    assert ours.split(".")[0] == theirs.split(".")[0]


def test_flask_fallback_key_cookie_opens_in_carboy(app: FakeApp) -> None:
    reference = flask_app()
    reference.secret_key = "previous"
    signer = flask_sessions.SecureCookieSessionInterface().get_signing_serializer(reference)
    assert signer is not None
    value = signer.dumps({"a": 1})
    app.config["SECRET_KEY_FALLBACKS"] = ["previous"]
    session = SecureCookieSessionInterface().open_session(app, request_with_cookie(value))  # type: ignore[arg-type]
    assert session is not None and dict(session) == {"a": 1}


# -- save_session -------------------------------------------------------------------------------


def _save(app: FakeApp, session: SessionMixin) -> Response:
    response = Response()
    SecureCookieSessionInterface().save_session(app, session, response)  # type: ignore[arg-type]
    return response


def test_save_untouched_session_sets_nothing(app: FakeApp) -> None:
    response = _save(app, SecureCookieSession({"a": 1}))
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers


def test_save_read_only_access_adds_vary(app: FakeApp) -> None:
    session = SecureCookieSession({"a": 1})
    _ = session["a"]
    response = _save(app, session)
    assert "Set-Cookie" not in response.headers
    assert response.headers["Vary"] == "Cookie"


def test_save_modified_sets_cookie(app: FakeApp) -> None:
    session = SecureCookieSession()
    session["a"] = 1
    response = _save(app, session)
    header = response.headers["Set-Cookie"]
    assert header.startswith("session=")
    assert "HttpOnly" in header
    assert "Path=/" in header
    assert "Expires" not in header
    assert response.headers["Vary"] == "Cookie"


def test_save_emptied_session_deletes_cookie(app: FakeApp) -> None:
    session = SecureCookieSession({"a": 1})
    session.clear()
    response = _save(app, session)
    header = response.headers["Set-Cookie"]
    assert header.startswith("session=;")
    assert "Max-Age=0" in header
    assert "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in header
    assert response.headers["Vary"] == "Cookie"


def test_save_empty_unmodified_session_sets_nothing(app: FakeApp) -> None:
    response = _save(app, SecureCookieSession())
    assert "Set-Cookie" not in response.headers


def test_save_permanent_session_sets_expiry(app: FakeApp) -> None:
    session = SecureCookieSession({"_permanent": True, "a": 1})
    response = _save(app, session)
    assert "Expires=" in response.headers["Set-Cookie"]
    assert "Max-Age=" not in response.headers["Set-Cookie"]

    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    response = _save(app, SecureCookieSession({"_permanent": True, "a": 1}))
    assert "Set-Cookie" not in response.headers


def _strip_value_and_dates(header: str) -> list[str]:
    parts = [p.strip() for p in header.split(";")]
    return sorted(p for p in parts[1:] if not p.startswith(("Expires=", "Max-Age=")))


COOKIE_CONFIG = {
    "SESSION_COOKIE_NAME": "sid",
    "SESSION_COOKIE_DOMAIN": "example.com",
    "SESSION_COOKIE_PATH": "/app",
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_PARTITIONED": True,
    "SESSION_COOKIE_HTTPONLY": False,
}


@pytest.mark.parametrize("permanent", [False, True])
def test_set_cookie_attributes_match_flask(app: FakeApp, permanent: bool) -> None:
    app.config.update(COOKIE_CONFIG)
    ours = SecureCookieSession({"_permanent": permanent})
    ours["a"] = 1
    our_response = _save(app, ours)

    reference = flask_app(**COOKIE_CONFIG)
    theirs = flask_sessions.SecureCookieSession({"_permanent": permanent})
    theirs["a"] = 1
    their_response = Response()
    with reference.app_context():
        reference.session_interface.save_session(reference, theirs, their_response)  # type: ignore[arg-type]

    our_header = our_response.headers["Set-Cookie"]
    their_header = their_response.headers["Set-Cookie"]
    assert our_header.startswith("sid=")
    assert _strip_value_and_dates(our_header) == _strip_value_and_dates(their_header)
    assert ("Expires=" in our_header) is ("Expires=" in their_header) is permanent
    assert our_response.headers["Vary"] == their_response.headers["Vary"]


def test_delete_cookie_attributes_match_flask(app: FakeApp) -> None:
    app.config.update(COOKIE_CONFIG)
    ours = SecureCookieSession({"a": 1})
    del ours["a"]
    our_response = _save(app, ours)

    reference = flask_app(**COOKIE_CONFIG)
    theirs = flask_sessions.SecureCookieSession({"a": 1})
    del theirs["a"]
    their_response = Response()
    reference.session_interface.save_session(reference, theirs, their_response)  # type: ignore[arg-type]
    assert our_response.headers["Set-Cookie"] == their_response.headers["Set-Cookie"]
    assert our_response.headers["Vary"] == their_response.headers["Vary"]


def test_custom_session_class(app: FakeApp) -> None:
    class MySession(SecureCookieSession):
        pass

    class MyInterface(SecureCookieSessionInterface):
        session_class = MySession

    value = carboy_cookie(app, {"a": 1})
    session = MyInterface().open_session(app, request_with_cookie(value))  # type: ignore[arg-type]
    assert type(session) is MySession
    assert MyInterface().open_session(app, request_with_cookie("bad")).__class__ is MySession  # type: ignore[arg-type]
