"""Request and response classes: Werkzeug's, plus what Flask adds.

Flask-compatible: ``flask.wrappers``. Both subclass Werkzeug's wrappers, so ``isinstance`` checks
against ``werkzeug.wrappers.Request``/``Response`` in extensions hold.
"""

from __future__ import annotations

import asyncio
import io
import typing as t
from urllib.parse import parse_qsl, unquote_to_bytes

from werkzeug import urls as _urls  # noqa: F401 (registers the error handler _QUOTE names)
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import (
    BadHost,
    BadRequest,
    HTTPException,
    NotFound,
    RequestEntityTooLarge,
)
from werkzeug.formparser import FormDataParser as _WerkzeugFormDataParser
from werkzeug.formparser import MultiPartParser
from werkzeug.sansio.utils import get_host
from werkzeug.utils import cached_property
from werkzeug.wrappers import Request as _WerkzeugRequest
from werkzeug.wrappers import Response as _WerkzeugResponse
from werkzeug.wsgi import LimitedStream, get_content_length, get_input_stream

from . import json
from .globals import _cv_app_get

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from werkzeug.routing import Rule


def _config(key: str, default: t.Any) -> t.Any:
    ctx = _cv_app_get(None)
    return default if ctx is None else ctx.app.config[key]


class FormDataParser(_WerkzeugFormDataParser):
    """The form parser of :class:`Request`: Werkzeug's, with its limits applied to
    ``application/x-www-form-urlencoded`` bodies too, and a ``multipart/form-data`` body that
    cannot be parsed answered with 400 instead of an empty form.

    * ``max_form_parts`` (``MAX_FORM_PARTS``) bounds the number of urlencoded fields, as it
      bounds multipart parts; more raise :class:`~werkzeug.exceptions.RequestEntityTooLarge`
      (413).
    * ``max_form_memory_size`` (``MAX_FORM_MEMORY_SIZE``) bounds each urlencoded field's name
      and value, measured decoded (the bytes the form holds), as it bounds each multipart text
      field; a larger one raises 413.
    * Urlencoded bytes that are not UTF-8 stay percent-encoded, as in :attr:`Request.args`
      (Werkzeug drops the whole form).
    * A multipart body with no ``boundary`` parameter (unless the body is empty), one whose
      boundary never appears, or one cut short raises
      :class:`~werkzeug.exceptions.BadRequest` (400); Werkzeug gives an empty form. With
      ``silent=False`` the parser's :class:`ValueError` is raised instead, as in Werkzeug.

    Flask-compatible: :class:`werkzeug.formparser.FormDataParser` (Flask uses Werkzeug's).

    .. versionadded:: 0.1
    """

    def parse(
        self,
        stream: t.IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str] | None = None,
    ) -> tuple[t.IO[bytes], MultiDict[str, t.Any], MultiDict[str, t.Any]]:
        """Parse the form in *stream*: ``(stream, form, files)``.

        :param stream: the body, limited (:attr:`Request.stream`).
        :param mimetype: the body's media type; only the two form types are parsed.
        :param content_length: the body's declared length in bytes, or ``None``.
        :param options: the media type's parameters (the multipart ``boundary``).
        :raises werkzeug.exceptions.RequestEntityTooLarge: (413) past a limit.
        :raises werkzeug.exceptions.BadRequest: (400) for a multipart body that cannot be
            parsed.
        """
        if mimetype == "application/x-www-form-urlencoded":
            return stream, self._urlencoded(stream.read()), self.cls()
        if mimetype != "multipart/form-data":
            return stream, self.cls(), self.cls()
        boundary = (options or {}).get("boundary", "")
        try:
            if not boundary:
                # Only an empty body may come without a boundary: it is an empty form.
                if content_length == 0 or not stream.read(1):
                    return stream, self.cls(), self.cls()
                raise ValueError("no boundary parameter in the Content-Type")
            parser = MultiPartParser(
                stream_factory=self.stream_factory,
                max_form_memory_size=self.max_form_memory_size,
                max_form_parts=self.max_form_parts,
                cls=self.cls,
            )
            form, files = parser.parse(stream, boundary.encode("latin-1"), content_length)
        except ValueError as e:
            if not self.silent:
                raise
            raise BadRequest(f"The multipart/form-data body cannot be parsed: {e}.") from e
        return stream, form, files

    def _urlencoded(self, body: bytes) -> MultiDict[str, t.Any]:
        # PERF: the limits are checked on the raw fields, in C (split, count, max of len);
        # only a field longer than the size limit while still encoded is decoded to measure.
        pieces = body.split(b"&")
        parts = self.max_form_parts
        if parts is not None and len(pieces) > parts and len(pieces) - pieces.count(b"") > parts:
            raise RequestEntityTooLarge(f"The form has more than {parts} fields.")
        size = self.max_form_memory_size
        if size is not None and max(map(len, pieces)) > size:
            for piece in pieces:
                if len(piece) > size and any(
                    len(unquote_to_bytes(half.replace(b"+", b" "))) > size
                    for half in piece.split(b"=", 1)
                ):
                    raise RequestEntityTooLarge(f"A form field is larger than {size} bytes.")
        return self.cls(
            parse_qsl(body.decode("utf-8", _QUOTE), keep_blank_values=True, errors=_QUOTE)
        )


