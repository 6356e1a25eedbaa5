"""The ``carboy`` command line: app discovery, the command groups and the built-in commands.

Flask-compatible: ``flask.cli``. ``carboy run``, ``carboy shell`` and ``carboy routes`` behave as
their ``flask`` counterparts. The app is named with ``--app`` (or ``CARBOY_APP``, then
``FLASK_APP``) or found in ``wsgi.py`` / ``app.py`` of the working directory. Environment
variables for options may use the ``CARBOY_`` or the ``FLASK_`` prefix; ``CARBOY_`` wins when
both are set. Commands added by an application (or a plugin) read ``FLASK_<COMMAND>_<OPTION>``
through click's ``auto_envvar_prefix``, as under Flask.
"""

from __future__ import annotations

import collections.abc as cabc
import importlib
import importlib.metadata
import os
import platform
import re
import sys
import traceback
import typing as t
from functools import update_wrapper
from operator import itemgetter

import click
from click.core import ParameterSource
from werkzeug.utils import import_string

from .discovery import (
    NoAppException,
    find_app_by_string,
    find_best_app,
    locate_app,
    prepare_import,
)
from .globals import current_app
from .helpers import get_debug_flag, get_load_dotenv

if t.TYPE_CHECKING:
    import ssl

    from .app import Carboy

__all__ = [
    "AppGroup",
    "CarboyGroup",
    "CertParamType",
    "FlaskGroup",
    "NoAppException",
    "ScriptInfo",
    "SeparatedPathType",
    "find_app_by_string",
    "find_best_app",
    "get_version",
    "load_dotenv",
    "locate_app",
    "main",
    "pass_script_info",
    "prepare_import",
    "routes_command",
    "run_command",
    "shell_command",
    "show_server_banner",
    "with_appcontext",
]

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

if t.TYPE_CHECKING:
    _ParamTypeBase = click.ParamType[t.Any]
else:
    # click.ParamType is generic only from click 8.4 on.
    _ParamTypeBase = click.ParamType

#: Entry-point groups whose commands are added to :class:`CarboyGroup`; later groups win.
_PLUGIN_GROUPS = ("flask.commands", "carboy.commands")


def _envvars(name: str) -> list[str]:
    """The environment variables for setting *name*, carboy's first."""
    return [f"CARBOY_{name}", f"FLASK_{name}"]


def get_version(ctx: click.Context, param: click.Parameter, value: t.Any) -> None:
    """Click callback of ``--version``: print the Python, carboy and Werkzeug versions, exit.

    Flask-compatible: ``flask.cli.get_version``.
    """
    if not value or ctx.resilient_parsing:
        return

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    click.echo(
        f"Python {platform.python_version()}\n"
        f"Carboy {version('carboy')}\n"
        f"Werkzeug {version('werkzeug')}",
        color=ctx.color,
    )
    ctx.exit()


version_option = click.Option(
    ["--version"],
    help="Show the carboy version.",
    expose_value=False,
    callback=get_version,
    is_flag=True,
    is_eager=True,
)


