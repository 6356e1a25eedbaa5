"""Request and response classes: Werkzeug's, plus what Flask adds.

Flask-compatible: ``flask.wrappers``. Both subclass Werkzeug's wrappers, so ``isinstance`` checks
against ``werkzeug.wrappers.Request``/``Response`` in extensions hold.
"""

from __future__ import annotations

import asyncio
import io
import typing as t
from urllib.parse import parse_qsl

from werkzeug import urls as _urls  # noqa: F401 (registers the error handler _QUOTE names)
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, HTTPException, NotFound, RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wrappers import Request as _WerkzeugRequest
from werkzeug.wrappers import Response as _WerkzeugResponse
from werkzeug.wsgi import LimitedStream, get_content_length

from . import json
from .globals import _cv_app_get

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from werkzeug.routing import Rule


def _config(key: str, default: t.Any) -> t.Any:
    ctx = _cv_app_get(None)
    return default if ctx is None else ctx.app.config[key]


class Request(_WerkzeugRequest):
    """The request object behind :data:`carboy.request`.

    Flask-compatible: ``flask.Request``. Size limits come from the app's config
    (``MAX_CONTENT_LENGTH``, ``MAX_FORM_MEMORY_SIZE``, ``MAX_FORM_PARTS``) unless set on the
    instance; exceeding them raises :class:`~werkzeug.exceptions.RequestEntityTooLarge` (413).
    """

    #: The JSON module used by :meth:`get_json`; the app's provider when an app is active.
    json_module: t.Any = json

    #: The rule that matched, or ``None`` before matching or when matching failed.
    url_rule: Rule | None = None
    #: The matched view arguments, or ``None`` when matching failed.
    view_args: dict[str, t.Any] | None = None
    #: The routing error (404, 405, redirect) kept until the view would run.
    routing_exception: HTTPException | None = None

    _max_content_length: int | None = None
    _max_form_memory_size: int | None = None
    _max_form_parts: int | None = None

    @property
    def max_content_length(self) -> int | None:
        """Maximum body size in bytes: the instance value, else ``MAX_CONTENT_LENGTH``."""
        if self._max_content_length is not None:
            return self._max_content_length
        return t.cast("int | None", _config("MAX_CONTENT_LENGTH", None))

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value

    @property
    def max_form_memory_size(self) -> int | None:
        """Maximum size in bytes of one non-file form field: ``MAX_FORM_MEMORY_SIZE``."""
        if self._max_form_memory_size is not None:
            return self._max_form_memory_size
        return t.cast("int | None", _config("MAX_FORM_MEMORY_SIZE", 500_000))

    @max_form_memory_size.setter
    def max_form_memory_size(self, value: int | None) -> None:
        self._max_form_memory_size = value

    @property  # type: ignore[override]
    def max_form_parts(self) -> int | None:
        """Maximum number of multipart parts: ``MAX_FORM_PARTS``."""
        if self._max_form_parts is not None:
            return self._max_form_parts
        return t.cast("int | None", _config("MAX_FORM_PARTS", 1_000))

    @max_form_parts.setter
    def max_form_parts(self, value: int | None) -> None:
        self._max_form_parts = value

    # Werkzeug decodes the query string strictly before parsing it, so raw bytes that are
    # not UTF-8 (a lax server passes ``?a=\xff`` on) raise UnicodeDecodeError, a 500. Here
    # they stay percent-encoded, the same value Werkzeug gives for ``?a=%ff``.
    @cached_property
    def args(self) -> MultiDict[str, str]:
        """The parsed query string (a :attr:`parameter_storage_class`, by default an
        :class:`~werkzeug.datastructures.ImmutableMultiDict`).

        Flask-compatible: ``flask.Request.args``. Bytes that are not UTF-8, raw or
        percent-encoded, stay percent-encoded (``?a=\\xff`` and ``?a=%ff`` both give
        ``"%FF"``); Flask answers the raw form with a 500.
        """
        return self.parameter_storage_class(
            parse_qsl(_query_text(self.query_string), keep_blank_values=True, errors=_QUOTE)
        )

    @cached_property
    def full_path(self) -> str:
        """The path and the query string (``"/a?b=c"``), the query's bytes that are not UTF-8
        percent-encoded. Flask-compatible: ``flask.Request.full_path``."""
        return f"{self.path}?{_query_text(self.query_string)}"

    @property
    def endpoint(self) -> str | None:
        """The endpoint of the matched rule, or ``None``."""
        rule = self.url_rule
        return rule.endpoint if rule is not None else None

    @property
    def blueprint(self) -> str | None:
        """The dotted name of the blueprint that owns the endpoint, or ``None``."""
        endpoint = self.endpoint
        if endpoint is not None and "." in endpoint:
            return endpoint.rpartition(".")[0]
        return None

    @property
    def blueprints(self) -> list[str]:
        """The blueprint and its parents, innermost first (``["a.b", "a"]``), or ``[]``."""
        name = self.blueprint
        if name is None:
            return []
        return split_blueprint_path(name)

    @cached_property
    def stream(self) -> t.IO[bytes]:
        """The body as a read-once stream, limited to ``Content-Length`` and
        :attr:`max_content_length`.

        Flask-compatible: ``flask.Request.stream``. When the server ends the stream itself
        (``wsgi.input_terminated``: every ASGI request, gunicorn, a chunked body), a body that
        goes past :attr:`max_content_length` raises
        :class:`~werkzeug.exceptions.RequestEntityTooLarge` (413) on the read that reaches
        the limit, and a body of exactly the limit reads to its end. Werkzeug's stream stops
        at the limit and hands on a body cut there (``get_data``, ``form``, ``get_json``),
        and raises 413 on a read after a body of exactly the limit.

        :raises werkzeug.exceptions.RequestEntityTooLarge: (413) when ``Content-Length`` is
            over :attr:`max_content_length`.
        """
        limit = self.max_content_length
        environ = self.environ
        if limit is not None and not self.shallow and "wsgi.input_terminated" in environ:
            length = get_content_length(environ)
            if length is not None and length > limit:
                raise RequestEntityTooLarge()
            return t.cast(t.IO[bytes], _MaxLimitedStream(environ["wsgi.input"], limit))
        return super().stream

    async def iter_body(self, chunk_size: int = 65536) -> t.AsyncIterator[bytes]:
        """Yield the request body in chunks (``bytes``) as it arrives.

        Under ASGI, reads from the server for a view marked with
        :func:`carboy.stream_request_body` (and from the received body otherwise); under WSGI,
        from :attr:`stream`. Use it once, instead of ``request.data``/``form``/``get_json``.

        :param chunk_size: most bytes per chunk when reading a stream.
        :raises werkzeug.exceptions.RequestEntityTooLarge: (413) past
            :attr:`max_content_length`.
        :raises werkzeug.exceptions.ClientDisconnected: (400) when the client goes away.

        .. versionadded:: 0.1
        """
        receive = self.environ.get("carboy.asgi.receive")
        if receive is not None and asyncio._get_running_loop() is not None:
            from .asgi import iter_receive

            async for chunk in iter_receive(receive, self.environ, self.max_content_length):
                yield chunk
            return
        stream = self.stream
        while True:
            chunk = stream.read(chunk_size)
            if not chunk:
                return
            yield chunk

    def _load_form_data(self) -> None:
        ahead = self.__dict__.get("_carboy_form_ahead")
        if (
            ahead is not None
            and "form" not in self.__dict__
            and "stream" not in self.__dict__
            and ahead[0] == self._form_limits()
        ):
            # Parsed in the pool before an ``async def`` view ran (carboy.asgi.parse_ahead),
            # from the same untouched body under the same limits: adopt that answer.
            _, result, end = ahead
            if isinstance(result, Exception):
                raise result
            self.environ["wsgi.input"].seek(end)  # spent, as by the parse
            d = self.__dict__
            d["stream"], d["form"], d["files"] = result
        else:
            super()._load_form_data()
        # In debug mode, explain why a form key is missing when the form was not sent as one.
        ctx = _cv_app_get(None)
        if (
            ctx is not None
            and ctx.app.debug
            and self.mimetype != "multipart/form-data"
            and not self.files
        ):
            from .debughelpers import attach_enctype_error_multidict

            attach_enctype_error_multidict(self)

    @t.overload
    def get_json(
        self, force: bool = ..., silent: t.Literal[False] = ..., cache: bool = ...
    ) -> t.Any: ...

    @t.overload
    def get_json(
        self, force: bool = ..., silent: bool = ..., cache: bool = ...
    ) -> t.Any | None: ...

    def get_json(
        self, force: bool = False, silent: bool = False, cache: bool = True
    ) -> t.Any | None:
        """The body parsed as JSON. Flask-compatible: ``flask.Request.get_json``.

        :param force: parse whatever the content type.
        :param silent: return ``None`` instead of raising on a bad body or content type.
        :param cache: keep the parsed value for later calls.
        :raises werkzeug.exceptions.BadRequest: (400) for a body that is not JSON.
        :raises werkzeug.exceptions.UnsupportedMediaType: (415) for a content type that is
            not JSON, unless *force*.
        """
        ahead = self.__dict__.get("_carboy_json_ahead")
        if ahead is not None and cache and "stream" not in self.__dict__:
            # Parsed in the pool before an ``async def`` view ran (carboy.asgi.parse_ahead).
            parsed, value, data = ahead
            if parsed:
                # As get_json leaves it: the value and the data cached, the stream spent.
                self.environ["wsgi.input"].seek(0, io.SEEK_END)
                self._cached_data = data
                self._cached_json = (value, value)
            elif silent:
                return None
            else:
                return self.on_json_loading_failed(value)
        return super().get_json(force, silent, cache)

    def _form_limits(self) -> tuple[int | None, int | None, int | None]:
        return (self.max_content_length, self.max_form_memory_size, self.max_form_parts)

    def _parse_ahead(self) -> None:
        """Parse a form or JSON body now, for :meth:`_load_form_data` and :meth:`get_json` to
        adopt if the body is still untouched when they are called; until then the body reads
        from the start. Called in the pool for a large body received for an ``async def``
        view, so that parsing it does not hold up the event loop. Needs ``wsgi.input`` to be
        seekable (the received body)."""
        body = self.environ["wsgi.input"]
        try:
            if self.mimetype in _FORM_TYPES and self.want_form_data_parsed:
                limits = self._form_limits()
                result: t.Any
                try:
                    result = self.make_form_data_parser().parse(
                        self._get_stream_for_parsing(),
                        self.mimetype,
                        self.content_length,
                        self.mimetype_params,
                    )
                except Exception as e:
                    result = e
                self.__dict__["_carboy_form_ahead"] = (limits, result, body.tell())
            elif self.is_json:
                data = self.stream.read()
                try:
                    ahead = (True, self.json_module.loads(data), data)
                except ValueError as e:  # the view's get_json() answers it (400)
                    ahead = (False, e, data)
                self.__dict__["_carboy_json_ahead"] = ahead
        except Exception:
            pass  # anything else the view meets itself, if it reads the body
        finally:
            self.__dict__.pop("stream", None)
            body.seek(0)

    def on_json_loading_failed(self, e: ValueError | None) -> t.Any:
        """Answer a body that is not valid JSON with 400 (415 for a non-JSON content type).

        :raises werkzeug.exceptions.BadRequest: with the parse error's message in debug mode.
        """
        try:
            return super().on_json_loading_failed(e)
        except BadRequest as error:
            ctx = _cv_app_get(None)
            if ctx is not None and ctx.app.debug:
                raise
            raise BadRequest() from error


