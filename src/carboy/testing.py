"""Test helpers: an environ builder that knows the app, a test client and a CLI runner.

Flask-compatible: ``flask.testing``. :class:`CarboyClient` is what :meth:`Carboy.test_client`
returns; :class:`CarboyCliRunner` is what :meth:`Carboy.test_cli_runner` returns.
"""

from __future__ import annotations

import importlib.metadata
import typing as t
from contextlib import ExitStack, contextmanager
from copy import copy
from types import TracebackType
from urllib.parse import urlsplit

import werkzeug.test
from click.testing import CliRunner, Result
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Request as BaseRequest

from .cli import ScriptInfo

if t.TYPE_CHECKING:
    from click import Command
    from werkzeug.test import TestResponse

    from .app import Carboy
    from .sessions import SessionMixin
    from .websocket_testing import WebsocketTestSession

__all__ = [
    "ASGIClient",
    "CarboyCliRunner",
    "CarboyClient",
    "EnvironBuilder",
    "FlaskCliRunner",
    "FlaskClient",
]


class EnvironBuilder(werkzeug.test.EnvironBuilder):
    """A :class:`werkzeug.test.EnvironBuilder` whose defaults come from the app's config.

    Flask-compatible: ``flask.testing.EnvironBuilder``. Without *base_url*, the base URL is
    built from ``SERVER_NAME`` (``localhost`` when unset), ``APPLICATION_ROOT`` and
    ``PREFERRED_URL_SCHEME``; JSON bodies (``json=``) are serialized with ``app.json``.

    :param app: the :class:`~carboy.Carboy` application the request is for.
    :param path: the request path; may carry a query string, and a scheme and host, which
        then override the config values.
    :param base_url: the full base URL (scheme, host, script root); excludes *subdomain* and
        *url_scheme*.
    :param subdomain: a subdomain prefixed to ``SERVER_NAME``.
    :param url_scheme: the scheme to use instead of ``PREFERRED_URL_SCHEME``.
    :param args: further positional arguments of :class:`werkzeug.test.EnvironBuilder`.
    :param kwargs: further keyword arguments of :class:`werkzeug.test.EnvironBuilder`
        (``method``, ``data``, ``json``, ``headers``, ``query_string``, ...).
    :raises ValueError: when *base_url* is combined with *subdomain* or *url_scheme*.
    """

    def __init__(
        self,
        app: Carboy,
        path: str = "/",
        base_url: str | None = None,
        subdomain: str | None = None,
        url_scheme: str | None = None,
        *args: t.Any,
        **kwargs: t.Any,
    ) -> None:
        if base_url is not None and (subdomain or url_scheme):
            raise ValueError("'base_url' cannot be combined with 'subdomain' or 'url_scheme'.")
        if base_url is None:
            config = app.config
            host = config.get("SERVER_NAME") or "localhost"
            if subdomain:
                host = f"{subdomain}.{host}"
            root = (config.get("APPLICATION_ROOT") or "/").lstrip("/")
            scheme = url_scheme or config.get("PREFERRED_URL_SCHEME") or "http"
            parts = urlsplit(path)
            base_url = f"{parts.scheme or scheme}://{parts.netloc or host}/{root}"
            query = parts.query
            path = parts.path
            if query:
                # The query string stays on the path; werkzeug splits it off again.
                path = f"{path}?{query}"
        self.app = app
        super().__init__(path, base_url, *args, **kwargs)

    def json_dumps(self, obj: t.Any, **kwargs: t.Any) -> str:
        """Serialize *obj* for a ``json=`` body with the app's JSON provider.

        :param obj: the data to serialize.
        :param kwargs: passed to ``app.json.dumps``.
        :raises TypeError: when *obj* is not serializable.
        """
        return self.app.json.dumps(obj, **kwargs)


def _werkzeug_version() -> str:
    try:
        return importlib.metadata.version("werkzeug")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - always installed
        return "unknown"


_WERKZEUG_VERSION = _werkzeug_version()