class ScriptInfo:
    """How the CLI loads the application; passed to commands as the click context's ``obj``.

    Flask-compatible: ``flask.cli.ScriptInfo``.

    :param app_import_path: ``module:name`` or a file path naming the app (see ``--app``).
    :param create_app: a callable returning the app; overrides *app_import_path*.
    :param set_debug_flag: set ``app.debug`` from ``CARBOY_DEBUG``/``FLASK_DEBUG`` on load.
    :param load_dotenv_defaults: load ``.env`` and ``.flaskenv`` when the CLI starts (unless
        ``CARBOY_SKIP_DOTENV``/``FLASK_SKIP_DOTENV`` says not to).
    """

    def __init__(
        self,
        app_import_path: str | None = None,
        create_app: t.Callable[..., Carboy] | None = None,
        set_debug_flag: bool = True,
        load_dotenv_defaults: bool = True,
    ) -> None:
        #: Where the app is imported from, if given.
        self.app_import_path = app_import_path
        #: A callable returning the app, if given.
        self.create_app = create_app
        #: Arbitrary data for commands and extensions.
        self.data: dict[t.Any, t.Any] = {}
        self.set_debug_flag = set_debug_flag
        #: Whether the default dotenv files are loaded.
        self.load_dotenv_defaults = get_load_dotenv(load_dotenv_defaults)
        self._loaded_app: Carboy | None = None

    def load_app(self) -> Carboy:
        """Load the application once and return it (the same object on later calls).

        :raises NoAppException: when no application can be found or imported.
        """
        if self._loaded_app is not None:
            return self._loaded_app

        app: Carboy | None = None
        if self.create_app is not None:
            app = self.create_app()
        elif self.app_import_path:
            # Split at the first colon that does not start a Windows path ("C:\...").
            path, *rest = re.split(r":(?![\\/])", self.app_import_path, maxsplit=1)
            app = locate_app(prepare_import(path), rest[0] if rest else None)
        else:
            for candidate in ("wsgi.py", "app.py"):
                app = locate_app(prepare_import(candidate), None, raise_if_not_found=False)
                if app is not None:
                    break

        if app is None:
            raise NoAppException(
                "Could not locate a Carboy application. Use the 'carboy --app' option, the"
                " 'CARBOY_APP' or 'FLASK_APP' environment variable, or a 'wsgi.py' or"
                " 'app.py' file in the current directory."
            )
        if self.set_debug_flag:
            # Through the property, so settings derived from DEBUG follow.
            app.debug = get_debug_flag()
        self._loaded_app = app
        return app


#: Decorator passing the :class:`ScriptInfo` as a command's first argument.
#: Flask-compatible: ``flask.cli.pass_script_info``.
pass_script_info = click.make_pass_decorator(ScriptInfo, ensure=True)


def with_appcontext(f: F) -> F:
    """Run the decorated click callback inside the app's context, loading the app if needed.

    Flask-compatible: ``flask.cli.with_appcontext``. Nothing is pushed when an app context
    is already active. Commands made with :meth:`AppGroup.command` get this automatically.

    :param f: the command callback.
    :raises NoAppException: (when the command runs) if the app cannot be loaded.
    """

    @click.pass_context
    def wrapper(ctx: click.Context, /, *args: t.Any, **kwargs: t.Any) -> t.Any:
        if not current_app:
            app = ctx.ensure_object(ScriptInfo).load_app()
            ctx.with_resource(app.app_context())
        return ctx.invoke(f, *args, **kwargs)

    return update_wrapper(wrapper, f)  # type: ignore[return-value]


class AppGroup(click.Group):
    """A :class:`click.Group` whose commands run in the app context by default.

    Flask-compatible: ``flask.cli.AppGroup``; ``app.cli`` and ``blueprint.cli`` are AppGroups.
    Pass ``with_appcontext=False`` to :meth:`command` for a command that must not load the app.
    """

    @t.overload
    def command(self, __func: t.Callable[..., t.Any]) -> click.Command: ...

    @t.overload
    def command(
        self, *args: t.Any, **kwargs: t.Any
    ) -> t.Callable[[t.Callable[..., t.Any]], click.Command]: ...

    def command(
        self, *args: t.Any, **kwargs: t.Any
    ) -> t.Callable[[t.Callable[..., t.Any]], click.Command] | click.Command:
        """Register the decorated function as a command of this group.

        Takes the arguments of :meth:`click.Group.command`, plus ``with_appcontext`` (default
        ``True``) to wrap the callback in :func:`with_appcontext`. Usable with or without
        parentheses.

        :raises TypeError: when called with a function and other arguments.
        """
        wrap = kwargs.pop("with_appcontext", True)
        func = _bare_decorator_target(args, kwargs, "command")
        if func is not None:
            args = ()

        def decorator(f: t.Callable[..., t.Any]) -> click.Command:
            if wrap:
                f = with_appcontext(f)
            make = t.cast(
                t.Callable[[t.Callable[..., t.Any]], click.Command],
                super(AppGroup, self).command(*args, **kwargs),
            )
            return make(f)

        return decorator(func) if func is not None else decorator

    @t.overload
    def group(self, __func: t.Callable[..., t.Any]) -> click.Group: ...

    @t.overload
    def group(
        self, *args: t.Any, **kwargs: t.Any
    ) -> t.Callable[[t.Callable[..., t.Any]], click.Group]: ...

    def group(
        self, *args: t.Any, **kwargs: t.Any
    ) -> t.Callable[[t.Callable[..., t.Any]], click.Group] | click.Group:
        """Register the decorated function as a sub-group, an :class:`AppGroup` by default.

        Takes the arguments of :meth:`click.Group.group`. Usable with or without parentheses.

        :raises TypeError: when called with a function and other arguments.
        """
        kwargs.setdefault("cls", AppGroup)
        func = _bare_decorator_target(args, kwargs, "group", ignore=("cls",))
        if func is not None:
            args = ()

        def decorator(f: t.Callable[..., t.Any]) -> click.Group:
            make = t.cast(
                t.Callable[[t.Callable[..., t.Any]], click.Group],
                super(AppGroup, self).group(*args, **kwargs),
            )
            return make(f)

        return decorator(func) if func is not None else decorator