class _MaxLimitedStream(LimitedStream):
    """A body of unknown length read up to *limit* bytes (``MAX_CONTENT_LENGTH``): the read
    that reaches the limit reads one byte more, so a longer body raises
    :class:`~werkzeug.exceptions.RequestEntityTooLarge` (413) instead of being cut short, and
    a body of exactly the limit then reads as ended (Werkzeug's raises 413 on the next read,
    so ``while stream.read(n)`` failed on it)."""

    def __init__(self, stream: t.IO[bytes], limit: int) -> None:
        super().__init__(stream, limit, is_max=True)
        self._ended = False

    def readinto(self, b: bytearray) -> int | None:  # type: ignore[override]
        n = super().readinto(b)
        if n and not self._ended and self.is_exhausted:
            self._check_end()
        return n

    def on_exhausted(self) -> None:
        # A read at the limit: an error only if the body goes on.
        if not self._ended:
            self._check_end()

    def _check_end(self) -> None:
        if self._stream.read(1):
            raise RequestEntityTooLarge()
        self._ended = True


#: The content types Werkzeug's form parser reads.
_FORM_TYPES = frozenset(("multipart/form-data", "application/x-www-form-urlencoded"))

#: Werkzeug's codec error handler that percent-encodes the bytes it is given (registered when
#: :mod:`werkzeug.urls` is imported), the one its query parsing uses.
_QUOTE = "werkzeug.url_quote"


