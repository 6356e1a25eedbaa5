"""The application object: configuration, registries, and the request path.

Flask-compatible: ``flask.Flask``. The request path, top to bottom::

    __call__ → wsgi_app
        RequestContext.push          one contextvar set; the URL is matched by ``_match``
        _respond (or full_dispatch_request when a subclass overrides a step)
            plan = _plan(endpoint)   hooks for this endpoint, gathered once and cached
            before hooks → view      → handle_user_exception on error
            finalize_request         make_response → process_response (after hooks, session)
        RequestContext.pop           teardown functions, contextvar reset

A *plan* is everything about an endpoint that Flask recomputes on every request (which hooks of
which blueprints apply, in which order, wrapped for sync calling) computed on its first request.
"""

from __future__ import annotations

import asyncio
import collections.abc as cabc
import inspect
import os
import sys
import typing as t
import weakref
from datetime import timedelta
from functools import cached_property
from itertools import chain
from types import TracebackType

from werkzeug.datastructures import Headers, ImmutableDict
from werkzeug.exceptions import (
    Aborter,
    BadRequest,
    BadRequestKeyError,
    HTTPException,
    InternalServerError,
    NotFound,
)
from werkzeug.routing import BuildError, Map, MapAdapter, RequestRedirect, RoutingException, Rule
from werkzeug.utils import redirect as _wz_redirect
from werkzeug.wrappers import Response as BaseResponse

from . import signals
from . import typing as ft
from .config import DEFAULT_CONFIG, Config, ConfigAttribute
from .ctx import AppContext, RequestContext, _AppCtxGlobals
from .globals import _cv_app, _cv_request, g
from .helpers import get_debug_flag, get_load_dotenv
from .json.provider import DefaultJSONProvider, JSONProvider
from .logging import create_logger
from .routing import Router
from .scaffold import Scaffold, _endpoint_from_view_func, find_instance_path, setupmethod
from .sessions import SecureCookieSessionInterface, SessionInterface
from .templating import Environment
from .wrappers import Request, Response, split_blueprint_path

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from click import Group

    from .blueprints import Blueprint
    from .testing import CarboyCliRunner, CarboyClient

T_shell = t.TypeVar("T_shell", bound=ft.ShellContextProcessorCallable)
T_teardown = t.TypeVar("T_teardown", bound=ft.TeardownCallable)
T_filter = t.TypeVar("T_filter", bound=ft.TemplateFilterCallable)
T_global = t.TypeVar("T_global", bound=ft.TemplateGlobalCallable)
T_test = t.TypeVar("T_test", bound=ft.TemplateTestCallable)

_sentinel: t.Any = object()
_ANCHOR_SAFE = "%!#$&'()*+,/:;=?@"

#: Methods whose override sends requests through the plain Flask method chain.
_DISPATCH_STEPS = (
    "full_dispatch_request",
    "preprocess_request",
    "dispatch_request",
    "make_response",
    "process_response",
    "finalize_request",
)


def _make_timedelta(value: timedelta | int | None) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    return timedelta(seconds=value)


class _Plan(t.NamedTuple):
    """What one endpoint's requests run, gathered from the registries once."""

    view: t.Callable[..., t.Any] | None
    url_value_preprocessors: tuple[ft.URLValuePreprocessorCallable, ...]
    before: tuple[t.Callable[[], t.Any], ...]
    after: tuple[t.Callable[[t.Any], t.Any], ...]
    teardown: tuple[t.Callable[[BaseException | None], t.Any], ...]


class _Body:
    """A finished 200 response written straight to the server: the short path for a view that
    returns text or JSON when nothing (after hooks, session, signals) needs a Response object."""

    __slots__ = ("body", "content_type")

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = self.body
        start_response(
            "200 OK", [("Content-Type", self.content_type), ("Content-Length", str(len(body)))]
        )
        return [body]


