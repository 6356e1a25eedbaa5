"""The ``carboy`` command line (``carboy.cli``)."""

from __future__ import annotations

import importlib.metadata
import os
import ssl
import subprocess
import sys
import textwrap
import types
import typing as t
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from carboy import Blueprint, Carboy, current_app, g
from carboy.cli import (
    AppGroup,
    CarboyGroup,
    FlaskGroup,
    NoAppException,
    ScriptInfo,
    find_app_by_string,
    find_best_app,
    load_dotenv,
    locate_app,
    prepare_import,
    routes_command,
    run_command,
    shell_command,
    with_appcontext,
)

HERE = os.path.dirname(os.path.abspath(__file__))

_ENV_NAMES = [
    f"{prefix}_{name}"
    for prefix in ("CARBOY", "FLASK")
    for name in (
        "APP",
        "DEBUG",
        "ENV_FILE",
        "SKIP_DOTENV",
        "RUN_FROM_CLI",
        "RUN_HOST",
        "RUN_PORT",
        "RUN_RELOAD",
        "RUN_DEBUGGER",
        "RUN_CERT",
        "RUN_KEY",
        "RUN_EXTRA_FILES",
    )
]


@pytest.fixture(autouse=True)
def _isolate(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> t.Iterator[None]:
    """Each test starts without CLI environment variables; modules a test imports from its
    temporary folders are forgotten afterwards, so names like ``app`` can be reused."""
    saved_environ = dict(os.environ)
    saved_modules = set(sys.modules)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in _ENV_NAMES:
        os.environ.pop(name, None)
    yield
    os.environ.clear()
    os.environ.update(saved_environ)
    temp_root = str(tmp_path_factory.getbasetemp().resolve())
    for name in set(sys.modules) - saved_modules:
        path = getattr(sys.modules[name], "__file__", None) or ""
        if os.path.realpath(path).startswith(temp_root) or name == "ssl_holder_mod":
            del sys.modules[name]


def make_app(name: str = "cli_app", **kwargs: t.Any) -> Carboy:
    kwargs.setdefault("root_path", HERE)
    return Carboy(name, **kwargs)


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def module(name: str, **attrs: t.Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


# -- find_best_app ----------------------------------------------------------------------------


@pytest.mark.parametrize("attr", ["app", "application"])
def test_find_best_app_named_attribute(attr: str) -> None:
    app = make_app()
    other = make_app("other")
    assert find_best_app(module("m", **{attr: app, "other": other})) is app


def test_find_best_app_single_instance() -> None:
    app = make_app()
    assert find_best_app(module("m", my_app=app, number=3)) is app


def test_find_best_app_multiple_instances() -> None:
    mod = module("multi", a=make_app("a"), b=make_app("b"))
    with pytest.raises(NoAppException, match="multiple Carboy applications in module 'multi'"):
        find_best_app(mod)


@pytest.mark.parametrize("factory_name", ["create_app", "make_app"])
def test_find_best_app_factory(factory_name: str) -> None:
    made: list[Carboy] = []

    def factory() -> Carboy:
        made.append(make_app())
        return made[-1]

    assert find_best_app(module("m", **{factory_name: factory})) is made[0]


def test_find_best_app_factory_with_default_args() -> None:
    def create_app(config: str = "default") -> Carboy:
        app = make_app()
        app.config["WHICH"] = config
        return app

    assert find_best_app(module("m", create_app=create_app)).config["WHICH"] == "default"


def test_find_best_app_factory_needs_args() -> None:
    def create_app(config: str) -> Carboy:
        return make_app()

    with pytest.raises(NoAppException, match="could not call it without arguments"):
        find_best_app(module("needs", create_app=create_app))


def test_find_best_app_factory_type_error_inside_propagates() -> None:
    def create_app() -> Carboy:
        len(5)  # type: ignore[arg-type]
        return make_app()

    with pytest.raises(TypeError):
        find_best_app(module("m", create_app=create_app))


def test_find_best_app_ignores_non_carboy() -> None:
    def create_app() -> object:
        return object()

    mod = module("nothing", app=object(), create_app=create_app)
    with pytest.raises(NoAppException, match="Failed to find Carboy application or factory"):
        find_best_app(mod)


def test_find_best_app_ignores_flask_instances() -> None:
    flask = pytest.importorskip("flask")
    with pytest.raises(NoAppException):
        find_best_app(module("fl", app=flask.Flask("fl", root_path=HERE)))


# -- find_app_by_string -----------------------------------------------------------------------


def test_find_app_by_string_attribute() -> None:
    app = make_app()
    assert find_app_by_string(module("m", web=app), "web") is app
    assert find_app_by_string(module("m", web=app), " web ") is app


def test_find_app_by_string_factory_args() -> None:
    def create_app(name: str, *, debug: bool = False, ports: tuple[int, ...] = ()) -> Carboy:
        app = make_app()
        app.config.update(NAME=name, D=debug, PORTS=ports)
        return app

    mod = module("m", create_app=create_app)
    app = find_app_by_string(mod, 'create_app("dev", debug=True, ports=(1, 2))')
    assert app.config["NAME"] == "dev"
    assert app.config["D"] is True
    assert app.config["PORTS"] == (1, 2)
    assert find_app_by_string(mod, "create_app('x')").config["NAME"] == "x"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("create_app(", "Failed to parse"),
        ("1 + 2", "Failed to parse"),
        ("mod.create_app()", "Function reference must be a simple name"),
        ("create_app(name)", "Failed to parse arguments as literal values"),
        ("missing", "Failed to find attribute 'missing' in 'strmod'"),
        ("create_app()", "could not be called with the specified arguments"),
        ("not_app", "A valid Carboy application was not obtained from 'strmod:not_app'"),
        ("make_other()", "A valid Carboy application was not obtained"),
    ],
)
def test_find_app_by_string_errors(expr: str, message: str) -> None:
    def create_app(name: str) -> Carboy:
        return make_app()

    mod = module("strmod", create_app=create_app, not_app=42, make_other=lambda: 1)
    with pytest.raises(NoAppException, match=message):
        find_app_by_string(mod, expr)