class CarboyClient(werkzeug.test.Client):
    """A :class:`werkzeug.test.Client` for a :class:`~carboy.Carboy` app.

    Flask-compatible: ``flask.testing.FlaskClient``. Requests are built with
    :class:`EnvironBuilder` (so they follow the app's config); responses read JSON with the
    app's provider. Inside ``with client:``, the contexts of the latest request stay pushed
    until the next request or the end of the block, so ``request``, ``session`` and ``g``
    can be inspected after a request.

    :param args: positional arguments of :class:`werkzeug.test.Client`; the first is the app.
    :param kwargs: keyword arguments of :class:`werkzeug.test.Client` (``use_cookies``, ...).
    """

    application: Carboy

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        #: Whether requests keep their contexts pushed (true inside ``with client:``).
        self.preserve_context = False
        self._new_contexts: list[t.ContextManager[t.Any]] = []
        self._context_stack = ExitStack()
        #: WSGI environ values applied to every request made by this client.
        self.environ_base: dict[str, t.Any] = {
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_USER_AGENT": f"Werkzeug/{_WERKZEUG_VERSION}",
        }

    @contextmanager
    def session_transaction(self, *args: t.Any, **kwargs: t.Any) -> t.Iterator[SessionMixin]:
        """Open the session the client's cookies give, yield it for changes, then store it.

        Flask-compatible: ``flask.testing.FlaskClient.session_transaction``. The session is
        opened through ``app.session_interface`` in a test request context built from *args*
        and *kwargs*; when the block ends it is saved to a response whose ``Set-Cookie``
        headers go into this client's cookies.

        :param args: positional arguments of :meth:`Carboy.test_request_context`.
        :param kwargs: keyword arguments of :meth:`Carboy.test_request_context`.
        :raises TypeError: when the client was made with ``use_cookies=False``.
        :raises RuntimeError: when the session interface opens no session.
        """
        if self._cookies is None:
            raise TypeError("Cookies are disabled. Create a client with 'use_cookies=True'.")
        app = self.application
        interface = app.session_interface
        ctx = app.test_request_context(*args, **kwargs)
        self._add_cookies_to_wsgi(ctx.request.environ)
        with ctx:
            sess = interface.open_session(app, ctx.request)
        if sess is None:
            raise RuntimeError("The session backend did not open a session.")
        yield sess
        if interface.is_null_session(sess):
            return
        response = app.response_class()
        with ctx:
            interface.save_session(app, sess, response)
        self._update_cookies_from_response(
            ctx.request.host.partition(":")[0],
            ctx.request.path,
            response.headers.getlist("Set-Cookie"),
        )

    def websocket(
        self,
        path: str,
        *,
        subprotocols: t.Sequence[str] | None = None,
        headers: t.Mapping[str, str] | t.Iterable[tuple[str, str]] | None = None,
        query_string: str | t.Mapping[str, t.Any] | None = None,
    ) -> WebsocketTestSession:
        """A WebSocket connection to *path*, served through the app's ASGI interface.

        Use it as a context manager; the handshake is made on entering::

            with client.websocket("/ws/echo") as ws:
                ws.send("hi")
                assert ws.receive() == "hi"

        The handshake request is built as :meth:`open` builds requests (the app's config, this
        client's ``environ_base`` and cookies, so ``session`` works in the handler).

        :param path: the URL path; may carry a query string.
        :param subprotocols: the subprotocols (list of str) to offer, in order of preference.
        :param headers: extra request headers (mapping or ``(name, value)`` pairs).
        :param query_string: the query string, as a string or a mapping of arguments.
        :returns: a :class:`~carboy.websocket_testing.WebsocketTestSession`; entering it
            raises :class:`~carboy.websocket_testing.WebsocketRejected` when the app refuses.

        .. versionadded:: 0.1
        """
        from .asgi_testing import environ_scope
        from .websocket_testing import WebsocketTestSession

        handshake = Headers(
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGVzdC1jbGllbnQta2V5IQ==",
            }
        )
        if subprotocols:
            handshake["Sec-WebSocket-Protocol"] = ", ".join(subprotocols)
        if headers is not None:
            handshake.update(headers)
        builder = EnvironBuilder(
            self.application,
            path,
            headers=handshake,
            query_string=query_string,
            environ_base=self._copy_environ({}),
        )
        try:
            environ = builder.get_environ()
        finally:
            builder.close()
        self._add_cookies_to_wsgi(environ)
        scope = environ_scope(environ, "websocket")
        scope["subprotocols"] = list(subprotocols or ())
        return WebsocketTestSession(self.application, scope)

    def _copy_environ(self, other: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
        environ = {**self.environ_base, **other}
        if self.preserve_context:
            environ["werkzeug.debug.preserve_context"] = self._new_contexts.append
        return environ

    def _request_from_builder_args(
        self, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
    ) -> BaseRequest:
        kwargs["environ_base"] = self._copy_environ(kwargs.get("environ_base") or {})
        builder = EnvironBuilder(self.application, *args, **kwargs)
        try:
            return builder.get_request()
        finally:
            builder.close()

    def open(
        self,
        *args: t.Any,
        buffered: bool = False,
        follow_redirects: bool = False,
        **kwargs: t.Any,
    ) -> TestResponse:
        """Make a request to the app and return its response.

        Flask-compatible: ``flask.testing.FlaskClient.open``. The helpers ``get``, ``post``,
        ``put``, ``patch``, ``delete``, ``head``, ``options`` and ``trace`` call this.

        :param args: :class:`EnvironBuilder` arguments (path first), or a single
            :class:`werkzeug.test.EnvironBuilder`, WSGI environ ``dict`` or request object.
        :param buffered: read the whole response body before returning.
        :param follow_redirects: follow redirects; ``response.history`` holds the earlier ones.
        :param kwargs: :class:`EnvironBuilder` keyword arguments (``method``, ``data``,
            ``json``, ``headers``, ``query_string``, ...).
        :raises werkzeug.test.ClientRedirectError: for a redirect loop.
        :raises Exception: whatever the app propagates (as it does in testing mode).
        """
        first = args[0] if args else None
        request: BaseRequest
        if isinstance(first, werkzeug.test.EnvironBuilder):
            builder = copy(first)
            builder.environ_base = self._copy_environ(builder.environ_base or {})
            request = builder.get_request()
        elif isinstance(first, dict):
            builder = EnvironBuilder.from_environ(
                first, app=self.application, environ_base=self._copy_environ({})
            )
            request = builder.get_request()
        elif isinstance(first, BaseRequest):
            request = copy(first)
            request.environ = self._copy_environ(request.environ)
        else:
            request = self._request_from_builder_args(args, kwargs)

        # A new request replaces the contexts kept from the previous one (and, when following
        # redirects, those handed over by the earlier hops).
        self._context_stack.close()
        self._new_contexts.clear()
        try:
            response = super().open(request, buffered=buffered, follow_redirects=follow_redirects)
        except BaseException:
            # A failed request's contexts are not kept (nor pushed by a later request).
            self._new_contexts.clear()
            raise
        response.json_module = self.application.json  # type: ignore[assignment]

        # Re-push the contexts the app handed over while finishing this request.
        while self._new_contexts:
            self._context_stack.enter_context(self._new_contexts.pop(0))
        return response

    def __enter__(self) -> CarboyClient:
        if self.preserve_context:
            raise RuntimeError("Cannot nest client invocations")
        self.preserve_context = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.preserve_context = False
        self._context_stack.close()


class ASGIClient(CarboyClient):
    """A :class:`CarboyClient` whose requests go through the app's ASGI interface.

    Same API as the WSGI client; use it to test the ASGI path in process:
    ``app.test_client_class = ASGIClient``. Each request runs ``await app(scope, receive,
    send)`` to completion on the calling thread's event loop, so streamed bodies are read in
    full before the response is returned.

    .. versionadded:: 0.1
    """

    def run_wsgi_app(
        self, environ: dict[str, t.Any], buffered: bool = False
    ) -> tuple[t.Iterable[bytes], str, Headers]:
        from werkzeug.sansio.utils import get_current_url

        from .asgi_testing import ASGIDriver

        # Werkzeug's Client.run_wsgi_app, with the app's ASGI side in place of its WSGI side.
        self._add_cookies_to_wsgi(environ)
        rv = werkzeug.test.run_wsgi_app(ASGIDriver(self.application), environ, buffered)
        url = urlsplit(
            get_current_url(
                environ["wsgi.url_scheme"],
                environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "localhost"),
                environ.get("SCRIPT_NAME", ""),
                environ.get("PATH_INFO", ""),
            )
        )
        self._update_cookies_from_response(
            url.hostname or "localhost", url.path, rv[2].getlist("Set-Cookie")
        )
        return rv