def _bare_decorator_target(
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
    kind: str,
    ignore: tuple[str, ...] = (),
) -> t.Callable[..., t.Any] | None:
    """The function when a decorator was applied without parentheses, else ``None``."""
    if not args or not callable(args[0]):
        return None
    if len(args) > 1 or set(kwargs) - set(ignore):
        raise TypeError(f"Use '{kind}(**kwargs)(callable)' to pass arguments.")
    return t.cast(t.Callable[..., t.Any], args[0])


# -- options of the top-level group --------------------------------------------------------


def _set_app(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    ctx.ensure_object(ScriptInfo).app_import_path = value
    return value


_app_option = click.Option(
    ["-A", "--app"],
    metavar="IMPORT",
    envvar=_envvars("APP"),
    help=(
        "The Carboy application or factory function to load, in the form 'module:name'."
        " Module can be a dotted import or file path. Name is not required if it is 'app',"
        " 'application', 'create_app', or 'make_app', and can be 'name(args)' to pass"
        " arguments."
    ),
    is_eager=True,
    expose_value=False,
    callback=_set_app,
)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool | None:
    source = ctx.get_parameter_source(param.name) if param.name else None
    if source is None or source in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
        return None
    # Put in the environment (not only on the app) so that an app factory sees it too.
    flag = "1" if value else "0"
    for name in _envvars("DEBUG"):
        os.environ[name] = flag
    return value


_debug_option = click.Option(
    ["--debug/--no-debug"],
    envvar=_envvars("DEBUG"),
    help="Set debug mode.",
    expose_value=False,
    callback=_set_debug,
)


def _load_env_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        import dotenv  # noqa: F401
    except ImportError:
        if value is not None:
            raise click.BadParameter(
                "python-dotenv must be installed to load an env file.", ctx=ctx, param=param
            ) from None
    defaults = ctx.ensure_object(ScriptInfo).load_dotenv_defaults
    if value is not None or defaults:
        load_dotenv(value, load_defaults=defaults)
    return value


_env_file_option = click.Option(
    ["-e", "--env-file"],
    type=click.Path(exists=True, dir_okay=False),
    envvar=_envvars("ENV_FILE"),
    help=(
        "Load environment variables from this file, taking precedence over those set by"
        " '.env' and '.flaskenv'. Variables set directly in the environment take highest"
        " precedence. python-dotenv must be installed."
    ),
    is_eager=True,
    expose_value=False,
    callback=_load_env_file,
)


class CarboyGroup(AppGroup):
    """The ``carboy`` command: loads the app and offers its commands next to the built-ins.

    Flask-compatible: ``flask.cli.FlaskGroup``. Adds the ``--env-file/-e``, ``--app/-A`` and
    ``--debug/--no-debug`` options, the ``run``, ``shell`` and ``routes`` commands, commands
    registered under the ``carboy.commands`` and ``flask.commands`` entry-point groups, and
    the commands of ``app.cli``.

    :param add_default_commands: add ``run``, ``shell`` and ``routes``.
    :param create_app: a callable returning the app, instead of discovering it.
    :param add_version_option: add ``--version``.
    :param load_dotenv: load ``.env`` and ``.flaskenv`` at start-up.
    :param set_debug_flag: set the app's debug flag from the environment on load.
    :param extra: further arguments of :class:`click.Group`; ``auto_envvar_prefix`` defaults to
        ``"FLASK"`` in ``context_settings``.
    """

    def __init__(
        self,
        add_default_commands: bool = True,
        create_app: t.Callable[..., Carboy] | None = None,
        add_version_option: bool = True,
        load_dotenv: bool = True,
        set_debug_flag: bool = True,
        **extra: t.Any,
    ) -> None:
        params: list[click.Parameter] = list(extra.pop("params", None) or ())
        # The options act through callbacks so that a custom group callback keeps them;
        # --env-file comes first so that it is loaded before --app is read.
        params.extend((_env_file_option, _app_option, _debug_option))
        if add_version_option:
            params.append(version_option)
        settings = dict(extra.pop("context_settings", None) or {})
        settings.setdefault("auto_envvar_prefix", "FLASK")
        super().__init__(params=params, context_settings=settings, **extra)
        self.create_app = create_app
        self.load_dotenv = load_dotenv
        self.set_debug_flag = set_debug_flag
        if add_default_commands:
            self.add_command(run_command)
            self.add_command(shell_command)
            self.add_command(routes_command)
        self._plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if self._plugins_loaded:
            return
        for group in _PLUGIN_GROUPS:
            for entry_point in importlib.metadata.entry_points(group=group):
                self.add_command(entry_point.load(), entry_point.name)
        self._plugins_loaded = True

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The built-in or plugin command *cmd_name*, else the app's command of that name.

        The app is loaded (and its context pushed) only when needed; a load failure is
        printed to stderr and the command is reported missing.
        """
        self._load_plugin_commands()
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        info = ctx.ensure_object(ScriptInfo)
        try:
            app = info.load_app()
        except NoAppException as e:
            click.secho(f"Error: {e.format_message()}\n", err=True, fg="red")
            return None
        # Give the command (and its parameter callbacks) the app context.
        if not current_app or current_app._get_current_object() is not app:  # type: ignore[attr-defined]
            ctx.with_resource(app.app_context())
        return app.cli.get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The names of the built-in, plugin and app commands, sorted.

        An app that fails to load is reported on stderr; the other commands are still listed.
        """
        self._load_plugin_commands()
        names = set(super().list_commands(ctx))
        info = ctx.ensure_object(ScriptInfo)
        try:
            names.update(info.load_app().cli.list_commands(ctx))
        except NoAppException as e:
            click.secho(f"Error: {e.format_message()}\n", err=True, fg="red")
        except Exception:
            click.secho(f"{traceback.format_exc()}\n", err=True, fg="red")
        return sorted(names)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: t.Any,
    ) -> click.Context:
        """Create the click context, with a :class:`ScriptInfo` as ``obj`` unless one is given.

        Also sets ``FLASK_RUN_FROM_CLI`` so that an unguarded ``app.run()`` in the imported
        module does not start a server.
        """
        os.environ["FLASK_RUN_FROM_CLI"] = "true"
        if "obj" not in extra and "obj" not in self.context_settings:
            extra["obj"] = ScriptInfo(
                create_app=self.create_app,
                set_debug_flag=self.set_debug_flag,
                load_dotenv_defaults=self.load_dotenv,
            )
        return super().make_context(info_name, args, parent=parent, **extra)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse the command line; for a bare ``--help`` (or no arguments), read the env file
        and ``--app`` from the environment first so the app's commands are listed."""
        if (not args and self.no_args_is_help) or (
            len(args) == 1 and args[0] in self.get_help_option_names(ctx)
        ):
            _env_file_option.handle_parse_result(ctx, {}, [])
            _app_option.handle_parse_result(ctx, {}, [])
        return super().parse_args(ctx, args)


