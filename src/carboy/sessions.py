"""Sessions: the session object types and the interface that loads and stores them.

Flask-compatible: ``flask.sessions``. The default :class:`SecureCookieSessionInterface` keeps the
whole session in a cookie signed with :mod:`itsdangerous` (readable by the client, not
modifiable). Its cookies are interchangeable with Flask's for the same ``SECRET_KEY``.
"""

from __future__ import annotations

import collections.abc as cabc
import hashlib
import logging
import typing as t
import weakref
from datetime import UTC, datetime

from itsdangerous import BadData, BadSignature, Signer, TimestampSigner, URLSafeTimedSerializer
from werkzeug.datastructures import CallbackDict

from .json.tag import TaggedJSONSerializer

if t.TYPE_CHECKING:
    from _typeshed import ReadableBuffer
    from werkzeug.sansio.request import Request
    from werkzeug.sansio.response import Response

    from .app import Carboy

__all__ = [
    "NullSession",
    "SecureCookieSession",
    "SecureCookieSessionInterface",
    "SessionInterface",
    "SessionMixin",
    "session_json_serializer",
]


class SessionMixin(cabc.MutableMapping[str, t.Any]):
    """Session attributes added on top of a mutable mapping.

    Flask-compatible: ``flask.sessions.SessionMixin``. :attr:`modified` is ``True`` by
    default, because a plain mapping cannot track changes; :attr:`accessed` is set by the
    request context whenever the session is reached through it (Flask 3.1.3).
    """

    @property
    def permanent(self) -> bool:
        """Whether the session outlives the browser session (stored under ``"_permanent"``).

        A permanent session's cookie expires after ``app.permanent_session_lifetime``.
        """
        return bool(self.get("_permanent", False))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self["_permanent"] = bool(value)

    #: Whether the session was created on this request. Not every backend can tell; the
    #: mixin always reports ``False``.
    new = False
    #: Whether the session data changed. Mutating a nested value (a list in the session,
    #: say) is not detected; set this to ``True`` by hand then.
    modified = True
    #: Whether the session was read or written; adds ``Vary: Cookie`` to the response. The
    #: request context sets it on every access through :data:`carboy.session` or
    #: ``RequestContext.session``, however the session is then inspected.
    #:
    #: .. versionchanged:: 0.1
    #:     ``False`` by default and set by the request context, as in Flask 3.1.3.
    accessed = False


class SecureCookieSession(CallbackDict[str, t.Any], SessionMixin):
    """The session dict of :class:`SecureCookieSessionInterface`; tracks writes and reads.

    Flask-compatible: ``flask.sessions.SecureCookieSession``. Any write sets both
    :attr:`modified` and :attr:`accessed`; ``[]``, ``get`` and ``setdefault`` set
    :attr:`accessed`.

    :param initial: optional mapping or iterable of pairs with the initial data.
    """

    #: Set when the data changes; only top-level changes are seen.
    modified = False
    #: Set when the data is read or changed.
    accessed = False

    def __init__(
        self,
        initial: cabc.Mapping[str, t.Any] | cabc.Iterable[tuple[str, t.Any]] | None = None,
    ) -> None:
        def mark_changed(session: SecureCookieSession) -> None:
            session.modified = True
            session.accessed = True

        super().__init__(initial, mark_changed)

    def __getitem__(self, key: str) -> t.Any:
        self.accessed = True
        return super().__getitem__(key)

    def get(self, key: str, default: t.Any = None) -> t.Any:
        self.accessed = True
        return super().get(key, default)

    def setdefault(self, key: str, default: t.Any = None) -> t.Any:
        self.accessed = True
        return super().setdefault(key, default)