class CarboyCliRunner(CliRunner):
    """A :class:`click.testing.CliRunner` that runs the app's CLI commands in isolation.

    Flask-compatible: ``flask.testing.FlaskCliRunner``.

    :param app: the :class:`~carboy.Carboy` application whose commands are run.
    :param kwargs: keyword arguments of :class:`click.testing.CliRunner`.
    """

    def __init__(self, app: Carboy, **kwargs: t.Any) -> None:
        self.app = app
        super().__init__(**kwargs)

    def invoke(  # type: ignore[override]
        self, cli: Command | None = None, args: t.Any = None, **kwargs: t.Any
    ) -> Result:
        """Run a command and capture its output and exit code.

        Flask-compatible: ``flask.testing.FlaskCliRunner.invoke``.

        :param cli: the command to run; ``app.cli`` by default.
        :param args: the command line: a string or a list of strings.
        :param kwargs: passed to :meth:`click.testing.CliRunner.invoke`; ``obj`` defaults to a
            :class:`~carboy.cli.ScriptInfo` that loads this app.
        :returns: the :class:`click.testing.Result`.
        """
        if cli is None:
            cli = self.app.cli
        if "obj" not in kwargs:
            app = self.app
            kwargs["obj"] = ScriptInfo(create_app=lambda: app)
        return super().invoke(cli, args, **kwargs)


#: Flask's name for :class:`CarboyClient`.
FlaskClient = CarboyClient
#: Flask's name for :class:`CarboyCliRunner`.
FlaskCliRunner = CarboyCliRunner