def _query_text(query: bytes) -> str:
    """*query* decoded from UTF-8, any byte that is not part of valid UTF-8 percent-encoded."""
    return query.decode("utf-8", _QUOTE)


def split_blueprint_path(name: str) -> list[str]:
    """``"a.b.c"`` → ``["a.b.c", "a.b", "a"]``: a blueprint and its parents, innermost first."""
    out = [name]
    while "." in name:
        name = name.rpartition(".")[0]
        out.append(name)
    return out


class Response(_WerkzeugResponse):
    """The response class; ``text/html`` by default.

    Flask-compatible: ``flask.Response``.
    """

    default_mimetype: str | None = "text/html"
    #: The JSON module behind :attr:`json`; the app's provider when an app is active.
    json_module: t.Any = json
    autocorrect_location_header = False

    @property
    def max_cookie_size(self) -> int:  # type: ignore[override]
        """``MAX_COOKIE_SIZE`` from the active app's config, else Werkzeug's default."""
        ctx = _cv_app_get(None)
        if ctx is not None:
            return int(ctx.app.config["MAX_COOKIE_SIZE"])
        return super().max_cookie_size


class _Body(tuple[bytes, str]):
    """A finished 200 response written straight to the server: the short path for a view that
    returns text or JSON when nothing (after hooks, session, signals) needs a Response object.

    Made as ``_Body((body, content_type))``.
    """

    # PERF: a tuple subclass is built in C, without an ``__init__`` frame (one Python call
    # less per short-path request); readers unpack it.
    __slots__ = ()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body, content_type = self
        start_response(
            "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        return [body]


class _Page:
    """A finished error page, rendered once and written straight to the server: the answer to
    an :class:`~werkzeug.exceptions.HTTPException` as Werkzeug renders it, when nothing (an
    error handler, after hooks, the session, signals) needs a Response object.

    :param error: the exception whose page this is; its class's default page, as
        :meth:`~werkzeug.exceptions.HTTPException.get_response` renders it.
    """

    __slots__ = ("body", "code", "description", "headers", "status")

    def __init__(self, error: HTTPException) -> None:
        #: The description the page was rendered from.
        self.description = error.description
        response = error.get_response()
        #: The status code, and the WSGI status line.
        self.code: int = response.status_code
        self.status: str = response.status
        #: The WSGI headers.
        self.headers: list[tuple[str, str]] = list(response.headers.items())
        #: The body, which a ``HEAD`` request does not get.
        self.body: bytes = response.get_data()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response(self.status, list(self.headers))
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [self.body]


_not_found: _Page | None = None


def _not_found_page() -> _Page:
    """The page of a default :class:`~werkzeug.exceptions.NotFound`, rendered on first use and
    again whenever ``NotFound.description`` has been changed since."""
    global _not_found
    page = _not_found
    if page is None or page.description is not NotFound.description:
        page = _not_found = _Page(NotFound())
    return page


_END: t.Any = object()


async def _next_or_end(source: t.AsyncIterator[t.Any]) -> t.Any:
    """The next item of *source*, or :data:`_END` when it is exhausted."""
    try:
        return await anext(source)
    except StopAsyncIteration:
        return _END


class _AsyncBody:
    """An async iterator returned by a view, as a response body.

    Under ASGI the adapter iterates :attr:`_carboy_async_source` on the event loop. Under WSGI
    this object is the body's sync iterator: each step runs on the worker thread's event loop.
    """

    __slots__ = ("_carboy_async_source",)

    def __init__(self, source: t.AsyncIterator[t.Any]) -> None:
        self._carboy_async_source = source

    def __iter__(self) -> t.Iterator[t.Any]:
        from .concurrency import run_coroutine

        source = self._carboy_async_source
        while True:
            # FIX (test_servers): the end is a return value, not StopAsyncIteration raised out
            # of run_coroutine: under gevent that runs on the hub's threadpool, which prints
            # every exception a task raises, so each async-streamed body logged a traceback.
            chunk = run_coroutine(_next_or_end(source))
            if chunk is _END:
                return
            yield chunk

    def close(self) -> None:
        from .concurrency import run_coroutine

        aclose = getattr(self._carboy_async_source, "aclose", None)
        if aclose is not None:
            run_coroutine(aclose())
