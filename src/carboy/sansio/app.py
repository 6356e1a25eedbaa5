"""The app's set-up half: configuration, registries and registration, with no request I/O.

Flask-compatible: ``flask.sansio.app.App``. :class:`carboy.Carboy` adds the request path.
"""

from __future__ import annotations

import os
import sys
import typing as t
import weakref
from datetime import timedelta
from functools import cached_property
from itertools import chain

from werkzeug.datastructures import ImmutableDict
from werkzeug.exceptions import Aborter, BadRequest, BadRequestKeyError
from werkzeug.routing import BuildError, MapAdapter, Rule
from werkzeug.utils import redirect as _wz_redirect
from werkzeug.wrappers import Response as BaseResponse

from .. import typing as ft
from ..config import DEFAULT_CONFIG, Config, ConfigAttribute
from ..ctx import _AppCtxGlobals
from ..globals import _cv_app_get, _cv_request_get, g
from ..helpers import get_debug_flag, get_load_dotenv
from ..json.provider import DefaultJSONProvider, JSONProvider
from ..logging import create_logger
from ..routing import Map
from ..scaffold import (
    Scaffold,
    T_filter,
    T_global,
    T_serving,
    T_shell,
    T_teardown,
    T_test,
    _endpoint_from_view_func,
    find_instance_path,
    setupmethod,
)
from ..sessions import SecureCookieSessionInterface, SessionInterface
from ..templating import Environment, select_jinja_autoescape
from ..watched import WatchedDict
from ..wrappers import (
    GOOD_HOSTS,
    Request,
    Response,
    bad_host,
    host_is_valid,
    split_blueprint_path,
)

if t.TYPE_CHECKING:
    from click import Group

    from ..app import Carboy
    from ..blueprints import Blueprint
    from ..routing import Router
    from ..testing import CarboyClient, CarboyCliRunner


#: Characters left as they are in a URL fragment built by ``url_for(_anchor=...)``.
_ANCHOR_SAFE = "%!#$&'()*+,/:;=?@"


#: The hook registries an endpoint's plan is gathered from (``view_functions`` too).
_PLANNED_REGISTRIES = (
    "before_request_funcs",
    "after_request_funcs",
    "teardown_request_funcs",
    "url_value_preprocessors",
    "before_websocket_funcs",
)


def _make_timedelta(value: timedelta | int) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=value)


