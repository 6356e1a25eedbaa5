"""The registration API shared by the app and blueprints.

Flask-compatible: ``flask.sansio.scaffold.Scaffold``. Everything here only records callables in
dicts keyed by blueprint name (``None`` for the app); the app turns those records into per-endpoint
plans at request time, so nothing here is on the request path.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import pathlib
import sys
import typing as t
from collections import defaultdict
from functools import cached_property, update_wrapper

from jinja2 import BaseLoader, FileSystemLoader
from werkzeug.exceptions import HTTPException, default_exceptions

from . import typing as ft
from .files import get_send_file_max_age as _file_max_age
from .files import send_from_directory
from .globals import current_app

if t.TYPE_CHECKING:
    from click import Group

    from .wrappers import Response

F = t.TypeVar("F", bound=t.Callable[..., t.Any])
T_after = t.TypeVar("T_after", bound=ft.AfterRequestCallable[t.Any])
T_before = t.TypeVar("T_before", bound=ft.BeforeRequestCallable)
T_error = t.TypeVar("T_error", bound=ft.ErrorHandlerCallable)
T_teardown = t.TypeVar("T_teardown", bound=ft.TeardownCallable)
T_ctx = t.TypeVar("T_ctx", bound=ft.TemplateContextProcessorCallable)
T_url_defaults = t.TypeVar("T_url_defaults", bound=ft.URLDefaultCallable)
T_url_pre = t.TypeVar("T_url_pre", bound=ft.URLValuePreprocessorCallable)
T_route = t.TypeVar("T_route", bound=ft.RouteCallable)
T_filter = t.TypeVar("T_filter", bound=ft.TemplateFilterCallable)
T_global = t.TypeVar("T_global", bound=ft.TemplateGlobalCallable)
T_test = t.TypeVar("T_test", bound=ft.TemplateTestCallable)
T_shell = t.TypeVar("T_shell", bound=ft.ShellContextProcessorCallable)
T_serving = t.TypeVar("T_serving", bound=t.Callable[[], t.Any])

#: ``error_handler_spec[scope][code or None][exception class] = handler``
ErrorHandlerSpec = dict[
    "str | None", dict["int | None", dict[type[BaseException], ft.ErrorHandlerCallable]]
]

_sentinel = object()


def setupmethod(f: F) -> F:
    """Mark a registration method: it raises once setup is finished and drops cached plans."""
    name = f.__name__

    def wrapper(self: Scaffold, *args: t.Any, **kwargs: t.Any) -> t.Any:
        self._check_setup_finished(name)
        return f(self, *args, **kwargs)

    return update_wrapper(wrapper, f)  # type: ignore[return-value]


def get_root_path(import_name: str) -> str:
    """The folder of the module or package *import_name*; the working directory as a fallback.

    Flask-compatible: ``flask.helpers.get_root_path``.

    :raises RuntimeError: for a namespace package, which has no single folder.
    """
    module = sys.modules.get(import_name)
    if module is not None and getattr(module, "__file__", None):
        return os.path.dirname(os.path.abspath(t.cast(str, module.__file__)))
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin in (None, "namespace"):
        if import_name == "__main__" or spec is None:
            return os.getcwd()
        raise RuntimeError(
            f"No root path can be found for {import_name!r}: it is a namespace package."
            " Pass 'root_path' explicitly."
        )
    return os.path.dirname(os.path.abspath(spec.origin))


def _endpoint_from_view_func(view_func: t.Callable[..., t.Any]) -> str:
    if view_func is None:
        raise TypeError("An endpoint name is required when no view function is given.")
    return view_func.__name__


class Scaffold:
    """What app and blueprints share: routes, hooks, error handlers, static and template folders.

    Flask-compatible: ``flask.sansio.scaffold.Scaffold``.

    :param import_name: the module or package name, used to find ``root_path``.
    :param static_folder: the static files folder, relative to ``root_path``, or ``None``.
    :param static_url_path: the URL prefix for static files; defaults to ``/<folder name>``.
    :param template_folder: the templates folder, relative to ``root_path``, or ``None``.
    :param root_path: overrides the folder found from *import_name*.
    """

    name: str
    _static_folder: str | None = None
    _static_url_path: str | None = None

    def __init__(
        self,
        import_name: str,
        static_folder: str | os.PathLike[str] | None = None,
        static_url_path: str | None = None,
        template_folder: str | os.PathLike[str] | None = None,
        root_path: str | None = None,
    ) -> None:
        #: The module or package name this object belongs to.
        self.import_name = import_name
        self.static_folder = static_folder
        self.static_url_path = static_url_path
        #: The templates folder relative to :attr:`root_path`, or ``None``.
        self.template_folder = template_folder
        if root_path is None:
            root_path = get_root_path(self.import_name)
        #: Absolute folder of the module; relative paths are resolved against it.
        self.root_path = root_path
        #: Endpoint name → view function.
        self.view_functions: dict[str, ft.RouteCallable] = {}
        #: Scope (``None`` = app) → code (``None`` = any) → exception class → handler.
        self.error_handler_spec: ErrorHandlerSpec = defaultdict(lambda: defaultdict(dict))
        #: Scope → functions run before each request.
        self.before_request_funcs: dict[ft.AppOrBlueprintKey, list[ft.BeforeRequestCallable]] = (
            defaultdict(list)
        )
        #: Scope → functions run after each request, given and returning the response.
        self.after_request_funcs: dict[
            ft.AppOrBlueprintKey, list[ft.AfterRequestCallable[t.Any]]
        ] = defaultdict(list)
        #: Scope → functions run at the end of each request, given the unhandled error or None.
        self.teardown_request_funcs: dict[ft.AppOrBlueprintKey, list[ft.TeardownCallable]] = (
            defaultdict(list)
        )
        #: Scope → functions returning extra template context.
        self.template_context_processors: dict[
            ft.AppOrBlueprintKey, list[ft.TemplateContextProcessorCallable]
        ] = defaultdict(list)
        #: Scope → functions that may change the matched view arguments.
        self.url_value_preprocessors: dict[
            ft.AppOrBlueprintKey, list[ft.URLValuePreprocessorCallable]
        ] = defaultdict(list)
        #: Scope → functions run before a WebSocket handshake is accepted.
        #:
        #: .. versionadded:: 0.1
        self.before_websocket_funcs: dict[ft.AppOrBlueprintKey, list[ft.BeforeRequestCallable]] = (
            defaultdict(list)
        )
        #: Scope → functions that may add values when building URLs.
        self.url_default_functions: dict[ft.AppOrBlueprintKey, list[ft.URLDefaultCallable]] = (
            defaultdict(list)
        )
        from .cli import AppGroup

        #: Click group for this object's CLI commands.
        self.cli: Group = AppGroup()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _check_setup_finished(self, f_name: str) -> None:
        raise NotImplementedError

    # -- static files and templates ------------------------------------------------------

    @property
    def static_folder(self) -> str | None:
        """Absolute path of the static folder, or ``None``."""
        if self._static_folder is not None:
            return os.path.join(self.root_path, self._static_folder)
        return None

    @static_folder.setter
    def static_folder(self, value: str | os.PathLike[str] | None) -> None:
        if value is not None:
            value = os.fspath(value).rstrip(r"\/")
        self._static_folder = value

    @property
    def has_static_folder(self) -> bool:
        """Whether a static folder is set."""
        return self.static_folder is not None

    @property
    def static_url_path(self) -> str | None:
        """URL prefix of the static route; ``/<static folder name>`` unless set."""
        if self._static_url_path is not None:
            return self._static_url_path
        if self.static_folder is not None:
            basename = os.path.basename(self.static_folder)
            return f"/{basename}".rstrip("/")
        return None

    @static_url_path.setter
    def static_url_path(self, value: str | None) -> None:
        if value is not None:
            value = value.rstrip("/")
        self._static_url_path = value

    @cached_property
    def jinja_loader(self) -> BaseLoader | None:
        """A file-system loader for :attr:`template_folder`, or ``None``."""
        if self.template_folder is not None:
            return FileSystemLoader(os.path.join(self.root_path, self.template_folder))
        return None

    def open_resource(
        self, resource: str, mode: str = "rb", encoding: str | None = None
    ) -> t.IO[t.Any]:
        """Open *resource*, a path relative to :attr:`root_path`, for reading.

        Flask-compatible: ``flask.Flask.open_resource``.

        :param mode: ``"r"``, ``"rt"`` or ``"rb"``.
        :raises ValueError: for a writing mode.
        """
        if mode not in {"r", "rt", "rb"}:
            raise ValueError("Resources can only be opened for reading ('r', 'rt' or 'rb').")
        path = os.path.join(self.root_path, resource)
        if mode == "rb":
            return open(path, mode)
        return open(path, mode, encoding=encoding)

    def send_static_file(self, filename: str) -> Response:
        """Serve *filename* from :attr:`static_folder` (the ``static`` endpoint's view).

        Flask-compatible: ``flask.Flask.send_static_file``.

        :raises RuntimeError: when no static folder is set.
        :raises werkzeug.exceptions.NotFound: for a missing file or one outside the folder.
        """
        if not self.has_static_folder:
            raise RuntimeError("'static_folder' must be set to serve static files.")
        max_age = self.get_send_file_max_age(filename)
        return send_from_directory(t.cast(str, self.static_folder), filename, max_age=max_age)

    def get_send_file_max_age(self, filename: str | None) -> int | None:
        """Cache max-age in seconds for a file; ``SEND_FILE_MAX_AGE_DEFAULT`` by default."""
        return _file_max_age(current_app, filename)

    # -- routes ------------------------------------------------------------------------

    def _method_route(
        self, method: str, rule: str, options: dict[str, t.Any]
    ) -> t.Callable[[T_route], T_route]:
        if "methods" in options:
            raise TypeError("Use the 'route' decorator to give 'methods'.")
        return self.route(rule, methods=[method], **options)

    @setupmethod
    def get(self, rule: str, **options: t.Any) -> t.Callable[[T_route], T_route]:
        """``route(rule, methods=["GET"], **options)``. Flask-compatible: ``flask.Flask.get``."""
        return self._method_route("GET", rule, options)

    @setupmethod
    def post(self, rule: str, **options: t.Any) -> t.Callable[[T_route], T_route]:
        """``route(rule, methods=["POST"], **options)``. Flask-compatible: ``flask.Flask.post``."""
        return self._method_route("POST", rule, options)

    @setupmethod
    def put(self, rule: str, **options: t.Any) -> t.Callable[[T_route], T_route]:
        """``route(rule, methods=["PUT"], **options)``. Flask-compatible: ``flask.Flask.put``."""
        return self._method_route("PUT", rule, options)

    @setupmethod
    def delete(self, rule: str, **options: t.Any) -> t.Callable[[T_route], T_route]:
        """``route(rule, methods=["DELETE"])``. Flask-compatible: ``flask.Flask.delete``."""
        return self._method_route("DELETE", rule, options)

    @setupmethod
    def patch(self, rule: str, **options: t.Any) -> t.Callable[[T_route], T_route]:
        """``route(rule, methods=["PATCH"])``. Flask-compatible: ``flask.Flask.patch``."""
        return self._method_route("PATCH", rule, options)

    @setupmethod
    def route(self, rule: str, **options: t.Any) -> t.Callable[[T_route], T_route]:
        """Register the decorated view function for URL *rule*.

        Flask-compatible: ``flask.Flask.route``.

        :param rule: URL rule, e.g. ``"/user/<int:id>"``.
        :param options: ``endpoint``, ``methods`` and the other arguments of
            :meth:`add_url_rule` / :class:`werkzeug.routing.Rule`.
        """

        def decorator(f: T_route) -> T_route:
            endpoint = options.pop("endpoint", None)
            self.add_url_rule(rule, endpoint, f, **options)
            return f

        return decorator

    @setupmethod
    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: ft.RouteCallable | None = None,
        provide_automatic_options: bool | None = None,
        **options: t.Any,
    ) -> None:
        """Register a rule; see :meth:`carboy.Carboy.add_url_rule`."""
        raise NotImplementedError

    @setupmethod
    def websocket(self, rule: str, **options: t.Any) -> t.Callable[[T_route], T_route]:
        """Register the decorated ``async def`` function as the WebSocket handler for *rule*.

        The rule takes the same syntax, converters and options as :meth:`route`, and
        :func:`carboy.url_for` builds its URL. The handler receives the rule's arguments and
        talks to the client through :data:`carboy.websocket`; it is served under ASGI only.
        Returning a response value before ``websocket.accept()`` rejects the handshake with
        that response.

        :param rule: URL rule, e.g. ``"/ws/<room>"``.
        :param options: ``endpoint`` and the other arguments of :meth:`add_url_rule`.
        :raises TypeError: when the handler is not a coroutine function.

        .. versionadded:: 0.1
        """

        def decorator(f: T_route) -> T_route:
            handler: t.Any = f
            if not inspect.iscoroutinefunction(handler):
                raise TypeError(
                    f"WebSocket handler {getattr(f, '__name__', f)!r} must be an 'async def'"
                    " function: it awaits websocket.receive() and websocket.send()."
                )
            endpoint = options.pop("endpoint", None)
            self.add_url_rule(rule, endpoint, f, websocket=True, **options)
            return f

        return decorator

    @setupmethod
    def endpoint(self, endpoint: str) -> t.Callable[[F], F]:
        """Register the decorated function as the view for *endpoint*.

        Flask-compatible: ``flask.Flask.endpoint``.
        """

        def decorator(f: F) -> F:
            self.view_functions[endpoint] = f
            return f

        return decorator

    # -- hooks -------------------------------------------------------------------------

    @setupmethod
    def before_request(self, f: T_before) -> T_before:
        """Run *f()* before each request; a non-``None`` return is the response.

        Flask-compatible: ``flask.Flask.before_request``. On a blueprint, only for its requests.
        """
        self.before_request_funcs.setdefault(None, []).append(f)
        return f

    @setupmethod
    def before_websocket(self, f: T_before) -> T_before:
        """Run *f()* before each WebSocket handshake is accepted; a non-``None`` return (or
        :func:`carboy.abort`) rejects the handshake with that response, e.g. ``("", 403)``.

        On a blueprint, only for its WebSocket routes. ``before_request`` functions do not
        run for WebSockets.

        .. versionadded:: 0.1
        """
        self.before_websocket_funcs.setdefault(None, []).append(f)
        return f

    @setupmethod
    def after_request(self, f: T_after) -> T_after:
        """Run *f(response)* after each request; it must return a response object.

        Flask-compatible: ``flask.Flask.after_request``. Runs in reverse registration order.
        """
        self.after_request_funcs.setdefault(None, []).append(f)
        return f

    @setupmethod
    def teardown_request(self, f: T_teardown) -> T_teardown:
        """Run *f(error)* when the request context pops, even after an unhandled error.

        Flask-compatible: ``flask.Flask.teardown_request``. Its return value is ignored.
        """
        self.teardown_request_funcs.setdefault(None, []).append(f)
        return f

    @setupmethod
    def context_processor(self, f: T_ctx) -> T_ctx:
        """Register *f()*, returning a dict merged into every template's context.

        Flask-compatible: ``flask.Flask.context_processor``.
        """
        self.template_context_processors[None].append(f)
        return f

    @setupmethod
    def url_value_preprocessor(self, f: T_url_pre) -> T_url_pre:
        """Run *f(endpoint, view_args)* after matching, before ``before_request`` functions.

        Flask-compatible: ``flask.Flask.url_value_preprocessor``.
        """
        self.url_value_preprocessors[None].append(f)
        return f

    @setupmethod
    def url_defaults(self, f: T_url_defaults) -> T_url_defaults:
        """Run *f(endpoint, values)* when building URLs; it may add values in place.

        Flask-compatible: ``flask.Flask.url_defaults``.
        """
        self.url_default_functions[None].append(f)
        return f

    # -- errors ------------------------------------------------------------------------

    @setupmethod
    def errorhandler(
        self, code_or_exception: type[Exception] | int
    ) -> t.Callable[[T_error], T_error]:
        """Register the decorated function to handle an HTTP status code or exception class.

        Flask-compatible: ``flask.Flask.errorhandler``.

        :raises ValueError: for a status code Werkzeug has no exception for, or an exception
            instance instead of a class.
        """

        def decorator(f: T_error) -> T_error:
            self.register_error_handler(code_or_exception, f)
            return f

        return decorator

    @setupmethod
    def register_error_handler(
        self, code_or_exception: type[Exception] | int, f: ft.ErrorHandlerCallable
    ) -> None:
        """The non-decorator form of :meth:`errorhandler`.

        Flask-compatible: ``flask.Flask.register_error_handler``.
        """
        exc_class, code = self._get_exc_class_and_code(code_or_exception)
        self.error_handler_spec[None][code][exc_class] = f

    @staticmethod
    def _get_exc_class_and_code(
        exc_class_or_code: type[Exception] | int,
    ) -> tuple[type[Exception], int | None]:
        exc_class: type[Exception]
        if isinstance(exc_class_or_code, int):
            try:
                exc_class = default_exceptions[exc_class_or_code]
            except KeyError:
                raise ValueError(
                    f"'{exc_class_or_code}' is not a recognized HTTP error code. Use a"
                    " subclass of HTTPException with that code instead."
                ) from None
        else:
            exc_class = exc_class_or_code
        if isinstance(exc_class, Exception):
            raise TypeError(
                f"{exc_class!r} is an instance, not a class. Handlers can only be"
                " registered for exception classes or HTTP error codes."
            )
        if not isinstance(exc_class, type) or not issubclass(exc_class, Exception):
            raise ValueError(
                f"'{exc_class.__name__}' is not a subclass of Exception. Handlers can only be"
                " registered for exception classes or HTTP error codes."
            )
        if issubclass(exc_class, HTTPException):
            return exc_class, exc_class.code
        return exc_class, None


def _find_package_path(import_name: str) -> str:
    """The folder that contains the top-level package or module of *import_name*."""
    root_mod_name = import_name.partition(".")[0]
    try:
        spec = importlib.util.find_spec(root_mod_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return os.getcwd()
    if spec.submodule_search_locations:
        if spec.origin in (None, "namespace"):
            # A namespace package spans folders; the import name's own folder tells which one,
            # and the folder holding the namespace is one level up per dotted part.
            own = importlib.util.find_spec(import_name)
            if own is None:
                return os.getcwd()
            if own.submodule_search_locations:
                path, levels = next(iter(own.submodule_search_locations)), import_name.count(".")
            else:
                path, levels = os.path.dirname(str(own.origin)), import_name.count(".") - 1
            for _ in range(levels + 1):
                path = os.path.dirname(path)
            return path
        return os.path.dirname(os.path.dirname(str(spec.origin)))
    return os.path.dirname(str(spec.origin))


def find_instance_path(import_name: str, app_name: str) -> str:
    """Flask's instance-folder rule: ``<package parent>/instance``; for a package installed
    under ``sys.prefix``, ``<prefix>/var/<app name>-instance``."""
    package_path = _find_package_path(import_name)
    prefix = os.path.abspath(sys.prefix)
    if pathlib.PurePath(package_path).is_relative_to(prefix):
        return os.path.join(prefix, "var", f"{app_name}-instance")
    return os.path.join(package_path, "instance")