class _CappedStream(LimitedStream):
    """A body the server ends itself (``wsgi.input_terminated``: a chunked body), read to at
    most *cap* bytes. One byte more raises
    :class:`~werkzeug.exceptions.RequestEntityTooLarge` (413), where Werkzeug's stream for
    ``max_content_length`` ends there and the body reaches the view cut to the limit.

    :param stream: the server's ``wsgi.input``.
    :param cap: the most bytes the body may have (``max_content_length``).
    """

    def __init__(self, stream: t.IO[bytes], cap: int) -> None:
        super().__init__(stream, cap + 1, is_max=True)

    def readinto(self, b: t.Any) -> int | None:
        n = super().readinto(b)
        if self.is_exhausted:  # a byte past the cap arrived
            raise RequestEntityTooLarge()
        return n


#: ``Host`` header values found valid, as the server gave them (``str`` from a WSGI environ,
#: ``bytes`` from an ASGI scope), and ``None`` (no ``Host`` header: the server's address is
#: used, as in Werkzeug): checking a request's host is then one set lookup.
GOOD_HOSTS: set[str | bytes | None] = {None}
#: Most entries of :data:`GOOD_HOSTS`; when full it starts again, so that clients sending
#: many names cost a validation each, never memory.
GOOD_HOSTS_MAX = 256


def host_is_valid(value: str | bytes | None) -> bool:
    """Whether *value*, a ``Host`` header, names a host (a name, IPv4 or ``[IPv6]``, with an
    optional port), as Werkzeug's :func:`~werkzeug.sansio.utils.get_host` decides (it gives
    ``request.host == ""`` for any other value), or is an internationalized name whose IDNA
    form does. A valid value is remembered in :data:`GOOD_HOSTS`.

    :param value: the header's value, ``str`` (WSGI) or ``bytes`` (ASGI), or ``None`` when
        there is none (valid: the server's address stands for it).

    .. versionadded:: 0.1
    """
    if value is None:
        return True
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if get_host("http", text) == "":
        if text.isascii():
            return False
        # An internationalized name not in its ASCII form (Flask serves it, with
        # ``request.host == ""``), sent as UTF-8 (its bytes are the environ's latin-1 text,
        # or the scope's bytes): valid if its IDNA form is. That form is checked again, as
        # Python's codec lets ASCII through unchecked (``"a b"``, ``"a@b"``).
        try:
            if isinstance(value, bytes):
                text = value.decode("utf-8")
            elif max(text) <= "\xff":
                try:
                    text = text.encode("latin-1").decode("utf-8")
                except UnicodeDecodeError:
                    pass  # text put in the environ as it is (Flask's tests do)
            ascii_form = text.encode("idna").decode("ascii")
        except UnicodeError:
            return False
        if get_host("http", ascii_form) == "":
            return False
    if len(GOOD_HOSTS) >= GOOD_HOSTS_MAX:
        GOOD_HOSTS.clear()
        GOOD_HOSTS.add(None)
    GOOD_HOSTS.add(value)
    return True


