"""Make ``import flask`` give carboy's objects.

Import this module before anything imports ``flask``::

    import carboy.flask_compat  # noqa: F401
    from flask import Flask      # carboy.Carboy

After that, ``flask`` and each public submodule (``flask.app``, ``flask.cli``, ``flask.json.tag``,
``flask.sansio.scaffold`` ...) are entries in :data:`sys.modules` that point at carboy's modules,
so ``flask.Flask is carboy.Carboy`` and monkeypatching ``flask.cli.X`` patches ``carboy.cli.X``.
This holds when the real Flask distribution is installed too (extensions depend on it, so pip
installs it): the entries are placed before Python's path search ever looks for it.

Two ways to switch it on without editing an app:

- ``carboy --app yourapp run`` installs the alias before it imports the app;
- for production servers, the app string ``carboy.flask_compat:app`` installs the alias, then
  loads the app named by ``CARBOY_APP`` (or ``FLASK_APP``)::

      CARBOY_APP='yourapp:create_app()' gunicorn carboy.flask_compat:app
      CARBOY_APP=yourapp:app uvicorn carboy.flask_compat:app
      CARBOY_APP=yourapp:app hypercorn carboy.flask_compat:app

:raises RuntimeError: on import, if the real ``flask`` package was imported first; the objects
    already bound to it cannot be swapped.

.. versionadded:: 0.1
"""

from __future__ import annotations

import builtins
import importlib
import os
import sys
import types
import typing as t

#: The Flask version whose API carboy mirrors; ``flask.__version__`` under the alias.
FLASK_VERSION = "3.1.3"

# flask submodule -> carboy module. carboy keeps the scaffold and blueprint machinery in single
# modules rather than Flask's sansio/non-sansio halves, so two names map onto one module.
_MODULES: dict[str, str] = {
    "flask.app": "carboy.app",
    "flask.blueprints": "carboy.blueprints",
    "flask.cli": "carboy.cli",
    "flask.config": "carboy.config",
    "flask.ctx": "carboy.ctx",
    "flask.debughelpers": "carboy.debughelpers",
    "flask.globals": "carboy.globals",
    "flask.helpers": "carboy.helpers",
    "flask.json": "carboy.json",
    "flask.json.provider": "carboy.json.provider",
    "flask.json.tag": "carboy.json.tag",
    "flask.logging": "carboy.logging",
    "flask.sansio.app": "carboy.sansio.app",
    "flask.sansio.blueprints": "carboy.blueprints",
    "flask.sansio.scaffold": "carboy.scaffold",
    "flask.sessions": "carboy.sessions",
    "flask.signals": "carboy.signals",
    "flask.templating": "carboy.templating",
    "flask.testing": "carboy.testing",
    "flask.typing": "carboy.typing",
    "flask.views": "carboy.views",
    "flask.wrappers": "carboy.wrappers",
}


def _package(name: str, doc: str) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    # An empty __path__ makes it a package whose unknown submodules fail with
    # ModuleNotFoundError instead of being looked up in the real Flask distribution.
    module.__path__ = []
    return module


def _build() -> types.ModuleType:
    import carboy

    flask = _package("flask", "carboy's Flask-compatible API, installed by carboy.flask_compat.")
    for name in dir(carboy):
        if not name.startswith("__"):
            setattr(flask, name, getattr(carboy, name))
    flask.Flask = carboy.Carboy  # type: ignore[attr-defined]
    flask.__version__ = FLASK_VERSION  # type: ignore[attr-defined]
    sansio = _package("flask.sansio", "carboy's modules under Flask's sansio names.")
    packages = {"flask": flask, "flask.sansio": sansio}
    modules: dict[str, types.ModuleType] = dict(packages)
    for alias, target in _MODULES.items():
        modules[alias] = importlib.import_module(target)
    for alias, module in modules.items():
        parent, _, child = alias.rpartition(".")
        if parent in packages:
            setattr(packages[parent], child, module)
    sys.modules.update(modules)
    return flask


def install() -> types.ModuleType:
    """Point ``flask`` and its public submodules at carboy's modules. Idempotent.

    :returns: the ``flask`` module now in :data:`sys.modules`.
    :raises RuntimeError: if the real Flask package was imported before the alias.

    .. versionadded:: 0.1
    """
    current = sys.modules.get("flask")
    if current is not None:
        if getattr(current, "Flask", None) is _carboy_class():
            return current
        raise RuntimeError(
            "The real 'flask' package was imported before carboy.flask_compat. Import"
            " carboy.flask_compat first, or serve the app as carboy.flask_compat:app."
        )
    return _build()


def _carboy_class() -> type:
    from .app import Carboy

    return Carboy


def load(app_string: str) -> t.Any:
    """Install the alias, then import and return the app named by *app_string*.

    :param app_string: ``module``, ``module:name`` or ``module:factory(args)``, as ``--app``
        takes it.
    :returns: the app object.
    :raises carboy.cli.NoAppException: if the module or the app cannot be found.

    .. versionadded:: 0.1
    """
    install()
    from .discovery import locate_app, prepare_import

    module, _, name = app_string.partition(":")
    return locate_app(prepare_import(module), name or None)


def __getattr__(name: str) -> t.Any:
    # ``carboy.flask_compat:app`` is an app string any server takes: the app named by the
    # CARBOY_APP (or FLASK_APP) variable, loaded once with the alias installed.
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app_string = os.environ.get("CARBOY_APP") or os.environ.get("FLASK_APP")
    if not app_string:
        raise RuntimeError(
            "carboy.flask_compat:app serves the app named by CARBOY_APP (or FLASK_APP);"
            " set it, e.g. CARBOY_APP='yourapp:create_app()'."
        )
    app = load(app_string)
    globals()["app"] = app
    return app


class _BuiltinsThatFindTheApp(dict):  # type: ignore[type-arg]
    """The builtins seen by code evaluated in this module's namespace from outside.

    hypercorn finds ``module:app`` with ``eval("app", vars(module))``, which never calls the
    module ``__getattr__`` above (gunicorn, uvicorn and granian use ``getattr``). A name that
    ``eval`` finds neither in the module nor in the builtins is looked up here last, so
    ``app`` still loads at the server's start, as with the others. The module's own
    functions keep the real builtins (each took them when it was defined, above).
    """

    def __missing__(self, name: str) -> t.Any:
        if name == "app":
            return __getattr__(name)
        raise KeyError(name)


install()
# Last, after every function of the module was defined (see _BuiltinsThatFindTheApp).
globals()["__builtins__"] = _BuiltinsThatFindTheApp(vars(builtins))