# -- prepare_import / locate_app --------------------------------------------------------------


def test_prepare_import_module_file(tmp_path: Path) -> None:
    write(tmp_path / "plain_mod.py", "")
    assert prepare_import(str(tmp_path / "plain_mod.py")) == "plain_mod"
    assert sys.path[0] == str(tmp_path.resolve())


def test_prepare_import_package(tmp_path: Path) -> None:
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "sub" / "__init__.py", "")
    write(tmp_path / "pkg" / "sub" / "mod.py", "")
    assert prepare_import(str(tmp_path / "pkg" / "sub" / "mod.py")) == "pkg.sub.mod"
    assert sys.path[0] == str(tmp_path.resolve())
    assert prepare_import(str(tmp_path / "pkg" / "sub" / "__init__.py")) == "pkg.sub"
    assert prepare_import(str(tmp_path / "pkg")) == "pkg"
    # The folder is added once.
    assert sys.path.count(str(tmp_path.resolve())) == 1


def test_prepare_import_plain_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert prepare_import("some_module") == "some_module"
    assert sys.path[0] == str(tmp_path.resolve())


def test_locate_app(tmp_path: Path) -> None:
    write(
        tmp_path / "located.py",
        """
        from carboy import Carboy
        app = Carboy(__name__)
        other = Carboy("other", root_path=".")
        """,
    )
    name = prepare_import(str(tmp_path / "located.py"))
    app = locate_app(name, None)
    assert app.name == "located"
    assert locate_app(name, "other").name == "other"


def test_locate_app_missing_module(tmp_path: Path) -> None:
    with pytest.raises(NoAppException, match="Could not import 'no_such_module_here'"):
        locate_app("no_such_module_here", None)
    assert locate_app("no_such_module_here", None, raise_if_not_found=False) is None


def test_locate_app_import_error_inside(tmp_path: Path) -> None:
    write(tmp_path / "broken_import.py", "import no_such_dependency_xyz\n")
    name = prepare_import(str(tmp_path / "broken_import.py"))
    with pytest.raises(NoAppException) as info:
        locate_app(name, None, raise_if_not_found=False)
    message = info.value.format_message()
    assert "While importing 'broken_import', an ImportError was raised" in message
    assert "no_such_dependency_xyz" in message


# -- ScriptInfo -------------------------------------------------------------------------------


def test_script_info_create_app() -> None:
    app = make_app()
    calls: list[int] = []

    def create() -> Carboy:
        calls.append(1)
        return app

    info = ScriptInfo(create_app=create)
    assert info.load_app() is app
    assert info.load_app() is app
    assert calls == [1]
    assert info.data == {}


def test_script_info_import_path(tmp_path: Path) -> None:
    write(
        tmp_path / "si_factory.py",
        """
        from carboy import Carboy

        def create_app(name="default"):
            app = Carboy(__name__)
            app.config["NAME"] = name
            return app
        """,
    )
    path = str(tmp_path / "si_factory.py")
    assert ScriptInfo(path).load_app().config["NAME"] == "default"
    app = ScriptInfo(f"{path}:create_app('given')").load_app()
    assert app.config["NAME"] == "given"