class NullSession(SecureCookieSession):
    """An empty, read-only session used when sessions are unavailable (no secret key).

    Flask-compatible: ``flask.sessions.NullSession``. Reading works and finds nothing; every
    write method raises.

    :raises RuntimeError: from any write, telling the developer to set a secret key.
    """

    def _unavailable(self, *args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise RuntimeError(
            "The session is unavailable because no secret key was set.  Set the secret_key on"
            " the application to something unique and secret."
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _unavailable


class SessionInterface:
    """Base class describing how the app opens and saves sessions.

    Flask-compatible: ``flask.sessions.SessionInterface``. Subclasses implement
    :meth:`open_session` and :meth:`save_session`; assign an instance to
    ``app.session_interface``. The ``get_cookie_*`` helpers read the app's ``SESSION_COOKIE_*``
    configuration.
    """

    #: The class :meth:`make_null_session` instantiates.
    null_session_class: type[SessionMixin] = NullSession
    #: Whether the backend pickles session data (informational, for extensions).
    pickle_based = False

    def make_null_session(self, app: Carboy) -> SessionMixin:
        """Return the session used when :meth:`open_session` returned ``None``."""
        return self.null_session_class()

    def is_null_session(self, obj: object) -> bool:
        """Return whether *obj* is a null session (an instance of :attr:`null_session_class`)."""
        return isinstance(obj, self.null_session_class)

    def get_cookie_name(self, app: Carboy) -> str:
        """``SESSION_COOKIE_NAME``: the name of the session cookie."""
        return t.cast(str, app.config["SESSION_COOKIE_NAME"])

    def get_cookie_domain(self, app: Carboy) -> str | None:
        """``SESSION_COOKIE_DOMAIN``: the cookie's ``Domain``; ``None`` for the current host."""
        return t.cast("str | None", app.config["SESSION_COOKIE_DOMAIN"])

    def get_cookie_path(self, app: Carboy) -> str:
        """``SESSION_COOKIE_PATH``, falling back to ``APPLICATION_ROOT``, as the cookie's
        ``Path``.
        """
        return t.cast(str, app.config["SESSION_COOKIE_PATH"] or app.config["APPLICATION_ROOT"])

    def get_cookie_httponly(self, app: Carboy) -> bool:
        """``SESSION_COOKIE_HTTPONLY``: hide the cookie from JavaScript."""
        return t.cast(bool, app.config["SESSION_COOKIE_HTTPONLY"])

    def get_cookie_secure(self, app: Carboy) -> bool:
        """``SESSION_COOKIE_SECURE``: only send the cookie over HTTPS."""
        return t.cast(bool, app.config["SESSION_COOKIE_SECURE"])

    def get_cookie_samesite(self, app: Carboy) -> str | None:
        """``SESSION_COOKIE_SAMESITE``: ``"Strict"``, ``"Lax"``, ``"None"`` or ``None``."""
        return t.cast("str | None", app.config["SESSION_COOKIE_SAMESITE"])

    def get_cookie_partitioned(self, app: Carboy) -> bool:
        """``SESSION_COOKIE_PARTITIONED``: set the CHIPS ``Partitioned`` attribute."""
        return t.cast(bool, app.config["SESSION_COOKIE_PARTITIONED"])

    def _cookie_attributes(self, app: Carboy) -> dict[str, t.Any]:
        """The session cookie's attributes from the ``get_cookie_*`` methods, as keyword
        arguments of ``set_cookie`` and ``delete_cookie``."""
        return {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app),
            "partitioned": self.get_cookie_partitioned(app),
            "samesite": self.get_cookie_samesite(app),
            "httponly": self.get_cookie_httponly(app),
        }

    def get_expiration_time(self, app: Carboy, session: SessionMixin) -> datetime | None:
        """Return when the cookie expires: now (UTC) plus ``app.permanent_session_lifetime``
        for a permanent session, ``None`` (a browser-session cookie) otherwise.
        """
        if not session.permanent:
            return None
        return datetime.now(UTC) + app.permanent_session_lifetime

    def should_set_cookie(self, app: Carboy, session: SessionMixin) -> bool:
        """Return whether :meth:`save_session` should send the cookie.

        True when the session was modified, or when it is permanent and
        ``SESSION_REFRESH_EACH_REQUEST`` is on (to push the expiry forward).
        """
        if session.modified:
            return True
        return session.permanent and bool(app.config["SESSION_REFRESH_EACH_REQUEST"])

    def open_session(self, app: Carboy, request: Request) -> SessionMixin | None:
        """Load the session for *request* at the start of the request.

        Return ``None`` when sessions cannot be used; the app then uses
        :meth:`make_null_session`.

        :raises NotImplementedError: in the base class.
        """
        raise NotImplementedError

    def save_session(self, app: Carboy, session: SessionMixin, response: Response) -> None:
        """Persist *session* at the end of the request, usually by setting a cookie on
        *response*. Not called for null sessions.

        :raises NotImplementedError: in the base class.
        """
        raise NotImplementedError


#: The serializer :class:`SecureCookieSessionInterface` uses for session data.
session_json_serializer = TaggedJSONSerializer()


def _lazy_sha1(string: ReadableBuffer = b"") -> t.Any:
    # Looked up per call so that environments that patch or restrict hashlib at runtime
    # (FIPS builds) only fail when signing actually happens.
    return hashlib.sha1(string)


class _KeyKeepingSigner(TimestampSigner):
    """itsdangerous's :class:`~itsdangerous.TimestampSigner`, deriving each signing key once.

    itsdangerous derives the key (for ``"hmac"``, an HMAC of the salt under the secret key) on
    every sign and every verify; it depends only on the secret key and this signer's fixed
    salt, derivation and digest, so the first answer for each secret key is kept.
    """

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[str | bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self._derived.get(secret_key)
        if key is None:
            key = self._derived[secret_key] = super().derive_key(secret_key)
        return key


class _SessionSerializer(URLSafeTimedSerializer):
    """The :class:`~itsdangerous.URLSafeTimedSerializer` of the cookie session: it keeps the
    :class:`_KeyKeepingSigner` of its own salt (itsdangerous makes a new signer, and derives
    its key again, for every ``dumps`` and ``loads``). A signer for another salt, passed to
    ``dumps`` or ``loads``, is made each time, so that per-call salts keep nothing. Its
    signatures are itsdangerous's, byte for byte."""

    default_signer = _KeyKeepingSigner
    _signer: Signer | None = None

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        if salt is not None and (salt.encode() if isinstance(salt, str) else salt) != self.salt:
            return super().make_signer(salt)
        signer = self._signer
        if signer is None:
            signer = self._signer = super().make_signer(self.salt)
        return signer


#: The apps that have logged a malformed session payload at WARNING (the interface instance
#: is shared: Flask's default is one object on the class).
_logged_malformed: weakref.WeakSet[Carboy] = weakref.WeakSet()


class SecureCookieSessionInterface(SessionInterface):
    """Store the session in a signed cookie, with :mod:`itsdangerous`.

    Flask-compatible: ``flask.sessions.SecureCookieSessionInterface``. The cookie is signed with
    ``SECRET_KEY``; ``SECRET_KEY_FALLBACKS`` are also accepted when reading, to rotate keys.
    The signature carries a timestamp, and cookies older than ``app.permanent_session_lifetime``
    are rejected.
    """

    #: Salt mixed into the signing key, so these signatures are not valid elsewhere.
    salt = "cookie-session"
    #: Hash function for the signature: SHA-1, as Flask.
    digest_method = staticmethod(_lazy_sha1)
    #: itsdangerous key derivation scheme.
    key_derivation = "hmac"
    #: Payload serializer; needs ``dumps`` and ``loads``.
    serializer: t.Any = session_json_serializer
    #: Session class returned by :meth:`open_session`.
    session_class: type[SecureCookieSession] = SecureCookieSession
    # The last serializer made by this class's get_signing_serializer, and what it was made
    # from (see _serializer).
    _made: tuple[tuple[t.Any, ...], URLSafeTimedSerializer | None] | None = None

    def _serializer(self, app: Carboy) -> URLSafeTimedSerializer | None:
        """:meth:`get_signing_serializer`'s answer, made again only when what it is made from
        (the keys, salt, serializer, key derivation, digest) changed since the last call;
        a subclass's own :meth:`get_signing_serializer` is called every time."""
        # PERF: one serializer for every request instead of two new ones per session request
        # (itsdangerous checks its payload serializer by dumping {} on each): the benchmark's
        # session read + write, in process: 129 -> 120 µs (WSGI), 144 -> 133 µs (ASGI).
        if (
            type(self).get_signing_serializer
            is not SecureCookieSessionInterface.get_signing_serializer
            or "get_signing_serializer" in self.__dict__
        ):
            return self.get_signing_serializer(app)
        fallbacks = app.config["SECRET_KEY_FALLBACKS"]
        made_from = (
            app.secret_key,
            tuple(fallbacks) if fallbacks else (),
            self.salt,
            self.serializer,
            self.key_derivation,
            self.digest_method,
        )
        made = self._made
        if made is None or made[0] != made_from:
            made = self._made = (made_from, self.get_signing_serializer(app))
        return made[1]

    def get_signing_serializer(self, app: Carboy) -> URLSafeTimedSerializer | None:
        """Return the itsdangerous serializer for *app*, or ``None`` without a secret key.

        The current ``SECRET_KEY`` signs; it and every key in ``SECRET_KEY_FALLBACKS`` verify.
        """
        if not app.secret_key:
            return None
        keys: list[str | bytes] = list(app.config["SECRET_KEY_FALLBACKS"] or ())
        # itsdangerous signs with the last key and verifies with all of them.
        keys.append(app.secret_key)
        # PERF: a serializer that keeps its signer and derived keys: two signers and two key
        # HMACs fewer per session read + write (in process: 118 -> 110 µs WSGI, 132 -> 120
        # µs ASGI).
        return _SessionSerializer(
            keys,  # type: ignore[arg-type]
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )

    def open_session(self, app: Carboy, request: Request) -> SecureCookieSession | None:
        """Load the session from the request's cookie.

        A missing, tampered, wrongly signed or expired cookie gives a new empty session; no
        exception is raised for bad cookies. So does a validly signed payload that does not
        load (bad base64, zlib or tags, or JSON that is not a mapping), where Flask raises
        (a 500); it is logged (see :meth:`_log_malformed`). Returns ``None`` when no secret
        key is set.
        """
        signer = self._serializer(app)
        if signer is None:
            return None
        raw = request.cookies.get(self.get_cookie_name(app))
        if not raw:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            data = signer.loads(raw, max_age=max_age)
        except BadSignature:
            return self.session_class()
        except BadData as e:
            # Validly signed, but the payload does not load (bad base64, zlib or tags).
            self._log_malformed(app, e)
            return self.session_class()
        try:
            return self.session_class(data)
        except (TypeError, ValueError) as e:  # signed JSON that is not a mapping
            self._log_malformed(app, e)
            return self.session_class()

    def _log_malformed(self, app: Carboy, error: Exception) -> None:
        """Log a validly signed session payload that does not load: at ``WARNING`` the first
        time for each app, so that a flood of them cannot flood the log, at ``DEBUG`` after."""
        level = logging.DEBUG if app in _logged_malformed else logging.WARNING
        _logged_malformed.add(app)
        app.logger.log(
            level,
            "A validly signed session cookie did not load (%s: %s); the request gets an empty"
            " session.%s",
            type(error).__name__,
            error,
            " Further ones are logged at DEBUG." if level == logging.WARNING else "",
        )

    def save_session(self, app: Carboy, session: SessionMixin, response: Response) -> None:
        """Write, refresh or delete the session cookie on *response*.

        Adds ``Vary: Cookie`` whenever the session was accessed. An emptied, modified session
        deletes the cookie; otherwise the cookie is set when :meth:`should_set_cookie` says so,
        with every ``SESSION_COOKIE_*`` attribute.

        :raises RuntimeError: the session has data but the app has no secret key.
        """
        name = self.get_cookie_name(app)
        cookie_attrs = self._cookie_attributes(app)

        if session.accessed:
            response.vary.add("Cookie")

        if not session:
            if session.modified:
                response.delete_cookie(name, **cookie_attrs)
                response.vary.add("Cookie")
            return

        if not self.should_set_cookie(app, session):
            return

        signer = self._serializer(app)
        if signer is None:
            raise RuntimeError(
                "The session cannot be saved because no secret key was set. Set the"
                " secret_key on the application to something unique and secret."
            )
        value = signer.dumps(dict(session))
        response.set_cookie(
            name, value, expires=self.get_expiration_time(app, session), **cookie_attrs
        )
        response.vary.add("Cookie")