class Carboy(Scaffold):
    """The application: a WSGI application with Flask's API.

    Flask-compatible: ``flask.Flask`` (same constructor arguments and behaviour).

    :param import_name: the app's module or package name, usually ``__name__``.
    :param static_url_path: URL prefix for static files; ``/static`` by default.
    :param static_folder: static files folder relative to ``root_path``; ``None`` disables the
        ``static`` route.
    :param static_host: the host of the static route; required with ``host_matching``.
    :param host_matching: match rules on the ``host`` option too.
    :param subdomain_matching: match the ``subdomain`` option against ``SERVER_NAME``.
    :param template_folder: templates folder relative to ``root_path``.
    :param instance_path: absolute path of the instance folder.
    :param instance_relative_config: load relative config file names from the instance folder.
    :param root_path: overrides the folder found from *import_name*.
    :raises ValueError: for a relative *instance_path* or an inconsistent *static_host*.
    """

    #: The class of :attr:`request` objects.
    request_class: type[Request] = Request
    #: The class of response objects made from view return values.
    response_class: type[Response] = Response
    #: The class behind :attr:`aborter` (and so :func:`carboy.abort`).
    aborter_class: type[Aborter] = Aborter
    #: The class of :attr:`jinja_env`.
    jinja_environment: type[Environment] = Environment
    #: The class of :data:`carboy.g`.
    app_ctx_globals_class: type[_AppCtxGlobals] = _AppCtxGlobals
    #: The class of :attr:`config`.
    config_class: type[Config] = Config
    #: ``TESTING`` config value.
    testing = ConfigAttribute[bool]("TESTING")
    #: ``SECRET_KEY`` config value.
    secret_key = ConfigAttribute["str | bytes | None"]("SECRET_KEY")
    #: ``PERMANENT_SESSION_LIFETIME`` config value, as a timedelta.
    permanent_session_lifetime = ConfigAttribute[timedelta](
        "PERMANENT_SESSION_LIFETIME", get_converter=_make_timedelta
    )
    #: The class of :attr:`json`.
    json_provider_class: type[JSONProvider] = DefaultJSONProvider
    #: Options for :attr:`jinja_env`.
    jinja_options: dict[str, t.Any] = {}
    #: The rule class used by :meth:`add_url_rule`.
    url_rule_class = Rule
    #: The map class of :attr:`url_map`.
    url_map_class = Map
    #: The test client class; :class:`carboy.testing.CarboyClient` when ``None``.
    test_client_class: type[CarboyClient] | None = None
    #: The CLI runner class; :class:`carboy.testing.CarboyCliRunner` when ``None``.
    test_cli_runner_class: type[CarboyCliRunner] | None = None
    #: Flask's default configuration.
    default_config = ImmutableDict(DEFAULT_CONFIG)
    #: Where sessions are loaded from and saved to.
    session_interface: SessionInterface = SecureCookieSessionInterface()

    def __init__(
        self,
        import_name: str,
        static_url_path: str | None = None,
        static_folder: str | os.PathLike[str] | None = "static",
        static_host: str | None = None,
        host_matching: bool = False,
        subdomain_matching: bool = False,
        template_folder: str | os.PathLike[str] | None = "templates",
        instance_path: str | None = None,
        instance_relative_config: bool = False,
        root_path: str | None = None,
    ) -> None:
        super().__init__(
            import_name=import_name,
            static_folder=static_folder,
            static_url_path=static_url_path,
            template_folder=template_folder,
            root_path=root_path,
        )
        if instance_path is None:
            instance_path = self.auto_find_instance_path()
        elif not os.path.isabs(instance_path):
            raise ValueError("'instance_path' must be absolute; a relative path was given.")
        #: Absolute path of the instance folder (not created by carboy).
        self.instance_path = instance_path
        #: The configuration dict.
        self.config = self.make_config(instance_relative_config)
        #: Raises HTTP errors for :func:`carboy.abort`.
        self.aborter = self.make_aborter()
        #: The JSON provider used by ``jsonify``, ``request.get_json`` and templates.
        self.json: JSONProvider = self.json_provider_class(self)
        #: Called with ``(error, endpoint, values)`` when ``url_for`` fails.
        self.url_build_error_handlers: list[
            t.Callable[[Exception, str, dict[str, t.Any]], str]
        ] = []
        #: Called with the error (or ``None``) when an app context pops.
        self.teardown_appcontext_funcs: list[ft.TeardownCallable] = []
        #: Functions returning extra names for ``carboy shell``.
        self.shell_context_processors: list[ft.ShellContextProcessorCallable] = []
        #: Registered blueprints by dotted name.
        self.blueprints: dict[str, Blueprint] = {}
        #: Where extensions keep their state.
        self.extensions: dict[str, t.Any] = {}
        #: The rules, as a Werkzeug map.
        self.url_map = self.url_map_class(host_matching=host_matching)
        self.subdomain_matching = subdomain_matching
        self._got_first_request = False
        self._plans: dict[str | None, _Plan] = {}
        self._router: Router | None = None
        self._fast: bool | None = None
        self._json_fast = False

        from .templating import _default_template_ctx_processor

        self.template_context_processors[None] = [_default_template_ctx_processor]
        if self.has_static_folder:
            if bool(static_host) != host_matching:
                raise ValueError(
                    "'static_host' must be given if and only if 'host_matching' is enabled."
                )
            self_ref = weakref.ref(self)
            self.add_url_rule(
                f"{self.static_url_path}/<path:filename>",
                endpoint="static",
                host=static_host,
                view_func=lambda **kw: self_ref().send_static_file(**kw),  # type: ignore[union-attr]
            )
        self.cli.name = self.name

    # -- set-up ------------------------------------------------------------------------------

    def _check_setup_finished(self, f_name: str) -> None:
        if self._got_first_request:
            raise AssertionError(
                f"'{f_name}' was called on the app after it handled its first request."
                " Registrations made now would apply to some workers and requests and not"
                " others; make every setup call (routes, hooks, blueprints) before serving."
            )
        self._plans.clear()
        self._fast = None

    @cached_property
    def name(self) -> str:
        """The app's name: the import name, or the script's name for ``__main__``."""
        if self.import_name == "__main__":
            path = getattr(sys.modules["__main__"], "__file__", None)
            if path is None:
                return "__main__"
            return os.path.splitext(os.path.basename(path))[0]
        return self.import_name

    @cached_property
    def logger(self) -> t.Any:
        """The ``logging.Logger`` named after the app. Flask-compatible: ``flask.Flask.logger``."""
        return create_logger(self)

    @cached_property
    def jinja_env(self) -> Environment:
        """The Jinja environment for templates, created on first use."""
        return self.create_jinja_environment()

    @property
    def got_first_request(self) -> bool:
        """Whether the app has started handling a request."""
        return self._got_first_request

    @property
    def debug(self) -> bool:
        """``DEBUG`` config value; setting it also sets template auto-reload when unset."""
        return bool(self.config["DEBUG"])

    @debug.setter
    def debug(self, value: bool) -> None:
        self.config["DEBUG"] = value
        if self.config["TEMPLATES_AUTO_RELOAD"] is None and "jinja_env" in self.__dict__:
            self.jinja_env.auto_reload = value

    def make_config(self, instance_relative: bool = False) -> Config:
        """Create :attr:`config` with the defaults and ``DEBUG`` from the environment."""
        root = self.instance_path if instance_relative else self.root_path
        defaults = dict(self.default_config)
        defaults["DEBUG"] = get_debug_flag()
        return self.config_class(root, defaults)

    def make_aborter(self) -> Aborter:
        """Create :attr:`aborter`."""
        return self.aborter_class()

    def auto_find_instance_path(self) -> str:
        """``instance`` beside the package, or ``<prefix>/var/<name>-instance`` if installed."""
        return find_instance_path(self.import_name, self.name)

    def open_instance_resource(
        self, resource: str, mode: str = "rb", encoding: str | None = "utf-8"
    ) -> t.IO[t.Any]:
        """Open *resource* relative to :attr:`instance_path` (any mode, unlike resources)."""
        path = os.path.join(self.instance_path, resource)
        if "b" in mode:
            return open(path, mode)  # noqa: SIM115
        return open(path, mode, encoding=encoding)  # noqa: SIM115

    def create_jinja_environment(self) -> Environment:
        """Create :attr:`jinja_env` from :attr:`jinja_options` and the app's globals."""
        from .templating import create_jinja_environment

        return create_jinja_environment(self)

    def create_global_jinja_loader(self) -> t.Any:
        """The loader that searches the app's templates, then each blueprint's."""
        from .templating import DispatchingJinjaLoader

        return DispatchingJinjaLoader(self)

    def select_jinja_autoescape(self, filename: str | None) -> bool:
        """Autoescape for ``None`` (string templates) and ``.html .htm .xml .xhtml .svg``."""
        if filename is None:
            return True
        return filename.endswith((".html", ".htm", ".xml", ".xhtml", ".svg"))

    def update_template_context(self, context: dict[str, t.Any]) -> None:
        """Add the context processors' values to *context*; explicit values win."""
        names: t.Iterable[str | None] = (None,)
        ctx = _cv_request.get(None)
        if ctx is not None:
            names = chain(names, reversed(ctx.request.blueprints))
        explicit = context.copy()
        for name in names:
            for func in self.template_context_processors.get(name, ()):
                context.update(self.ensure_sync(func)())
        context.update(explicit)

    def make_shell_context(self) -> dict[str, t.Any]:
        """Names for ``carboy shell``: ``app``, ``g`` and the shell context processors'."""
        rv: dict[str, t.Any] = {"app": self, "g": g}
        for processor in self.shell_context_processors:
            rv.update(processor())
        return rv

    def iter_blueprints(self) -> t.ValuesView[Blueprint]:
        """The registered blueprints, in registration order."""
        return self.blueprints.values()

    @setupmethod
    def register_blueprint(self, blueprint: Blueprint, **options: t.Any) -> None:
        """Register *blueprint*; options override its ``url_prefix``, ``subdomain``,
        ``url_defaults``, and set ``name`` for a second registration.

        Flask-compatible: ``flask.Flask.register_blueprint``.

        :raises ValueError: when the name is already registered.
        """
        blueprint.register(self, options)

    @setupmethod
    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: ft.RouteCallable | None = None,
        provide_automatic_options: bool | None = None,
        **options: t.Any,
    ) -> None:
        """Register URL *rule* for *endpoint*, served by *view_func*.

        Flask-compatible: ``flask.Flask.add_url_rule``.

        :param rule: the URL rule string.
        :param endpoint: the endpoint name; the view function's name by default.
        :param view_func: the view function; may be registered later with :meth:`endpoint`.
        :param provide_automatic_options: answer OPTIONS automatically; by default unless
            ``OPTIONS`` is listed in ``methods``.
        :param options: ``methods`` and the keyword arguments of :class:`werkzeug.routing.Rule`
            (``defaults``, ``strict_slashes``, ``redirect_to``, ``host``, ``subdomain``...).
        :raises TypeError: when ``methods`` is a string.
        :raises AssertionError: when *endpoint* already has a different view function.
        """
        if endpoint is None:
            endpoint = _endpoint_from_view_func(view_func)  # type: ignore[arg-type]
        options["endpoint"] = endpoint
        methods = options.pop("methods", None)
        if methods is None:
            methods = getattr(view_func, "methods", None) or ("GET",)
        if isinstance(methods, str):
            raise TypeError(
                "'methods' must be a list of method names, for example methods=['POST'],"
                f" not the string {methods!r}."
            )
        methods = {m.upper() for m in methods}
        required = set(getattr(view_func, "required_methods", ()))
        if provide_automatic_options is None:
            provide_automatic_options = getattr(view_func, "provide_automatic_options", None)
        if provide_automatic_options is None:
            provide_automatic_options = "OPTIONS" not in methods and bool(
                self.config.get("PROVIDE_AUTOMATIC_OPTIONS", True)
            )
            if provide_automatic_options:
                required.add("OPTIONS")
        methods |= required
        rule_obj = self.url_rule_class(rule, methods=methods, **options)
        rule_obj.provide_automatic_options = provide_automatic_options  # type: ignore[attr-defined]
        self.url_map.add(rule_obj)
        if view_func is not None:
            existing = self.view_functions.get(endpoint)
            if existing is not None and existing != view_func:
                raise AssertionError(
                    f"View function mapping is overwriting an existing endpoint function:"
                    f" {endpoint}"
                )
            self.view_functions[endpoint] = view_func

    @setupmethod
    def template_filter(self, name: str | None = None) -> t.Callable[[T_filter], T_filter]:
        """Register the decorated function as Jinja filter *name* (its own name by default)."""

        def decorator(f: T_filter) -> T_filter:
            self.add_template_filter(f, name=name)
            return f

        return decorator

    @setupmethod
    def add_template_filter(self, f: ft.TemplateFilterCallable, name: str | None = None) -> None:
        """Non-decorator form of :meth:`template_filter`."""
        self.jinja_env.filters[name or f.__name__] = f

    @setupmethod
    def template_test(self, name: str | None = None) -> t.Callable[[T_test], T_test]:
        """Register the decorated function as Jinja test *name*."""

        def decorator(f: T_test) -> T_test:
            self.add_template_test(f, name=name)
            return f

        return decorator

    @setupmethod
    def add_template_test(self, f: ft.TemplateTestCallable, name: str | None = None) -> None:
        """Non-decorator form of :meth:`template_test`."""
        self.jinja_env.tests[name or f.__name__] = f

    @setupmethod
    def template_global(self, name: str | None = None) -> t.Callable[[T_global], T_global]:
        """Register the decorated function as Jinja global *name*."""

        def decorator(f: T_global) -> T_global:
            self.add_template_global(f, name=name)
            return f

        return decorator

    @setupmethod
    def add_template_global(self, f: ft.TemplateGlobalCallable, name: str | None = None) -> None:
        """Non-decorator form of :meth:`template_global`."""
        self.jinja_env.globals[name or f.__name__] = f

    @setupmethod
    def teardown_appcontext(self, f: T_teardown) -> T_teardown:
        """Run *f(error)* whenever an app context pops (after each request too)."""
        self.teardown_appcontext_funcs.append(f)
        return f

    @setupmethod
    def shell_context_processor(self, f: T_shell) -> T_shell:
        """Register *f()*, returning extra names for ``carboy shell``."""
        self.shell_context_processors.append(f)
        return f

    # -- contexts ----------------------------------------------------------------------------

    def app_context(self) -> AppContext:
        """A new app context. Flask-compatible: ``flask.Flask.app_context``."""
        return AppContext(self)

    def request_context(self, environ: WSGIEnvironment) -> RequestContext:
        """A new request context for *environ*. Flask-compatible: ``flask.Flask.request_context``."""
        return RequestContext(self, environ)

    def test_request_context(self, *args: t.Any, **kwargs: t.Any) -> RequestContext:
        """A request context for a request built from :class:`carboy.testing.EnvironBuilder`
        arguments (path, method, data, json, headers, ...)."""
        from .testing import EnvironBuilder

        builder = EnvironBuilder(self, *args, **kwargs)
        try:
            return self.request_context(builder.get_environ())
        finally:
            builder.close()

    def test_client(self, use_cookies: bool = True, **kwargs: t.Any) -> CarboyClient:
        """A test client for the app. Flask-compatible: ``flask.Flask.test_client``."""
        cls = self.test_client_class
        if cls is None:
            from .testing import CarboyClient as cls
        return cls(self, self.response_class, use_cookies=use_cookies, **kwargs)

    def test_cli_runner(self, **kwargs: t.Any) -> CarboyCliRunner:
        """A CLI runner for the app's commands. Flask-compatible: ``flask.Flask.test_cli_runner``."""
        cls = self.test_cli_runner_class
        if cls is None:
            from .testing import CarboyCliRunner as cls
        return cls(self, **kwargs)

    def run(
        self,
        host: str | None = None,
        port: int | None = None,
        debug: bool | None = None,
        load_dotenv: bool = True,
        **options: t.Any,
    ) -> None:
        """Serve the app on Werkzeug's development server (not for production).

        Flask-compatible: ``flask.Flask.run``. Does nothing when called from ``carboy run``.

        :param host: interface to bind; ``127.0.0.1`` or the host of ``SERVER_NAME``.
        :param port: port to bind; 5000 or the port of ``SERVER_NAME``.
        :param debug: enables debug mode (reloader and debugger).
        :param load_dotenv: load ``.env``/``.flaskenv`` first.
        :param options: passed to :func:`werkzeug.serving.run_simple`.
        """
        if os.environ.get("FLASK_RUN_FROM_CLI") == "true":
            return
        if get_load_dotenv(load_dotenv):
            from .cli import load_dotenv as _load_dotenv

            _load_dotenv()
            if "FLASK_DEBUG" in os.environ or "CARBOY_DEBUG" in os.environ:
                self.debug = get_debug_flag()
        if debug is not None:
            self.debug = bool(debug)
        server_name = self.config.get("SERVER_NAME")
        sn_host, _, sn_port = (server_name or "").partition(":")
        host = host or sn_host or "127.0.0.1"
        port = int(port or sn_port or 5000)
        options.setdefault("use_reloader", self.debug)
        options.setdefault("use_debugger", self.debug)
        options.setdefault("threaded", True)
        from werkzeug.serving import run_simple

        try:
            run_simple(host, port, self, **options)
        finally:
            self._got_first_request = False

    # -- async -------------------------------------------------------------------------------

    def ensure_sync(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        """Return *func*, or a sync wrapper of it when it is a coroutine function.

        Flask-compatible: ``flask.Flask.ensure_sync``.
        """
        if inspect.iscoroutinefunction(func):
            return self.async_to_sync(func)
        return func

    def async_to_sync(
        self, func: t.Callable[..., t.Coroutine[t.Any, t.Any, t.Any]]
    ) -> t.Callable[..., t.Any]:
        """Wrap coroutine function *func* to run to completion when called.

        Flask-compatible: ``flask.Flask.async_to_sync``. The coroutine runs in the caller's
        context, so ``request``, ``g`` and the rest stay available.
        """

        def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
            return asyncio.run(func(*args, **kwargs))

        return run

    # -- URL matching and building -----------------------------------------------------------

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        """Bind :attr:`url_map` to *request*, or to ``SERVER_NAME`` outside a request.

        Flask-compatible: ``flask.Flask.create_url_adapter``.

        :raises werkzeug.exceptions.SecurityError: (400) when the host is not in
            ``TRUSTED_HOSTS``.
        """
        if request is not None:
            trusted = self.config["TRUSTED_HOSTS"]
            if trusted is not None:
                request.trusted_hosts = trusted
            # Reading the host validates it against the trusted hosts.
            request.host  # noqa: B018
            subdomain = None
            server_name = self.config["SERVER_NAME"]
            if self.url_map.host_matching:
                server_name = None
            elif not self.subdomain_matching:
                subdomain = self.url_map.default_subdomain or ""
            return self.url_map.bind_to_environ(
                request.environ, server_name=server_name, subdomain=subdomain
            )
        if self.config["SERVER_NAME"] is not None:
            return self.url_map.bind(
                self.config["SERVER_NAME"],
                script_name=self.config["APPLICATION_ROOT"],
                url_scheme=self.config["PREFERRED_URL_SCHEME"],
            )
        return None

    def _match(self, ctx: RequestContext) -> None:
        """Match *ctx*'s URL, recording the rule and arguments or the routing exception."""
        router = self._router
        if router is None or router.is_stale():
            router = self._router = Router(self.url_map)
        environ = ctx.environ
        if not (
            self.url_map.host_matching
            or self.subdomain_matching
            or self.config["TRUSTED_HOSTS"] is not None
        ):
            path = environ.get("PATH_INFO", "")
            if not path.isascii():
                path = path.encode("latin-1").decode("utf-8", "replace")
            if path[:1] == "/":
                hit = router.match(path, environ.get("REQUEST_METHOD", "GET").upper())
                if hit is not None:
                    ctx._set_match(*hit)
                    return
                if router.surely_missing(path):
                    ctx._set_routing_exception(NotFound())
                    return
        adapter = ctx.url_adapter
        if adapter is None:
            return
        try:
            rule, args = adapter.match(return_rule=True)
        except HTTPException as e:
            ctx._set_routing_exception(e)
        else:
            ctx._set_match(rule, args)

    def inject_url_defaults(self, endpoint: str, values: dict[str, t.Any]) -> None:
        """Run the ``url_defaults`` functions of the app and of *endpoint*'s blueprints."""
        names: t.Iterable[str | None] = (None,)
        if "." in endpoint:
            names = chain(names, reversed(split_blueprint_path(endpoint.rpartition(".")[0])))
        for name in names:
            for func in self.url_default_functions.get(name, ()):
                func(endpoint, values)

    def handle_url_build_error(
        self, error: BuildError, endpoint: str, values: dict[str, t.Any]
    ) -> str:
        """Try :attr:`url_build_error_handlers`; re-raise *error* if none returns a URL."""
        for handler in self.url_build_error_handlers:
            try:
                rv = handler(error, endpoint, values)
            except BuildError as e:
                error = e
            else:
                if rv is not None:
                    return rv
        if error is sys.exc_info()[1]:
            raise
        raise error

    def url_for(
        self,
        endpoint: str,
        *,
        _anchor: str | None = None,
        _method: str | None = None,
        _scheme: str | None = None,
        _external: bool | None = None,
        **values: t.Any,
    ) -> str:
        """Build the URL of *endpoint*; see :func:`carboy.url_for`.

        :raises werkzeug.routing.BuildError: when no rule fits the endpoint and values.
        :raises RuntimeError: outside a request without ``SERVER_NAME``.
        :raises ValueError: for ``_scheme`` without an external URL.
        """
        req_ctx = _cv_request.get(None)
        if req_ctx is not None:
            url_adapter = req_ctx.url_adapter
            blueprint = req_ctx.request.blueprint
            if endpoint[:1] == ".":
                endpoint = f"{blueprint}{endpoint}" if blueprint is not None else endpoint[1:]
            if _external is None:
                _external = _scheme is not None
        else:
            app_ctx = _cv_app.get(None)
            if app_ctx is not None:
                url_adapter = app_ctx.url_adapter
            else:
                url_adapter = self.create_url_adapter(None)
            if url_adapter is None:
                raise RuntimeError(
                    "Cannot build a URL outside a request unless 'SERVER_NAME' is configured"
                    " (with 'APPLICATION_ROOT' and 'PREFERRED_URL_SCHEME' as needed)."
                )
            if _external is None:
                _external = True
        if _scheme is not None and not _external:
            raise ValueError("'_scheme' needs '_external=True'.")
        if url_adapter is None:
            raise RuntimeError("No URL adapter is available for this request.")
        self.inject_url_defaults(endpoint, values)
        try:
            rv = url_adapter.build(
                endpoint, values, method=_method, url_scheme=_scheme, force_external=_external
            )
        except BuildError as error:
            values.update(_anchor=_anchor, _method=_method, _scheme=_scheme, _external=_external)
            return self.handle_url_build_error(error, endpoint, values)
        if _anchor is not None:
            from urllib.parse import quote

            rv = f"{rv}#{quote(_anchor, safe=_ANCHOR_SAFE)}"
        return rv

    def redirect(self, location: str, code: int = 302) -> BaseResponse:
        """A redirect response to *location*. Flask-compatible: ``flask.Flask.redirect``."""
        return _wz_redirect(location, code=code, Response=self.response_class)

    # -- the request path --------------------------------------------------------------------

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> cabc.Iterable[bytes]:
        """The WSGI entry point; calls :meth:`wsgi_app` so middleware can wrap that."""
        return self.wsgi_app(environ, start_response)

    def wsgi_app(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> cabc.Iterable[bytes]:
        """Handle one WSGI request. Flask-compatible: ``flask.Flask.wsgi_app``.

        Wrap it (``app.wsgi_app = Middleware(app.wsgi_app)``) to add WSGI middleware.
        """
        ctx = self.request_context(environ)
        error: BaseException | None = None
        try:
            try:
                ctx.push()
                fast = self._fast
                if fast is None:
                    fast = self._freeze()
                response = self._respond(ctx) if fast else self.full_dispatch_request()
            except Exception as e:
                error = e
                response = self.handle_exception(e)
            except:
                error = sys.exc_info()[1]
                raise
            return response(environ, start_response)
        finally:
            if "werkzeug.debug.preserve_context" in environ:
                environ["werkzeug.debug.preserve_context"](_cv_app.get())
                environ["werkzeug.debug.preserve_context"](_cv_request.get())
            if error is not None and self.should_ignore_error(error):
                error = None
            ctx.pop(error)

    def _freeze(self) -> bool:
        """Decide once whether requests may take :meth:`_respond` (no dispatch step overridden)."""
        cls = type(self)
        overridden = any(
            getattr(cls, name) is not getattr(Carboy, name) or name in self.__dict__
            for name in _DISPATCH_STEPS
        )
        self._fast = not overridden
        provider = self.json
        self._json_fast = type(provider) is DefaultJSONProvider and hasattr(provider, "_response_text")
        return self._fast

    def _plan(self, endpoint: str | None) -> _Plan:
        plan = self._plans.get(endpoint)
        if plan is None:
            plan = self._plans[endpoint] = self._make_plan(endpoint)
        return plan

    def _make_plan(self, endpoint: str | None) -> _Plan:
        blueprints: tuple[str, ...] = ()
        if endpoint is not None and "." in endpoint:
            blueprints = tuple(split_blueprint_path(endpoint.rpartition(".")[0]))
        outer_first = (None, *reversed(blueprints))
        inner_first = (*blueprints, None)
        sync = self.ensure_sync
        view = self.view_functions.get(endpoint) if endpoint is not None else None
        return _Plan(
            view=sync(view) if view is not None else None,
            url_value_preprocessors=tuple(
                f for n in outer_first for f in self.url_value_preprocessors.get(n, ())
            ),
            before=tuple(sync(f) for n in outer_first for f in self.before_request_funcs.get(n, ())),
            after=tuple(
                sync(f) for n in inner_first for f in reversed(self.after_request_funcs.get(n, ()))
            ),
            teardown=tuple(
                sync(f)
                for n in inner_first
                for f in reversed(self.teardown_request_funcs.get(n, ()))
            ),
        )

    @staticmethod
    def _endpoint(ctx: RequestContext) -> str | None:
        rule = ctx._request.url_rule if ctx._request is not None else ctx._rule
        return rule.endpoint if rule is not None else None  # type: ignore[no-any-return]

    def _respond(self, ctx: RequestContext) -> t.Any:
        """:meth:`full_dispatch_request` for an app that overrides none of its steps, writing
        plain text and JSON without a Response object when nothing would inspect one."""
        self._got_first_request = True
        plan = self._plan(self._endpoint(ctx))
        try:
            if signals.request_started.receivers:
                signals.request_started.send(self, _async_wrapper=self.ensure_sync)
            rv = None
            if plan.before or plan.url_value_preprocessors:
                rv = self.preprocess_request()
            if rv is None:
                view = plan.view
                if (
                    view is None
                    or ctx._request is not None
                    or ctx._routing_exception is not None
                    or ctx.environ["REQUEST_METHOD"] == "OPTIONS"
                ):
                    rv = self.dispatch_request()
                else:
                    rv = view(**t.cast(dict[str, t.Any], ctx._view_args))
        except Exception as e:
            return self.finalize_request(self.handle_user_exception(e))
        # PERF: a str or dict return with no after hooks, no session use and no request_finished
        # receivers is written directly: no Response, Headers or wrapper objects (~4 µs saved).
        if (
            not plan.after
            and ctx._session is None
            and not ctx._after_request_functions
            and not signals.request_finished.receivers
            and ctx.environ["REQUEST_METHOD"] != "HEAD"
            and self.response_class is Response
            and not self._session_refresh_due(ctx)
        ):
            cls = rv.__class__
            if cls is str:
                return _Body(rv.encode(), "text/html; charset=utf-8")
            if (cls is dict or cls is list) and self._json_fast:
                provider = t.cast(DefaultJSONProvider, self.json)
                return _Body(provider._response_text(rv).encode(), provider.mimetype)
        return self.finalize_request(rv)

    def full_dispatch_request(self) -> Response:
        """Run the before hooks and the view, handle errors, and finalize the response.

        Flask-compatible: ``flask.Flask.full_dispatch_request``.
        """
        self._got_first_request = True
        try:
            if signals.request_started.receivers:
                signals.request_started.send(self, _async_wrapper=self.ensure_sync)
            rv = self.preprocess_request()
            if rv is None:
                rv = self.dispatch_request()
        except Exception as e:
            rv = self.handle_user_exception(e)
        return self.finalize_request(rv)

    def preprocess_request(self) -> ft.ResponseReturnValue | None:
        """Run the URL value preprocessors, then the before-request functions (app first, then
        enclosing blueprints outward-in); return the first non-``None`` value.

        Flask-compatible: ``flask.Flask.preprocess_request``.
        """
        ctx = _cv_request.get()
        endpoint = self._endpoint(ctx)
        plan = self._plan(endpoint)
        if plan.url_value_preprocessors:
            view_args = ctx.request.view_args
            for func in plan.url_value_preprocessors:
                func(endpoint, view_args)
        for before in plan.before:
            rv = before()
            if rv is not None:
                return rv  # type: ignore[no-any-return]
        return None

    def dispatch_request(self) -> ft.ResponseReturnValue:
        """Call the matched view with its arguments, or raise the routing exception.

        Flask-compatible: ``flask.Flask.dispatch_request``.
        """
        ctx = _cv_request.get()
        req = ctx.request
        if req.routing_exception is not None:
            self.raise_routing_exception(req)
        rule = t.cast(Rule, req.url_rule)
        if getattr(rule, "provide_automatic_options", False) and req.method == "OPTIONS":
            return self.make_default_options_response()
        view = self._plan(rule.endpoint).view
        if view is None:
            view = self.ensure_sync(self.view_functions[rule.endpoint])
        return view(**t.cast(dict[str, t.Any], req.view_args))  # type: ignore[no-any-return]

    def raise_routing_exception(self, request: Request) -> t.NoReturn:
        """Raise the request's routing exception; in debug mode, explain a redirect that
        would drop a form body. Flask-compatible: ``flask.Flask.raise_routing_exception``."""
        exc = t.cast(HTTPException, request.routing_exception)
        if (
            not self.debug
            or not isinstance(exc, RequestRedirect)
            or exc.code in {307, 308}
            or request.method in {"GET", "HEAD", "OPTIONS"}
        ):
            raise exc
        from .debughelpers import FormDataRoutingRedirect

        raise FormDataRoutingRedirect(request)

    def make_default_options_response(self) -> Response:
        """The automatic OPTIONS response, with an ``Allow`` header."""
        adapter = t.cast(MapAdapter, _cv_request.get().url_adapter)
        rv = self.response_class()
        rv.allow.update(adapter.allowed_methods())
        return rv

    def finalize_request(
        self, rv: ft.ResponseReturnValue | HTTPException, from_error_handler: bool = False
    ) -> Response:
        """Turn *rv* into a response and run :meth:`process_response` on it.

        Flask-compatible: ``flask.Flask.finalize_request``. Errors while finalizing an error
        response are logged, not raised.
        """
        response = self.make_response(rv)
        try:
            response = self.process_response(response)
            if signals.request_finished.receivers:
                signals.request_finished.send(
                    self, _async_wrapper=self.ensure_sync, response=response
                )
        except Exception:
            if not from_error_handler:
                raise
            self.logger.exception("Finalizing the response failed while handling an error")
        return response

    def _session_refresh_due(self, ctx: RequestContext) -> bool:
        # An unopened session still needs saving when its cookie must be refreshed on every
        # request; open it then, as Flask (which opens every session) would have.
        cookie = ctx.environ.get("HTTP_COOKIE")
        return bool(
            cookie
            and self.config["SESSION_REFRESH_EACH_REQUEST"]
            and self.session_interface.get_cookie_name(self) in cookie
        )

    def process_response(self, response: Response) -> Response:
        """Run ``after_this_request`` functions, then the after-request functions (blueprints
        inward-out, each in reverse order), then save the session.

        Flask-compatible: ``flask.Flask.process_response``.
        """
        ctx = _cv_request.get()
        for func in ctx._after_request_functions:
            response = self.ensure_sync(func)(response)
        for after in self._plan(self._endpoint(ctx)).after:
            response = after(response)
        session = ctx._session
        if session is None and self._session_refresh_due(ctx):
            session = ctx.session
        if session is not None and not self.session_interface.is_null_session(session):
            self.session_interface.save_session(self, session, response)
        return response

    def make_response(self, rv: ft.ResponseReturnValue | HTTPException) -> Response:
        """Convert a view's return value to :attr:`response_class`.

        Flask-compatible: ``flask.Flask.make_response``. Accepts ``str``/``bytes`` (body),
        ``dict``/``list`` (JSON), iterators and generators (streamed), response objects, WSGI
        callables, and ``(body, status)``, ``(body, headers)``, ``(body, status, headers)``.

        :raises TypeError: for ``None``, a tuple of another shape, or any other type; the
            message names the view's endpoint and the type returned.
        """
        status: t.Any = None
        headers: t.Any = None
        if isinstance(rv, tuple):
            if len(rv) == 3:
                rv, status, headers = rv  # type: ignore[misc]
            elif len(rv) == 2:
                if isinstance(rv[1], Headers | dict | tuple | list):
                    rv, headers = rv
                else:
                    rv, status = rv  # type: ignore[assignment]
            else:
                raise TypeError(
                    f"The view function for {self._endpoint_name()!r} returned a tuple of"
                    f" {len(rv)} items. The tuple must have the form (body, status, headers),"
                    " (body, status) or (body, headers)."
                )
        if rv is None:
            raise TypeError(
                f"The view function for {self._endpoint_name()!r} did not return a valid"
                " response: it returned None (perhaps a missing return statement)."
            )
        if not isinstance(rv, self.response_class):
            if isinstance(rv, str | bytes | bytearray) or isinstance(rv, cabc.Iterator):
                rv = self.response_class(rv, status=status, headers=headers)  # type: ignore[arg-type]
                status = headers = None
            elif isinstance(rv, dict | list):
                rv = self.json.response(rv)
            elif isinstance(rv, BaseResponse) or callable(rv):
                try:
                    rv = self.response_class.force_type(
                        rv,  # type: ignore[arg-type]
                        _cv_request.get().environ,
                    )
                except TypeError as e:
                    raise TypeError(
                        f"{e}\nThe view function for {self._endpoint_name()!r} did not return a"
                        " valid response. It must return a string, dict, list, tuple with"
                        " headers or status, response object or WSGI callable, but it returned"
                        f" a {type(rv).__name__}."
                    ).with_traceback(sys.exc_info()[2]) from None
            else:
                raise TypeError(
                    f"The view function for {self._endpoint_name()!r} did not return a valid"
                    " response. It must return a string, dict, list, tuple with headers or"
                    " status, response object or WSGI callable, but it returned a"
                    f" {type(rv).__name__}."
                )
        response = t.cast(Response, rv)
        if status is not None:
            if isinstance(status, str | bytes | bytearray):
                response.status = status  # type: ignore[assignment]
            else:
                response.status_code = status
        if headers:
            response.headers.update(headers)
        return response

    def _endpoint_name(self) -> str | None:
        ctx = _cv_request.get(None)
        return self._endpoint(ctx) if ctx is not None else None

    # -- errors ------------------------------------------------------------------------------

    def _find_error_handler(
        self, e: Exception, blueprints: list[str]
    ) -> ft.ErrorHandlerCallable | None:
        """The handler for *e*: by code, then by class; blueprints (innermost first) before the
        app; for each, the most specific class in the exception's MRO."""
        exc_class, code = self._get_exc_class_and_code(type(e))
        names = (*blueprints, None)
        for c in (code, None) if code is not None else (None,):
            for name in names:
                handler_map = self.error_handler_spec[name][c]
                if not handler_map:
                    continue
                for cls in exc_class.__mro__:
                    handler = handler_map.get(cls)
                    if handler is not None:
                        return handler
        return None

    def trap_http_exception(self, e: Exception) -> bool:
        """Whether *e* should propagate like a non-HTTP error (``TRAP_HTTP_EXCEPTIONS``,
        ``TRAP_BAD_REQUEST_ERRORS``, or a missing form key in debug mode)."""
        if self.config["TRAP_HTTP_EXCEPTIONS"]:
            return True
        trap_bad_request = self.config["TRAP_BAD_REQUEST_ERRORS"]
        if trap_bad_request is None and self.debug and isinstance(e, BadRequestKeyError):
            return True
        if trap_bad_request:
            return isinstance(e, BadRequest)
        return False

    def should_ignore_error(self, error: BaseException | None) -> bool:
        """Whether teardown functions should see *error* as ``None``; ``False`` by default."""
        return False

    def handle_http_exception(
        self, e: HTTPException
    ) -> HTTPException | ft.ResponseReturnValue:
        """Answer an HTTP error with its registered handler, or with the error itself.

        Flask-compatible: ``flask.Flask.handle_http_exception``. Routing redirects and
        code-less exceptions are returned unchanged.
        """
        if e.code is None or isinstance(e, RoutingException):
            return e
        ctx = _cv_request.get()
        handler = self._find_error_handler(e, ctx.request.blueprints)
        if handler is None:
            return e
        return self.ensure_sync(handler)(e)  # type: ignore[no-any-return]

    def handle_user_exception(
        self, e: Exception
    ) -> HTTPException | ft.ResponseReturnValue:
        """Answer an exception raised by a hook or view with its registered handler.

        Flask-compatible: ``flask.Flask.handle_user_exception``.

        :raises Exception: *e* again when no handler is registered (and it is not an HTTP error).
        """
        if isinstance(e, BadRequestKeyError) and (
            self.debug or self.config["TRAP_BAD_REQUEST_ERRORS"]
        ):
            e.show_exception = True
        if isinstance(e, HTTPException) and not self.trap_http_exception(e):
            return self.handle_http_exception(e)
        ctx = _cv_request.get()
        handler = self._find_error_handler(e, ctx.request.blueprints)
        if handler is None:
            raise
        return self.ensure_sync(handler)(e)  # type: ignore[no-any-return]

    def handle_exception(self, e: Exception) -> Response:
        """Answer an unhandled exception: re-raise it when propagating (testing/debug or
        ``PROPAGATE_EXCEPTIONS``), else log it and answer 500 through the 500 handler.

        Flask-compatible: ``flask.Flask.handle_exception``.
        """
        exc_info = sys.exc_info()
        if signals.got_request_exception.receivers:
            signals.got_request_exception.send(self, _async_wrapper=self.ensure_sync, exception=e)
        propagate = self.config["PROPAGATE_EXCEPTIONS"]
        if propagate is None:
            propagate = self.testing or self.debug
        if propagate:
            if exc_info[1] is e:
                raise
            raise e
        self.log_exception(exc_info)
        server_error: InternalServerError | ft.ResponseReturnValue
        server_error = InternalServerError(original_exception=e)
        ctx = _cv_request.get(None)
        handler = self._find_error_handler(
            server_error, ctx.request.blueprints if ctx is not None else []
        )
        if handler is not None:
            server_error = self.ensure_sync(handler)(server_error)
        return self.finalize_request(server_error, from_error_handler=True)

    def log_exception(
        self,
        exc_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None],
    ) -> None:
        """Log an unhandled exception to :attr:`logger` at ERROR level."""
        ctx = _cv_request.get(None)
        where = f" on {ctx.request.path} [{ctx.request.method}]" if ctx is not None else ""
        self.logger.error(f"Exception{where}", exc_info=exc_info)

    # -- teardown ----------------------------------------------------------------------------

    def do_teardown_request(self, exc: BaseException | None = _sentinel) -> None:
        """Run the teardown-request functions (blueprints inward-out, each in reverse order).

        Flask-compatible: ``flask.Flask.do_teardown_request``.
        """
        if exc is _sentinel:
            exc = sys.exc_info()[1]
        ctx = _cv_request.get()
        for func in self._plan(self._endpoint(ctx)).teardown:
            func(exc)
        if signals.request_tearing_down.receivers:
            signals.request_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)

    def do_teardown_appcontext(self, exc: BaseException | None = _sentinel) -> None:
        """Run the teardown-appcontext functions in reverse order.

        Flask-compatible: ``flask.Flask.do_teardown_appcontext``.
        """
        if exc is _sentinel:
            exc = sys.exc_info()[1]
        for func in reversed(self.teardown_appcontext_funcs):
            self.ensure_sync(func)(exc)
        if signals.appcontext_tearing_down.receivers:
            signals.appcontext_tearing_down.send(self, _async_wrapper=self.ensure_sync, exc=exc)

    if t.TYPE_CHECKING:
        cli: Group