class App(Scaffold):
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
        self.json: JSONProvider = self.json_provider_class(self._as_carboy)
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
        self._plans: dict[str | None, t.Any] = {}
        # The registries plans are gathered from drop the plans when they change, even when
        # edited directly rather than through the decorators (see carboy.watched).
        for name in _PLANNED_REGISTRIES:
            registry: WatchedDict[t.Any, t.Any] = WatchedDict(self._plans.clear, lists=True)
            registry.update(getattr(self, name))
            setattr(self, name, registry)
        views: WatchedDict[str, t.Any] = WatchedDict(self._plans.clear)
        views.update(self.view_functions)
        self.view_functions = views
        self._router: Router | None = None
        self._own_adapter = False
        self._fast: bool | None = None
        self._json_fast = False
        self._asgi_native = True
        self._plain_request_context = False
        self._plain_app_context = False
        self._cookie_sessions = True
        self._plain_teardown = True
        self._bare = False
        self._bare_asgi = False
        #: Functions run once per worker before it serves (sync or ``async def``).
        #:
        #: .. versionadded:: 0.1
        self.before_serving_funcs: list[t.Callable[[], t.Any]] = []
        #: Functions run once per worker when it stops serving (sync or ``async def``).
        #:
        #: .. versionadded:: 0.1
        self.after_serving_funcs: list[t.Callable[[], t.Any]] = []
        self._sync_pool: t.Any = None
        self._lifespan: t.Any = None
        self._wsgi_ready = False

        from ..templating import _default_template_ctx_processor

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
        self._router = None
        self._fast = None
        self._bare = self._bare_asgi = False

    @property
    def _as_carboy(self) -> Carboy:
        # Only carboy.Carboy is ever instantiated; this names that fact for the type checker.
        return t.cast("Carboy", self)

    @cached_property
    def name(self) -> str:  # type: ignore[override]
        """The app's name: the import name, or the script's name for ``__main__``."""
        if self.import_name == "__main__":
            path: str | None = getattr(sys.modules["__main__"], "__file__", None)
            if path is None:
                return "__main__"
            return os.path.splitext(os.path.basename(path))[0]
        return self.import_name

    @cached_property
    def logger(self) -> t.Any:
        """The ``logging.Logger`` named after the app. Flask-compatible: ``flask.Flask.logger``."""
        return create_logger(self._as_carboy)

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
            return open(path, mode)
        return open(path, mode, encoding=encoding)

    def create_jinja_environment(self) -> Environment:
        """Create :attr:`jinja_env` from ``jinja_options`` and the app's globals."""
        from ..templating import create_jinja_environment

        return create_jinja_environment(self._as_carboy)

    def create_global_jinja_loader(self) -> t.Any:
        """The loader that searches the app's templates, then each blueprint's."""
        from ..templating import DispatchingJinjaLoader

        return DispatchingJinjaLoader(self._as_carboy)

    def select_jinja_autoescape(self, filename: str | None) -> bool:
        """Autoescape for ``None`` (string templates) and ``.html .htm .xml .xhtml .svg``;
        override to change the rule. Flask-compatible: ``flask.Flask.select_jinja_autoescape``.
        """
        return select_jinja_autoescape(filename)

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
        blueprint.register(self._as_carboy, options)

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
    def before_serving(self, f: T_serving) -> T_serving:
        """Run *f()* (sync or ``async def``) once per worker, in an app context, before the
        worker serves its first request: at ASGI lifespan startup, or under WSGI before the
        first request (see ``docs/asgi.md``). If it raises, the worker stops with a message
        naming the function.

        .. versionadded:: 0.1
        """
        self.before_serving_funcs.append(f)
        return f

    @setupmethod
    def after_serving(self, f: T_serving) -> T_serving:
        """Run *f()* (sync or ``async def``) once per worker, in an app context, when it stops:
        at ASGI lifespan shutdown, or under WSGI when the worker process exits.

        .. versionadded:: 0.1
        """
        self.after_serving_funcs.append(f)
        return f

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

    def test_client(self, use_cookies: bool = True, **kwargs: t.Any) -> CarboyClient:
        """A test client for the app. Flask-compatible: ``flask.Flask.test_client``."""
        from ..testing import CarboyClient

        cls = self.test_client_class or CarboyClient
        return cls(self._as_carboy, self.response_class, use_cookies=use_cookies, **kwargs)

    def test_cli_runner(self, **kwargs: t.Any) -> CarboyCliRunner:
        """A CLI runner for the app's commands.

        Flask-compatible: ``flask.Flask.test_cli_runner``.
        """
        from ..testing import CarboyCliRunner

        cls = self.test_cli_runner_class or CarboyCliRunner
        return cls(self._as_carboy, **kwargs)

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
            from ..cli import load_dotenv as _load_dotenv

            _load_dotenv()
            if "FLASK_DEBUG" in os.environ or "CARBOY_DEBUG" in os.environ:
                self.debug = get_debug_flag()
        if debug is not None:
            self.debug = bool(debug)
        server_name = self.config.get("SERVER_NAME")
        sn_host, _, sn_port = (server_name or "").partition(":")
        host = host or sn_host or "127.0.0.1"
        if port is None:
            port = int(sn_port) if sn_port else 5000
        options.setdefault("use_reloader", self.debug)
        options.setdefault("use_debugger", self.debug)
        options.setdefault("threaded", True)
        from werkzeug.serving import run_simple

        try:
            run_simple(host, port, self._as_carboy, **options)
        finally:
            self._got_first_request = False

    # -- errors ------------------------------------------------------------------------------

    # -- URL building ---------------------------------------------------------------------

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        """Bind :attr:`url_map` to *request*, or to ``SERVER_NAME`` outside a request.

        Flask-compatible: ``flask.Flask.create_url_adapter``.

        :raises werkzeug.exceptions.BadHost: (400) when the ``Host`` header names no host.
        :raises werkzeug.exceptions.SecurityError: (400) when the host is not in
            ``TRUSTED_HOSTS``.
        """
        if request is not None:
            host = request.environ.get("HTTP_HOST")
            if host not in GOOD_HOSTS and not host_is_valid(host):
                raise bad_host()
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
        /,
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
        req_ctx = _cv_request_get(None)
        if req_ctx is not None:
            url_adapter = req_ctx.url_adapter
            blueprint = req_ctx.request.blueprint
            if endpoint[:1] == ".":
                endpoint = f"{blueprint}{endpoint}" if blueprint is not None else endpoint[1:]
            if _external is None:
                _external = _scheme is not None
        else:
            app_ctx = _cv_app_get(None)
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

    if t.TYPE_CHECKING:
        cli: Group
