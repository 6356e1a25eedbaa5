"""Finding the application: by import string, by module attribute, or by factory call.

Flask-compatible: the app-discovery part of ``flask.cli`` (``find_best_app``,
``find_app_by_string``, ``prepare_import``, ``locate_app``), re-exported by :mod:`carboy.cli`.
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
import traceback
import typing as t
from types import ModuleType, TracebackType

import click

if t.TYPE_CHECKING:
    from .app import Carboy


class NoAppException(click.UsageError):
    """The application could not be found or loaded.

    Flask-compatible: ``flask.cli.NoAppException``.
    """


def _carboy_class() -> type[Carboy]:
    # Imported on use: carboy.app imports this module's AppGroup while it is set up.
    from .app import Carboy

    return Carboy


def _failed_at_call(func: t.Callable[..., t.Any]) -> bool:
    """Whether the ``TypeError`` being handled came from calling *func* with the wrong
    arguments, rather than from somewhere inside *func*'s body."""
    tb: TracebackType | None = sys.exc_info()[2]
    code = getattr(func, "__code__", None)
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return False
        tb = tb.tb_next
    return True


def find_best_app(module: ModuleType) -> Carboy:
    """Find the application in *module*, as ``carboy --app module`` does.

    Flask-compatible: ``flask.cli.find_best_app``. Looks, in order, for an ``app`` or
    ``application`` attribute holding a :class:`~carboy.Carboy`, then for the only
    :class:`~carboy.Carboy` instance among the module's attributes, then for a ``create_app``
    or ``make_app`` factory callable without arguments.

    :param module: the imported module to search.
    :raises NoAppException: when nothing is found, when several instances are found, or when
        a factory needs arguments.
    """
    carboy_cls = _carboy_class()
    name = module.__name__
    for attr in ("app", "application"):
        found = getattr(module, attr, None)
        if isinstance(found, carboy_cls):
            return found

    instances = [v for v in vars(module).values() if isinstance(v, carboy_cls)]
    if len(instances) == 1:
        return instances[0]
    if instances:
        raise NoAppException(
            f"Detected multiple Carboy applications in module '{name}'."
            f" Use '{name}:name' to specify the correct one."
        )

    for attr in ("create_app", "make_app"):
        factory = getattr(module, attr, None)
        if not inspect.isfunction(factory):
            continue
        try:
            made = factory()
        except TypeError as e:
            if not _failed_at_call(factory):
                raise
            raise NoAppException(
                f"Detected factory '{attr}' in module '{name}', but could not call it without"
                f" arguments. Use '{name}:{attr}(args)' to specify arguments."
            ) from e
        if isinstance(made, carboy_cls):
            return made

    raise NoAppException(
        f"Failed to find Carboy application or factory in module '{name}'."
        f" Use '{name}:name' to specify one."
    )


def _parse_app_expression(app_name: str) -> tuple[str, list[t.Any], dict[str, t.Any]]:
    """Split ``name`` or ``name(args)`` into the name and literal arguments."""
    try:
        node = ast.parse(app_name.strip(), mode="eval").body
    except SyntaxError:
        raise NoAppException(
            f"Failed to parse {app_name!r} as an attribute name or function call."
        ) from None

    if isinstance(node, ast.Name):
        return node.id, [], {}
    if not isinstance(node, ast.Call):
        raise NoAppException(f"Failed to parse {app_name!r} as an attribute name or function call.")
    if not isinstance(node.func, ast.Name):
        raise NoAppException(f"Function reference must be a simple name: {app_name!r}.")
    try:
        args = [ast.literal_eval(arg) for arg in node.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
    except ValueError:
        raise NoAppException(
            f"Failed to parse arguments as literal values: {app_name!r}."
        ) from None
    return node.func.id, args, kwargs


def find_app_by_string(module: ModuleType, app_name: str) -> Carboy:
    """Get the application named by *app_name* from *module*.

    Flask-compatible: ``flask.cli.find_app_by_string``. *app_name* is an attribute name
    (``app``) or a factory call with literal arguments (``create_app("dev", debug=True)``).

    :param module: the imported module.
    :param app_name: the attribute name or call expression.
    :raises NoAppException: when the expression cannot be parsed, the attribute is missing,
        the factory rejects the arguments, or the result is not a :class:`~carboy.Carboy`.
    """
    name, args, kwargs = _parse_app_expression(app_name)
    mod_name = module.__name__
    try:
        attr = getattr(module, name)
    except AttributeError as e:
        raise NoAppException(f"Failed to find attribute {name!r} in {mod_name!r}.") from e

    if inspect.isfunction(attr):
        try:
            app = attr(*args, **kwargs)
        except TypeError as e:
            if not _failed_at_call(attr):
                raise
            raise NoAppException(
                f"The factory {app_name!r} in module {mod_name!r} could not be called with the"
                " specified arguments."
            ) from e
    else:
        app = attr

    if isinstance(app, _carboy_class()):
        return app
    raise NoAppException(
        f"A valid Carboy application was not obtained from '{mod_name}:{app_name}'."
    )


def prepare_import(path: str) -> str:
    """Turn a file or package path into an importable module name, making it importable.

    Flask-compatible: ``flask.cli.prepare_import``. The folder above the outermost package
    containing *path* is put first on :data:`sys.path`.

    :param path: a module name or a path to a ``.py`` file or a package folder.
    :returns: the dotted module name.
    """
    path = os.path.realpath(path)
    stem, ext = os.path.splitext(path)
    if ext == ".py":
        path = stem
    if os.path.basename(path) == "__init__":
        path = os.path.dirname(path)

    parts: list[str] = []
    # Climb while the folder is a package, collecting the dotted name.
    while True:
        path, part = os.path.split(path)
        parts.append(part)
        if not os.path.exists(os.path.join(path, "__init__.py")):
            break

    if not sys.path or sys.path[0] != path:
        sys.path.insert(0, path)
    return ".".join(reversed(parts))


@t.overload
def locate_app(
    module_name: str, app_name: str | None, raise_if_not_found: t.Literal[True] = True
) -> Carboy: ...


@t.overload
def locate_app(
    module_name: str, app_name: str | None, raise_if_not_found: t.Literal[False] = ...
) -> Carboy | None: ...


def locate_app(
    module_name: str, app_name: str | None, raise_if_not_found: bool = True
) -> Carboy | None:
    """Import *module_name* and find the application in it.

    Flask-compatible: ``flask.cli.locate_app``.

    :param module_name: the dotted module name to import.
    :param app_name: an attribute name or factory call (see :func:`find_app_by_string`), or
        ``None`` to search with :func:`find_best_app`.
    :param raise_if_not_found: when false, return ``None`` if the module does not exist.
    :raises NoAppException: when the module fails to import (an ``ImportError`` raised
        inside it is included), does not exist (unless *raise_if_not_found* is false), or
        holds no application.
    """
    try:
        __import__(module_name)
    except ImportError:
        tb = sys.exc_info()[2]
        # A traceback deeper than this frame means the module exists and failed itself.
        if tb is not None and tb.tb_next is not None:
            raise NoAppException(
                f"While importing {module_name!r}, an ImportError was raised:\n\n"
                f"{traceback.format_exc()}"
            ) from None
        if raise_if_not_found:
            raise NoAppException(f"Could not import {module_name!r}.") from None
        return None

    module = sys.modules[module_name]
    if app_name is None:
        return find_best_app(module)
    return find_app_by_string(module, app_name)