def test_script_info_dotted_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "si_pkg" / "__init__.py", "")
    write(
        tmp_path / "si_pkg" / "web.py",
        "from carboy import Carboy\napplication = Carboy(__name__)\n",
    )
    monkeypatch.chdir(tmp_path)
    assert ScriptInfo("si_pkg.web").load_app().name == "si_pkg.web"
    assert ScriptInfo("si_pkg.web:application").load_app().name == "si_pkg.web"


@pytest.mark.parametrize("filename", ["wsgi.py", "app.py"])
def test_script_info_default_files(
    filename: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / filename, "from carboy import Carboy\napp = Carboy(__name__)\n")
    monkeypatch.chdir(tmp_path)
    assert ScriptInfo().load_app().name == filename[:-3]


def test_script_info_wsgi_py_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "wsgi.py", "from carboy import Carboy\napp = Carboy(__name__)\n")
    write(tmp_path / "app.py", "from carboy import Carboy\napp = Carboy(__name__)\n")
    monkeypatch.chdir(tmp_path)
    assert ScriptInfo().load_app().name == "wsgi"


def test_script_info_nothing_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoAppException, match="Could not locate a Carboy application"):
        ScriptInfo().load_app()


def test_script_info_debug_flag() -> None:
    app = make_app()
    app.debug = True
    os.environ["FLASK_DEBUG"] = "0"
    assert ScriptInfo(create_app=lambda: app).load_app().debug is False

    app.debug = False
    os.environ["FLASK_DEBUG"] = "1"
    assert ScriptInfo(create_app=lambda: app).load_app().debug is True

    os.environ["CARBOY_DEBUG"] = "0"
    assert ScriptInfo(create_app=lambda: app).load_app().debug is False

    app.debug = True
    info = ScriptInfo(create_app=lambda: app, set_debug_flag=False)
    assert info.load_app().debug is True


def test_script_info_skip_dotenv() -> None:
    assert ScriptInfo().load_dotenv_defaults is True
    os.environ["FLASK_SKIP_DOTENV"] = "1"
    assert ScriptInfo().load_dotenv_defaults is False


# -- with_appcontext / AppGroup ---------------------------------------------------------------


def test_with_appcontext() -> None:
    app = make_app()

    @click.command()
    @with_appcontext
    def show() -> None:
        g.touched = True
        click.echo(current_app.name)

    result = CliRunner().invoke(show, obj=ScriptInfo(create_app=lambda: app))
    assert result.exit_code == 0, result.output
    assert result.output == "cli_app\n"


def test_with_appcontext_reuses_active_context() -> None:
    app = make_app()
    calls: list[int] = []

    def create() -> Carboy:
        calls.append(1)
        return app

    @click.command()
    @with_appcontext
    def show() -> None:
        click.echo(str(g.marker))

    with app.app_context():
        g.marker = "outer"
        result = CliRunner().invoke(show, obj=ScriptInfo(create_app=create))
    assert result.output == "outer\n"
    assert calls == []


def test_with_appcontext_no_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    @click.command()
    @with_appcontext
    def show() -> None:
        click.echo("never")

    result = CliRunner().invoke(show, obj=ScriptInfo())
    assert result.exit_code != 0
    assert "Could not locate a Carboy application" in result.output


def test_app_group_commands() -> None:
    app = make_app()
    group = AppGroup("tools")

    @group.command()
    def with_ctx() -> None:
        click.echo(current_app.name)

    @group.command(with_appcontext=False)
    def plain() -> None:
        click.echo(str(bool(current_app)))

    @group.command
    def bare() -> None:
        click.echo(f"bare {current_app.name}")

    @group.group()
    def sub() -> None:
        pass

    @sub.command()
    def deep() -> None:
        click.echo(f"deep {current_app.name}")

    @group.group
    def nested() -> None:
        pass

    assert isinstance(sub, AppGroup)
    assert isinstance(nested, AppGroup)
    assert sorted(group.commands) == ["bare", "nested", "plain", "sub", "with-ctx"]

    obj = ScriptInfo(create_app=lambda: app)
    runner = CliRunner()
    assert runner.invoke(group, ["with-ctx"], obj=obj).output == "cli_app\n"
    assert runner.invoke(group, ["plain"], obj=obj).output == "False\n"
    assert runner.invoke(group, ["bare"], obj=obj).output == "bare cli_app\n"
    assert runner.invoke(group, ["sub", "deep"], obj=obj).output == "deep cli_app\n"


def test_app_group_bare_decorator_rejects_extra_args() -> None:
    group = AppGroup()
    with pytest.raises(TypeError):
        group.command(lambda: None, name="x")