#: Flask's name for :class:`CarboyGroup`.
FlaskGroup = CarboyGroup


def load_dotenv(path: str | os.PathLike[str] | None = None, load_defaults: bool = True) -> bool:
    """Load environment variables from dotenv files, never overriding ones already set.

    Flask-compatible: ``flask.cli.load_dotenv``. With *load_defaults*, the nearest
    ``.flaskenv`` and ``.env`` (searched from the working directory upwards) are read, ``.env``
    winning over ``.flaskenv``; *path* wins over both. Does nothing (apart from a tip when such
    files exist) if python-dotenv is not installed.

    :param path: an extra file to load; ignored when it does not exist.
    :param load_defaults: also load ``.flaskenv`` and ``.env``.
    :returns: whether any variable was loaded from a file.
    """
    try:
        import dotenv
    except ImportError:
        if path or os.path.isfile(".env") or os.path.isfile(".flaskenv"):
            click.secho(
                " * Tip: There are .env files present. Install python-dotenv to use them.",
                fg="yellow",
                err=True,
            )
        return False

    values: dict[str, str | None] = {}
    if load_defaults:
        for name in (".flaskenv", ".env"):
            found = dotenv.find_dotenv(name, usecwd=True)
            if found:
                values.update(dotenv.dotenv_values(found, encoding="utf-8"))
    if path is not None and os.path.isfile(path):
        values.update(dotenv.dotenv_values(path, encoding="utf-8"))

    for key, value in values.items():
        if value is not None and key not in os.environ:
            os.environ[key] = value
    return bool(values)