def bad_host() -> BadHost:
    """The error (400) that answers a request whose ``Host`` header names no host."""
    return BadHost("The request's Host header does not name a valid host.")


class Request(_WerkzeugRequest):
    """The request object behind :data:`carboy.request`.

    Flask-compatible: ``flask.Request``. Size limits come from the app's config
    (``MAX_CONTENT_LENGTH``, ``MAX_FORM_MEMORY_SIZE``, ``MAX_FORM_PARTS``) unless set on the
    instance; exceeding them raises :class:`~werkzeug.exceptions.RequestEntityTooLarge` (413).
    """

    #: The JSON module used by :meth:`get_json`; the app's provider when an app is active.
    json_module: t.Any = json
    #: The form parser: Werkzeug's, with limits on urlencoded bodies too (:class:`FormDataParser`).
    form_data_parser_class = FormDataParser

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
        """The parsed query string (a ``parameter_storage_class``, by default an
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
        """The body stream, read once, guarded against reading past ``Content-Length`` or
        :attr:`max_content_length`. Flask-compatible: ``flask.Request.stream``.

        A body the server ends itself (``wsgi.input_terminated``, as gunicorn, granian and
        Werkzeug's server set for a chunked body) that is longer than
        :attr:`max_content_length` raises 413 when read past the limit; Werkzeug's stream
        ends at the limit, so the body reaches the view cut short. A body of exactly the
        limit is read whole.

        :raises werkzeug.exceptions.RequestEntityTooLarge: (413) past the limit.
        :raises RuntimeError: for a request made with ``shallow=True``.
        """
        if self.shallow:
            raise RuntimeError(
                "This request was made with 'shallow=True': reading its body is disabled."
            )
        environ = self.environ
        limit = self.max_content_length
        if limit is None or "wsgi.input_terminated" not in environ:
            return get_input_stream(environ, max_content_length=limit)
        declared = get_content_length(environ)
        if declared is not None and declared > limit:
            raise RequestEntityTooLarge()
        return t.cast("t.IO[bytes]", _CappedStream(environ["wsgi.input"], limit))

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

        A body nested too deeply for the parser (``RecursionError``) is bad JSON like any
        other: :meth:`on_json_loading_failed` answers it (400), where Flask answers 500.

        :param force: parse whatever the content type.
        :param silent: return ``None`` instead of calling :meth:`on_json_loading_failed`.
        :param cache: keep the result for later calls.
        :raises werkzeug.exceptions.UnsupportedMediaType: (415) when the content type is not
            JSON, unless *force* or *silent*.
        :raises werkzeug.exceptions.BadRequest: (400) for a body that is not valid JSON,
            unless *silent*.
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
        if cache:
            known = self._cached_json[silent]
            if known is not Ellipsis:
                return known
        if not (force or self.is_json):
            return None if silent else self.on_json_loading_failed(None)
        data = self.get_data(cache=cache)
        try:
            rv = self.json_module.loads(data)
        except (ValueError, RecursionError) as e:
            error = _json_error(e)
            if silent:
                rv = None
                if cache:
                    self._cached_json = (self._cached_json[0], None)
            else:
                rv = self.on_json_loading_failed(error)
                if cache:
                    self._cached_json = (rv, self._cached_json[1])
        else:
            if cache:
                self._cached_json = (rv, rv)
        return rv

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
                except (ValueError, RecursionError) as e:  # get_json() answers it (400)
                    ahead = (False, _json_error(e), data)
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


#: The content types Werkzeug's form parser reads.
_FORM_TYPES = frozenset(("multipart/form-data", "application/x-www-form-urlencoded"))

#: Werkzeug's codec error handler that percent-encodes the bytes it is given (registered when
#: :mod:`werkzeug.urls` is imported), the one its query parsing uses.
_QUOTE = "werkzeug.url_quote"


def _json_error(error: ValueError | RecursionError) -> ValueError:
    """*error* as the ``ValueError`` :meth:`Request.on_json_loading_failed` takes: a body
    nested too deeply for the parser (``RecursionError``) is bad JSON like any other."""
    if isinstance(error, ValueError):
        return error
    nested = ValueError("the JSON document is nested too deeply")
    nested.__cause__ = error
    return nested


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