def test_app_cli_with_test_cli_runner() -> None:
    app = make_app()

    @app.cli.command("init-db")
    @click.argument("name")
    def init_db(name: str) -> None:
        g.db = name
        click.echo(f"created {name} for {current_app.name}")

    result = app.test_cli_runner().invoke(args=["init-db", "main"])
    assert result.exit_code == 0, result.output
    assert result.output == "created main for cli_app\n"


def test_blueprint_cli_commands() -> None:
    app = make_app()
    bp = Blueprint("admin", __name__)

    @bp.cli.command("promote")
    def promote() -> None:
        click.echo(f"promoted in {current_app.name}")

    app.register_blueprint(bp)
    result = app.test_cli_runner().invoke(args=["admin", "promote"])
    assert result.output == "promoted in cli_app\n"


# -- CarboyGroup ------------------------------------------------------------------------------


def app_module(tmp_path: Path, name: str = "cli_target") -> Path:
    return write(
        tmp_path / f"{name}.py",
        """
        import click
        from carboy import Carboy, current_app

        app = Carboy(__name__)

        @app.route("/")
        def index():
            return "index"

        @app.cli.command()
        def hello():
            click.echo(f"hello from {current_app.name} debug={current_app.debug}")
        """,
    )


def test_flask_group_alias() -> None:
    assert FlaskGroup is CarboyGroup


def test_group_with_create_app() -> None:
    app = make_app()

    @app.cli.command()
    def hello() -> None:
        click.echo(f"hello {current_app.name}")

    cli = CarboyGroup(create_app=lambda: app)
    result = CliRunner().invoke(cli, ["hello"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello cli_app\n"
    assert os.environ["FLASK_RUN_FROM_CLI"] == "true"


def test_group_app_option(tmp_path: Path) -> None:
    path = app_module(tmp_path)
    runner = CliRunner()
    for option in ("--app", "-A"):
        result = runner.invoke(CarboyGroup(), [option, str(path), "hello"])
        assert result.exit_code == 0, result.output
        assert result.output == "hello from cli_target debug=False\n"


def test_group_module_colon_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(CarboyGroup(), ["--app", "cli_target:app", "hello"])
    assert result.output == "hello from cli_target debug=False\n"


@pytest.mark.parametrize("var", ["FLASK_APP", "CARBOY_APP"])
def test_group_app_env_var(var: str, tmp_path: Path) -> None:
    path = app_module(tmp_path)
    result = CliRunner().invoke(CarboyGroup(), ["hello"], env={var: str(path)})
    assert result.exit_code == 0, result.output
    assert "hello from cli_target" in result.output


def test_group_carboy_app_wins(tmp_path: Path) -> None:
    good = app_module(tmp_path, "carboy_side")
    bad = tmp_path / "missing.py"
    result = CliRunner().invoke(
        CarboyGroup(), ["hello"], env={"CARBOY_APP": str(good), "FLASK_APP": str(bad)}
    )
    assert result.exit_code == 0, result.output
    assert "hello from carboy_side" in result.output


def test_group_app_from_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "app.py",
        """
        import click
        from carboy import Carboy
        app = Carboy(__name__)

        @app.cli.command()
        def where():
            click.echo("app.py")
        """,
    )
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(CarboyGroup(), ["where"]).output == "app.py\n"


def test_group_lists_app_commands(tmp_path: Path) -> None:
    path = app_module(tmp_path)
    result = CliRunner().invoke(CarboyGroup(), ["--help"], env={"FLASK_APP": str(path)})
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1].split()
    for name in ("hello", "routes", "run", "shell"):
        assert name in commands
    for option in ("--app", "--env-file", "--debug", "--version"):
        assert option in result.output


def test_group_missing_app_reports_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(CarboyGroup(), ["--help"])
    assert result.exit_code == 0
    assert "Error: Could not locate a Carboy application" in result.output
    # Built-in commands are listed even without an app.
    assert "routes" in result.output.split("Commands:")[1]

    result = runner.invoke(CarboyGroup(), ["nope"])
    assert result.exit_code == 2
    assert "Could not locate a Carboy application" in result.output
    assert "No such command 'nope'" in result.output