def show_server_banner(debug: bool | None, app_import_path: str | None) -> None:
    """Print which app is served and whether debug mode is on (not in a reloader child).

    Flask-compatible: ``flask.cli.show_server_banner``.

    :param debug: the debug flag, or ``None`` to not mention it.
    :param app_import_path: what the app was loaded from, or ``None`` to not mention it.
    """
    from werkzeug.serving import is_running_from_reloader

    if is_running_from_reloader():
        return
    if app_import_path is not None:
        click.echo(f" * Serving Carboy app '{app_import_path}'")
    if debug is not None:
        click.echo(f" * Debug mode: {'on' if debug else 'off'}")


class CertParamType(_ParamTypeBase):
    """The ``--cert`` value: an existing file, ``adhoc``, or the import name of an
    :class:`ssl.SSLContext`.

    Flask-compatible: ``flask.cli.CertParamType``.
    """

    name = "path"

    def __init__(self) -> None:
        self.path_type = click.Path(exists=True, dir_okay=False, resolve_path=True)

    def convert(
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> t.Any:
        """Convert *value*.

        :raises click.BadParameter: when it is none of the accepted forms, or ``adhoc`` is
            asked for without the ``cryptography`` library.
        """
        try:
            import ssl
        except ImportError:  # pragma: no cover - Python without SSL
            raise click.BadParameter(
                'Using "--cert" requires Python to be compiled with SSL support.', ctx, param
            ) from None

        try:
            return self.path_type(value, param, ctx)
        except click.BadParameter:
            text = click.STRING(value, param, ctx).lower()
            if text == "adhoc":
                try:
                    importlib.import_module("cryptography")
                except ImportError:
                    raise click.BadParameter(
                        "Using ad-hoc certificates requires the cryptography library.",
                        ctx,
                        param,
                    ) from None
                return text
            obj = import_string(text, silent=True)
            if isinstance(obj, ssl.SSLContext):
                return obj
            raise


def _validate_key(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check ``--key`` against ``--cert``; combine a cert and key file into ``cert``."""
    cert = ctx.params.get("cert")
    adhoc = cert == "adhoc"
    is_context = _is_ssl_context(cert)
    if value is not None:
        if adhoc:
            raise click.BadParameter('When "--cert" is "adhoc", "--key" is not used.', ctx, param)
        if is_context:
            raise click.BadParameter(
                'When "--cert" is an SSLContext object, "--key" is not used.', ctx, param
            )
        if not cert:
            raise click.BadParameter('"--cert" must also be specified.', ctx, param)
        ctx.params["cert"] = (cert, value)
    elif cert and not (adhoc or is_context):
        raise click.BadParameter('Required when using "--cert".', ctx, param)
    return value


def _is_ssl_context(obj: t.Any) -> bool:
    try:
        import ssl
    except ImportError:  # pragma: no cover - Python without SSL
        return False
    return isinstance(obj, ssl.SSLContext)


class SeparatedPathType(click.Path):
    """A list of paths in one value, separated by :data:`os.pathsep` (``:``, or ``;`` on
    Windows); each is checked like :class:`click.Path`.

    Flask-compatible: ``flask.cli.SeparatedPathType``.
    """

    def convert(  # type: ignore[override]
        self, value: t.Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> list[t.Any]:
        """Split *value* and convert each path.

        :raises click.BadParameter: when a path fails the checks.
        """
        if isinstance(value, list | tuple):
            items: cabc.Sequence[t.Any] = value
        else:
            items = self.split_envvar_value(value)
        return [super(SeparatedPathType, self).convert(item, param, ctx) for item in items]


def _run_envvars(name: str) -> list[str]:
    return _envvars(f"RUN_{name}")


@click.command("run", short_help="Run a development server.")
@click.option(
    "--host",
    "-h",
    default="127.0.0.1",
    envvar=_run_envvars("HOST"),
    help="The interface to bind to.",
)
@click.option(
    "--port", "-p", default=5000, envvar=_run_envvars("PORT"), help="The port to bind to."
)
@click.option(
    "--cert",
    type=CertParamType(),
    envvar=_run_envvars("CERT"),
    help="Specify a certificate file to use HTTPS.",
    is_eager=True,
)
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    envvar=_run_envvars("KEY"),
    callback=_validate_key,
    expose_value=False,
    help="The key file to use when specifying a certificate.",
)
@click.option(
    "--reload/--no-reload",
    default=None,
    envvar=_run_envvars("RELOAD"),
    help="Enable or disable the reloader. By default the reloader is active if debug is enabled.",
)
@click.option(
    "--debugger/--no-debugger",
    default=None,
    envvar=_run_envvars("DEBUGGER"),
    help="Enable or disable the debugger. By default the debugger is active if debug is enabled.",
)
@click.option(
    "--with-threads/--without-threads",
    default=True,
    envvar=_run_envvars("WITH_THREADS"),
    help="Enable or disable multithreading.",
)
@click.option(
    "--extra-files",
    default=None,
    type=SeparatedPathType(),
    envvar=_run_envvars("EXTRA_FILES"),
    help=(
        "Extra files that trigger a reload on change. Multiple paths are separated by"
        f" {os.path.pathsep!r}."
    ),
)
@click.option(
    "--exclude-patterns",
    default=None,
    type=SeparatedPathType(),
    envvar=_run_envvars("EXCLUDE_PATTERNS"),
    help=(
        "Files matching these fnmatch patterns will not trigger a reload on change."
        f" Multiple patterns are separated by {os.path.pathsep!r}."
    ),
)
@pass_script_info
def run_command(
    info: ScriptInfo,
    host: str,
    port: int,
    reload: bool | None,
    debugger: bool | None,
    with_threads: bool,
    cert: ssl.SSLContext | tuple[str, str | None] | t.Literal["adhoc"] | None,
    extra_files: list[str] | None,
    exclude_patterns: list[str] | None,
) -> None:
    """Run a local development server.

    This server is for development purposes only. It does not provide the stability,
    security, or performance of production WSGI servers.

    The reloader and debugger are enabled by default with the '--debug' option.
    """
    import werkzeug.serving

    app: t.Any
    try:
        app = info.load_app()
    except Exception as e:
        if not werkzeug.serving.is_running_from_reloader():
            raise e from None
        # Under the reloader, report the error now and serve it, so fixing the file reloads.
        traceback.print_exc()
        error = e

        def app(environ: t.Any, start_response: t.Any) -> t.NoReturn:
            raise error from None

    debug = get_debug_flag()
    if reload is None:
        reload = debug
    if debugger is None:
        debugger = debug

    show_server_banner(debug, info.app_import_path)
    werkzeug.serving.run_simple(
        host,
        port,
        app,
        use_reloader=reload,
        use_debugger=debugger,
        threaded=with_threads,
        ssl_context=cert,
        extra_files=extra_files,
        exclude_patterns=exclude_patterns,
    )


run_command.params.insert(0, _debug_option)


@click.command("shell", short_help="Run a shell in the app context.")
@with_appcontext
def shell_command() -> None:
    """Run an interactive Python shell in the context of the app.

    The shell's namespace holds 'app', 'g' and the names of the app's shell context
    processors. PYTHONSTARTUP is run first, as by the plain interpreter.
    """
    import code

    app = current_app
    banner = (
        f"Python {sys.version} on {sys.platform}\n"
        f"App: {app.import_name}\n"
        f"Instance: {app.instance_path}"
    )
    namespace: dict[str, t.Any] = {}

    startup = os.environ.get("PYTHONSTARTUP")
    if startup and os.path.isfile(startup):
        with open(startup) as f:
            exec(compile(f.read(), startup, "exec"), namespace)

    namespace.update(app.make_shell_context())

    # sys.__interactivehook__ (set by site) enables readline history and completion.
    hook = getattr(sys, "__interactivehook__", None)
    if hook is not None:
        try:
            import readline
            from rlcompleter import Completer
        except ImportError:
            pass
        else:
            readline.set_completer(Completer(namespace).complete)
        hook()

    code.interact(banner=banner, local=namespace)


@click.command("routes", short_help="Show the routes for the app.")
@click.option(
    "--sort",
    "-s",
    type=click.Choice(("endpoint", "methods", "domain", "rule", "match")),
    default="endpoint",
    help=(
        "Method to sort routes by. 'match' is the order that Carboy will match routes when"
        " dispatching a request."
    ),
)
@click.option("--all-methods", is_flag=True, help="Show HEAD and OPTIONS methods.")
@with_appcontext
def routes_command(sort: str, all_methods: bool) -> None:
    """Show all registered routes with endpoints and methods."""
    url_map = current_app.url_map
    rules = list(url_map.iter_rules())
    if not rules:
        click.echo("No routes were registered.")
        return

    hidden = set() if all_methods else {"HEAD", "OPTIONS"}
    by_host = url_map.host_matching

    def domain(rule: t.Any) -> str:
        return (rule.host if by_host else rule.subdomain) or ""

    show_domain = any(domain(rule) for rule in rules)
    columns = ["endpoint", "methods"]
    header = ["Endpoint", "Methods"]
    if show_domain:
        columns.append("domain")
        header.append("Host" if by_host else "Subdomain")
    columns.append("rule")
    header.append("Rule")

    rows: list[list[str]] = []
    for rule in rules:
        row = [rule.endpoint, ", ".join(sorted((rule.methods or set()) - hidden))]
        if show_domain:
            row.append(domain(rule))
        row.append(rule.rule)
        rows.append(row)

    # "match" keeps the map's order; so does sorting by a column that is not shown.
    if sort in columns:
        rows.sort(key=itemgetter(columns.index(sort)))

    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


cli = CarboyGroup(
    name="carboy",
    help="""\
A general utility script for Carboy applications.

An application to load must be given with the '--app' option, the 'CARBOY_APP' (or
'FLASK_APP') environment variable, or with a 'wsgi.py' or 'app.py' file in the current
directory.
""",
)


def main() -> None:
    """The ``carboy`` console script. Flask-compatible: ``flask.cli.main``.

    The :mod:`carboy.flask_compat` alias is installed first, so an app that imports ``flask``
    runs on carboy unchanged.
    """
    from . import flask_compat

    flask_compat.install()
    cli.main()


if __name__ == "__main__":
    main()
