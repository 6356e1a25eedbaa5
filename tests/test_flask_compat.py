"""``carboy.flask_compat``: ``import flask`` gives carboy's modules.

This test process imports the real Flask (for the differential tests), so each check runs in a
fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# The public submodules Flask 3.1 documents; each must resolve to a carboy module.
FLASK_SUBMODULES = [
    "flask.app",
    "flask.blueprints",
    "flask.cli",
    "flask.config",
    "flask.ctx",
    "flask.globals",
    "flask.helpers",
    "flask.json",
    "flask.json.provider",
    "flask.json.tag",
    "flask.logging",
    "flask.sansio.app",
    "flask.sansio.blueprints",
    "flask.sansio.scaffold",
    "flask.sessions",
    "flask.signals",
    "flask.templating",
    "flask.testing",
    "flask.typing",
    "flask.views",
    "flask.wrappers",
    "flask.debughelpers",
]


def run_python(
    code: str, args: list[str] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CARBOY_"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *(args or [])],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )


def test_flask_and_every_public_submodule_resolve_to_carboy() -> None:
    result = run_python(
        """
        import importlib, json, sys
        import carboy.flask_compat
        import flask
        out = {name: importlib.import_module(name).__name__ for name in sys.argv[1:]}
        out["Flask"] = f"{flask.Flask.__module__}.{flask.Flask.__name__}"
        out["version"] = flask.__version__
        out["attr"] = flask.json.tag.TaggedJSONSerializer.__module__
        out["sansio"] = flask.sansio.scaffold.Scaffold.__module__
        out["real_flask_loaded"] = any(
            getattr(m, "__file__", "") and "site-packages/flask/" in m.__file__
            for m in list(sys.modules.values())
        )
        print(json.dumps(out))
        """,
        args=FLASK_SUBMODULES,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for alias in FLASK_SUBMODULES:
        assert seen[alias].startswith("carboy."), alias
    assert seen["flask.json.tag"] == "carboy.json.tag"
    assert seen["flask.sansio.scaffold"] == "carboy.scaffold"
    assert seen["Flask"] == "carboy.app.Carboy"
    assert seen["version"].startswith("3.1.")
    assert seen["attr"] == "carboy.json.tag"
    assert seen["sansio"] == "carboy.scaffold"
    assert seen["real_flask_loaded"] is False


def test_patching_a_flask_submodule_patches_carboy() -> None:
    result = run_python(
        """
        import carboy.flask_compat
        import flask.helpers, carboy.helpers
        flask.helpers.marker = 1
        print(carboy.helpers.marker, flask.helpers is carboy.helpers)
        """
    )
    assert result.stdout.split() == ["1", "True"], result.stderr


def test_unknown_flask_submodule_is_not_taken_from_real_flask() -> None:
    result = run_python(
        """
        import carboy.flask_compat
        try:
            import flask.no_such_module
        except ModuleNotFoundError as e:
            print("missing", e.name)
        """
    )
    assert result.stdout.split() == ["missing", "flask.no_such_module"], result.stderr


def test_real_flask_imported_first_is_an_error() -> None:
    result = run_python("import flask\nimport carboy.flask_compat\n")
    assert result.returncode != 0
    assert "imported before carboy.flask_compat" in result.stderr


def test_install_is_idempotent() -> None:
    result = run_python(
        """
        import carboy.flask_compat as compat
        first = compat.install()
        print(first is compat.install(), first.Flask.__name__)
        """
    )
    assert result.stdout.split() == ["True", "Carboy"], result.stderr


@pytest.mark.parametrize("variable", ["CARBOY_APP", "FLASK_APP"])
def test_app_string_loads_the_named_app(tmp_path: os.PathLike[str], variable: str) -> None:
    module = os.path.join(tmp_path, "plain_flask_app.py")
    with open(module, "w") as f:
        f.write(
            "from flask import Flask\n"
            "def create_app(name):\n"
            "    app = Flask(name)\n"
            "    return app\n"
        )
    result = run_python(
        f"""
        import os, sys
        os.chdir({str(tmp_path)!r})
        from carboy.flask_compat import app
        import carboy
        print(type(app).__name__, app.name, isinstance(app, carboy.Carboy))
        """,
        **{variable: "plain_flask_app:create_app('named')"},
    )
    assert result.stdout.split() == ["Carboy", "named", "True"], result.stderr


def test_app_string_without_a_variable_says_what_to_set() -> None:
    result = run_python("from carboy.flask_compat import app\n")
    assert result.returncode != 0
    assert "set it, e.g. CARBOY_APP=" in result.stderr