def test_group_broken_app_in_list_shows_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "raises.py", "raise ValueError('bad app module')\n")
    result = CliRunner().invoke(CarboyGroup(), ["--app", str(path), "--help"])
    assert "ValueError: bad app module" in result.output


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--debug"], {}, "True"),
        (["--no-debug"], {"FLASK_DEBUG": "1"}, "False"),
        ([], {"FLASK_DEBUG": "1"}, "True"),
        ([], {"CARBOY_DEBUG": "1"}, "True"),
        ([], {"CARBOY_DEBUG": "0", "FLASK_DEBUG": "1"}, "False"),
        ([], {}, "False"),
    ],
)
def test_group_debug_option(args: list[str], env: dict[str, str], expected: str) -> None:
    app = make_app()

    @app.cli.command()
    def show() -> None:
        click.echo(str(current_app.debug))

    result = CliRunner().invoke(CarboyGroup(create_app=lambda: app), [*args, "show"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output == f"{expected}\n"


def test_group_debug_option_sets_env_for_factories() -> None:
    seen: list[str | None] = []

    def create() -> Carboy:
        seen.append(os.environ.get("CARBOY_DEBUG"))
        return make_app()

    @click.command()
    @with_appcontext
    def noop() -> None:
        pass

    cli = CarboyGroup(create_app=create)
    cli.add_command(noop)
    CliRunner().invoke(cli, ["--debug", "noop"])
    assert seen == ["1"]
    assert os.environ["FLASK_DEBUG"] == "1"


def test_group_version() -> None:
    result = CliRunner().invoke(CarboyGroup(), ["--version"])
    assert result.exit_code == 0
    assert f"Carboy {importlib.metadata.version('carboy')}" in result.output
    assert f"Werkzeug {importlib.metadata.version('werkzeug')}" in result.output
    assert result.output.startswith("Python ")
    assert (
        "--version"
        not in CliRunner().invoke(CarboyGroup(add_version_option=False), ["--help"]).output
    )


def test_group_without_default_commands() -> None:
    app = make_app()
    cli = CarboyGroup(create_app=lambda: app, add_default_commands=False)
    assert cli.commands == {}
    result = CliRunner().invoke(cli, ["routes"])
    assert result.exit_code == 2


def test_group_custom_callback_keeps_options(tmp_path: Path) -> None:
    path = app_module(tmp_path)
    seen: list[str] = []

    @click.group(cls=CarboyGroup)
    def cli() -> None:
        seen.append("callback")

    result = CliRunner().invoke(cli, ["--app", str(path), "hello"])
    assert result.exit_code == 0, result.output
    assert seen == ["callback"]
    assert "hello from cli_target" in result.output


def test_group_pushes_app_context_for_plain_click_commands() -> None:
    app = make_app()

    @app.cli.command(with_appcontext=False)
    def plain() -> None:
        click.echo(current_app.name)

    result = CliRunner().invoke(CarboyGroup(create_app=lambda: app), ["plain"])
    assert result.output == "cli_app\n"


def test_group_plugin_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command()
    def from_flask() -> None:
        click.echo("flask plugin")

    @click.command()
    def from_carboy() -> None:
        click.echo("carboy plugin")

    class FakeEntryPoint:
        def __init__(self, name: str, obj: click.Command) -> None:
            self.name = name
            self._obj = obj

        def load(self) -> click.Command:
            return self._obj

    plugins = {
        "flask.commands": [FakeEntryPoint("fplug", from_flask)],
        "carboy.commands": [FakeEntryPoint("cplug", from_carboy)],
    }
    groups: list[str] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        groups.append(group)
        return plugins.get(group, [])

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    cli = CarboyGroup(create_app=make_app)
    runner = CliRunner()
    assert runner.invoke(cli, ["fplug"]).output == "flask plugin\n"
    assert runner.invoke(cli, ["cplug"]).output == "carboy plugin\n"
    assert sorted(groups) == ["carboy.commands", "flask.commands"]


def test_main_entry_point(tmp_path: Path) -> None:
    path = app_module(tmp_path)
    script = Path(sys.executable).parent / "carboy"
    result = subprocess.run(
        [str(script), "--app", str(path), "hello"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from cli_target debug=False\n"


def test_console_script_serves_an_unmodified_flask_app(tmp_path: Path) -> None:
    # The console script installs carboy.flask_compat before importing the app, so an app
    # written against ``flask`` gets carboy's classes, though real Flask is installed too.
    write(
        tmp_path / "flask_target.py",
        """
        import click
        from flask import Flask, current_app

        app = Flask(__name__)

        @app.cli.command()
        def which():
            click.echo(f"{type(current_app._get_current_object()).__module__} {Flask.__name__}")
        """,
    )
    script = Path(sys.executable).parent / "carboy"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CARBOY_"))}
    env["FLASK_APP"] = "flask_target"
    result = subprocess.run(
        [str(script), "which"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "carboy.app Carboy\n"


# -- dotenv -----------------------------------------------------------------------------------


def test_load_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    write(tmp_path / ".flaskenv", "CB_A=flaskenv\nCB_B=flaskenv\nCB_KEEP=flaskenv\n")
    write(tmp_path / ".env", "CB_B=env\nCB_C=env\n")
    write(tmp_path / "extra.env", "CB_C=extra\nCB_D=extra\n")
    monkeypatch.chdir(tmp_path)
    os.environ["CB_KEEP"] = "environment"

    assert load_dotenv(str(tmp_path / "extra.env")) is True
    assert os.environ["CB_A"] == "flaskenv"
    assert os.environ["CB_B"] == "env"
    assert os.environ["CB_C"] == "extra"
    assert os.environ["CB_D"] == "extra"
    assert os.environ["CB_KEEP"] == "environment"


def test_load_dotenv_without_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    write(tmp_path / ".env", "CB_DEFAULT=1\n")
    write(tmp_path / "only.env", "CB_ONLY=1\n")
    monkeypatch.chdir(tmp_path)
    assert load_dotenv(str(tmp_path / "only.env"), load_defaults=False) is True
    assert os.environ["CB_ONLY"] == "1"
    assert "CB_DEFAULT" not in os.environ


def test_load_dotenv_searches_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    write(tmp_path / ".flaskenv", "CB_PARENT=yes\n")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "deep" / "er")
    assert load_dotenv() is True
    assert os.environ["CB_PARENT"] == "yes"


def test_load_dotenv_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    monkeypatch.chdir(tmp_path)
    assert load_dotenv(str(tmp_path / "missing.env")) is False


def test_cli_loads_dotenv_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    path = app_module(tmp_path)
    write(tmp_path / ".flaskenv", f"FLASK_APP={path}\nCB_FROM=flaskenv\n")
    write(tmp_path / ".env", "FLASK_DEBUG=1\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(CarboyGroup(), ["hello"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello from cli_target debug=True\n"
    assert os.environ["CB_FROM"] == "flaskenv"


def test_cli_env_file_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    path = app_module(tmp_path)
    write(tmp_path / ".env", "CB_WHO=dotenv\n")
    write(tmp_path / "custom.env", f"CARBOY_APP={path}\nCB_WHO=custom\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(CarboyGroup(), ["-e", "custom.env", "hello"])
    assert result.exit_code == 0, result.output
    assert "hello from cli_target" in result.output
    assert os.environ["CB_WHO"] == "custom"


def test_cli_skips_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    write(tmp_path / ".env", "CB_SKIPPED=1\n")
    monkeypatch.chdir(tmp_path)
    app = make_app()
    cli = CarboyGroup(create_app=lambda: app, load_dotenv=False)
    CliRunner().invoke(cli, ["routes"])
    assert "CB_SKIPPED" not in os.environ
    CliRunner().invoke(CarboyGroup(create_app=lambda: app), ["routes"])
    assert os.environ["CB_SKIPPED"] == "1"


# -- routes -----------------------------------------------------------------------------------


def routes_app(**kwargs: t.Any) -> Carboy:
    app = make_app(**kwargs)

    @app.route("/zeta", methods=["GET", "POST"])
    def alpha() -> str:
        return ""

    @app.route("/alpha/<int:id>", methods=["DELETE"])
    def zeta(id: int) -> str:
        return ""

    return app


def invoke_routes(app: Carboy, *args: str) -> list[str]:
    result = app.test_cli_runner().invoke(routes_command, list(args))
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_routes_default_table() -> None:
    lines = invoke_routes(routes_app())
    assert lines == [
        "Endpoint  Methods    Rule                   ",
        "--------  ---------  -----------------------",
        "alpha     GET, POST  /zeta                  ",
        "static    GET        /static/<path:filename>",
        "zeta      DELETE     /alpha/<int:id>        ",
    ]


def test_routes_sorting() -> None:
    app = routes_app()

    def endpoints(*args: str) -> list[str]:
        return [line.split()[0] for line in invoke_routes(app, *args)[2:]]

    assert endpoints() == ["alpha", "static", "zeta"]
    assert endpoints("--sort", "endpoint") == ["alpha", "static", "zeta"]
    assert endpoints("-s", "rule") == ["zeta", "static", "alpha"]
    assert endpoints("-s", "methods") == ["zeta", "static", "alpha"]
    # The map's order: the static rule is added by the constructor.
    assert endpoints("-s", "match") == ["static", "alpha", "zeta"]
    # No domain column: the map's order too.
    assert endpoints("-s", "domain") == ["static", "alpha", "zeta"]


def test_routes_all_methods() -> None:
    lines = invoke_routes(routes_app(), "--all-methods")
    assert lines[2].split(None, 1)[1].startswith("GET, HEAD, OPTIONS, POST")
    assert "DELETE, OPTIONS" in lines[4]


def test_routes_subdomain_column() -> None:
    app = make_app(static_folder=None)
    app.config["SERVER_NAME"] = "example.test"

    @app.route("/", subdomain="api")
    def api() -> str:
        return ""

    @app.route("/b")
    def bare() -> str:
        return ""

    lines = invoke_routes(app, "-s", "domain")
    assert lines[0].split() == ["Endpoint", "Methods", "Subdomain", "Rule"]
    assert lines[2].split() == ["bare", "GET", "/b"]
    assert lines[3].split() == ["api", "GET", "api", "/"]


def test_routes_host_column() -> None:
    app = make_app(static_folder=None, host_matching=True)

    @app.route("/", host="a.test")
    def index() -> str:
        return ""

    lines = invoke_routes(app)
    assert lines[0].split() == ["Endpoint", "Methods", "Host", "Rule"]
    assert lines[2].split() == ["index", "GET", "a.test", "/"]


def test_routes_empty() -> None:
    app = make_app(static_folder=None)
    assert invoke_routes(app) == ["No routes were registered."]


def test_routes_through_group(tmp_path: Path) -> None:
    path = app_module(tmp_path)
    result = CliRunner().invoke(CarboyGroup(), ["--app", str(path), "routes"])
    assert result.exit_code == 0, result.output
    assert "index     GET" in result.output


# -- run --------------------------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[t.Any, ...], dict[str, t.Any]]]:
    import werkzeug.serving

    calls: list[tuple[tuple[t.Any, ...], dict[str, t.Any]]] = []
    monkeypatch.setattr(
        werkzeug.serving, "run_simple", lambda *args, **kwargs: calls.append((args, kwargs))
    )
    return calls


def test_run_defaults(served: list[t.Any]) -> None:
    app = make_app()
    result = CliRunner().invoke(CarboyGroup(create_app=lambda: app), ["run"])
    assert result.exit_code == 0, result.output
    (args, kwargs) = served[0]
    assert args == ("127.0.0.1", 5000, app)
    assert kwargs == {
        "use_reloader": False,
        "use_debugger": False,
        "threaded": True,
        "ssl_context": None,
        "extra_files": None,
        "exclude_patterns": None,
    }
    assert " * Debug mode: off" in result.output


def test_run_debug_enables_reloader_and_debugger(served: list[t.Any]) -> None:
    app = make_app()
    cli = CarboyGroup(create_app=lambda: app)
    result = CliRunner().invoke(cli, ["--debug", "run"])
    assert result.exit_code == 0, result.output
    assert served[-1][1]["use_reloader"] is True
    assert served[-1][1]["use_debugger"] is True
    assert " * Debug mode: on" in result.output

    CliRunner().invoke(cli, ["run", "--debug", "--no-reload", "--no-debugger"])
    assert served[-1][1]["use_reloader"] is False
    assert served[-1][1]["use_debugger"] is False

    CliRunner().invoke(cli, ["run", "--reload", "--without-threads"])
    assert served[-1][1]["use_reloader"] is True
    assert served[-1][1]["threaded"] is False


def test_run_banner_names_app(served: list[t.Any], tmp_path: Path) -> None:
    path = app_module(tmp_path)
    result = CliRunner().invoke(CarboyGroup(), ["--app", str(path), "run"])
    assert result.exit_code == 0, result.output
    assert f" * Serving Carboy app '{path}'" in result.output
    assert served[0][0][2].name == "cli_target"


def test_run_options(served: list[t.Any], tmp_path: Path) -> None:
    app = make_app()
    one = write(tmp_path / "one.cfg", "")
    two = write(tmp_path / "two.cfg", "")
    result = CliRunner().invoke(
        CarboyGroup(create_app=lambda: app),
        [
            "run",
            "-h",
            "0.0.0.0",
            "-p",
            "8081",
            "--extra-files",
            f"{one}{os.pathsep}{two}",
            "--exclude-patterns",
            f"*.tmp{os.pathsep}*.bak",
        ],
    )
    assert result.exit_code == 0, result.output
    args, kwargs = served[0]
    assert args[:2] == ("0.0.0.0", 8081)
    assert kwargs["extra_files"] == [str(one), str(two)]
    assert kwargs["exclude_patterns"] == ["*.tmp", "*.bak"]


@pytest.mark.parametrize(
    ("env", "port"),
    [
        ({"FLASK_RUN_PORT": "7001"}, 7001),
        ({"CARBOY_RUN_PORT": "7002"}, 7002),
        ({"CARBOY_RUN_PORT": "7003", "FLASK_RUN_PORT": "7004"}, 7003),
    ],
)
def test_run_env_vars(served: list[t.Any], env: dict[str, str], port: int) -> None:
    app = make_app()
    env = {**env, "CARBOY_RUN_HOST": "::1", "FLASK_RUN_RELOAD": "true"}
    result = CliRunner().invoke(CarboyGroup(create_app=lambda: app), ["run"], env=env)
    assert result.exit_code == 0, result.output
    args, kwargs = served[0]
    assert args[:2] == ("::1", port)
    assert kwargs["use_reloader"] is True


def test_run_cert_and_key(served: list[t.Any], tmp_path: Path) -> None:
    app = make_app()
    cert = write(tmp_path / "cert.pem", "")
    key = write(tmp_path / "key.pem", "")
    cli = CarboyGroup(create_app=lambda: app)
    runner = CliRunner()

    result = runner.invoke(cli, ["run", "--cert", str(cert), "--key", str(key)])
    assert result.exit_code == 0, result.output
    assert served[-1][1]["ssl_context"] == (str(cert.resolve()), str(key.resolve()))

    result = runner.invoke(cli, ["run", "--cert", str(cert)])
    assert result.exit_code == 2
    assert "Required when using" in result.output

    result = runner.invoke(cli, ["run", "--key", str(key)])
    assert result.exit_code == 2
    assert '"--cert" must also be specified' in result.output

    result = runner.invoke(cli, ["run", "--cert", "not-a-file-or-import"])
    assert result.exit_code == 2


def test_run_cert_adhoc_needs_cryptography(
    served: list[t.Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = CarboyGroup(create_app=make_app)
    # Blocked import: a clear usage error, exit code 2.
    monkeypatch.setitem(sys.modules, "cryptography", None)
    result = CliRunner().invoke(cli, ["run", "--cert", "adhoc"])
    assert result.exit_code == 2
    assert "requires the cryptography library" in result.output
    # Importable (here a stand-in module without a spec): "adhoc" is passed on.
    monkeypatch.setitem(sys.modules, "cryptography", types.ModuleType("cryptography"))
    result = CliRunner().invoke(cli, ["run", "--cert", "adhoc"])
    assert result.exit_code == 0, result.output
    assert served[-1][1]["ssl_context"] == "adhoc"


def test_run_cert_ssl_context(served: list[t.Any]) -> None:
    app = make_app()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    holder = module("ssl_holder_mod", context=context)
    sys.modules["ssl_holder_mod"] = holder
    cli = CarboyGroup(create_app=lambda: app)
    result = CliRunner().invoke(cli, ["run", "--cert", "ssl_holder_mod.context"])
    assert result.exit_code == 0, result.output
    assert served[-1][1]["ssl_context"] is context


def test_run_app_load_error(
    served: list[t.Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(CarboyGroup(), ["run"])
    assert result.exit_code != 0
    assert "Could not locate a Carboy application" in result.output
    assert served == []


def test_app_run_is_noop_from_cli(served: list[t.Any], tmp_path: Path) -> None:
    path = write(
        tmp_path / "unguarded.py",
        """
        import click
        from carboy import Carboy
        app = Carboy(__name__)

        @app.cli.command()
        def ping():
            click.echo("pong")

        app.run()
        """,
    )
    result = CliRunner().invoke(CarboyGroup(), ["--app", str(path), "ping"])
    assert result.exit_code == 0, result.output
    assert result.output == "pong\n"
    assert served == []


# -- shell ------------------------------------------------------------------------------------


def test_shell_namespace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import code

    app = make_app()

    @app.shell_context_processor
    def extra() -> dict[str, t.Any]:
        return {"answer": 42}

    startup = write(tmp_path / "startup.py", "from_startup = 'yes'\n")
    monkeypatch.setenv("PYTHONSTARTUP", str(startup))
    seen: dict[str, t.Any] = {}

    def interact(banner: str, local: dict[str, t.Any]) -> None:
        seen.update(local, banner=banner, active=current_app._get_current_object())

    monkeypatch.setattr(code, "interact", interact)
    monkeypatch.delattr(sys, "__interactivehook__", raising=False)
    result = app.test_cli_runner().invoke(shell_command)
    assert result.exit_code == 0, result.output
    assert seen["app"] is app
    assert seen["active"] is app
    assert seen["g"] is g
    assert seen["answer"] == 42
    assert seen["from_startup"] == "yes"
    assert "App: cli_app" in seen["banner"]
    assert f"Instance: {app.instance_path}" in seen["banner"]


def test_run_command_is_click_command() -> None:
    names = {param.name for param in run_command.params}
    assert {"debug", "host", "port", "cert", "key", "reload", "debugger"} <= names
    assert {"with_threads", "extra_files", "exclude_patterns"} <= names
