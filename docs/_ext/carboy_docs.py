"""Sphinx extension for carboy's docs: generated pages that cannot drift from the code.

* ``% carboy:config-reference`` in a Markdown page becomes the configuration reference: every
  key the code reads (:mod:`carboy_config` scans ``src/carboy``), its default and the module
  that reads it, with the meaning from ``docs/config-keys.toml``.
* ``% carboy:benchmark-headline`` becomes README's table of ratios, made by
  ``benchmarks/readme_table.py`` from ``docs/benchmarks/results.json``.
* ``.. carboy:scale-modules`` in a reST page becomes one section per public module of
  ``carboy.scale`` (found on disk, so a new module is documented when it lands).
* The build warns (an error under ``-W``) when a public name of ``carboy/__init__.py`` is
  documented nowhere, or when ``config-keys.toml`` describes a key the code no longer reads.
* A reference to an object by the module that defines it (``carboy.app.Carboy``) resolves to
  the public name it is documented under (``carboy.Carboy``).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import itertools
import os
import re
import tomllib
import typing as t
from pathlib import Path

import carboy_config
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parent.parent
SRC = DOCS.parent / "src"
MEANINGS = DOCS / "config-keys.toml"

CONFIG_MARKER = "% carboy:config-reference"
HEADLINE_MARKER = "% carboy:benchmark-headline"
SCALE_MARKER = ".. carboy:scale-modules"

_GROUP_TITLES = {
    "carboy": "carboy (the core)",
}
_GROUP_INTROS = {
    "carboy": (
        "Read by the core; every app has them. The defaults are Flask 3.1's, and "
        "`MAX_SYNC_THREADS` is carboy's own."
    ),
}


# -- the configuration reference ------------------------------------------------------------


def _load_meanings() -> dict[str, dict[str, str]]:
    """``{key: {"meaning": ..., "default": ...?}}`` from ``config-keys.toml``."""
    data = tomllib.loads(MEANINGS.read_text(encoding="utf-8"))
    out: dict[str, dict[str, str]] = {}
    for section in data.values():
        for key, value in section.items():
            out[key] = {"meaning": value} if isinstance(value, str) else dict(value)
    return out


_BORDER = re.compile(r"^ *=+( +=+)+ *$")
_ROLE = re.compile(r":[a-z:]+:`~?([^`]+)`")


def _markdown(rst: str) -> str:
    """The little reST a docstring table cell holds, as Markdown."""
    text = _ROLE.sub(lambda m: f"`{m[1]}`", rst)
    return text.replace("``", "`")


def docstring_meanings(modules: t.Iterable[str]) -> dict[str, str]:
    """``{KEY: meaning}`` from reST simple tables in the docstrings of *modules* and their
    classes whose first column is a key (``SQLALCHEMY_REPLICA_URIS``, ...): the meaning is
    the last column. A module documents its own keys this way; the reference uses it for keys
    ``config-keys.toml`` does not describe."""
    found: dict[str, str] = {}
    for name in modules:
        module = importlib.import_module(name)
        docs = [module.__doc__ or ""]
        docs += [c.__doc__ or "" for c in vars(module).values() if inspect.isclass(c)]
        for doc in docs:
            lines = inspect.cleandoc(doc).splitlines()
            borders = [i for i, line in enumerate(lines) if _BORDER.match(line)]
            for top, bottom in itertools.pairwise(borders):
                starts = [m.start() for m in re.finditer(r"=+", lines[top])]
                key = None
                for line in lines[top + 1 : bottom]:
                    first = line[: starts[1]].strip()
                    last = line[starts[-1] :].strip()
                    match = re.fullmatch(r"``([A-Z][A-Z0-9_]+)``", first)
                    if match:
                        key = match[1]
                        found[key] = _markdown(last)
                    elif not first and key:
                        found[key] += " " + _markdown(last)
                    else:
                        key = None
    return found


def _is_literal(source: str) -> bool:
    try:
        ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return False
    return True


def _shown_default(key: carboy_config.ConfigKey, override: str | None) -> tuple[str, str]:
    """``(markdown, problem)``: the default as the table shows it, and why it could not be."""
    if key.default is None:
        return ("not set", "") if override is None else (override, "")
    source = key.default
    if _is_literal(source):
        problem = "" if override is None else "has a default override, but its default is a literal"
        return f"`{source}`", problem
    if override is not None:
        return override, ""
    module = key.default_module or key.defined_in
    try:
        value = eval(source, vars(importlib.import_module(module)))
    except Exception:
        return f"`{source}`", f"has the default `{source}`, which cannot be shown: add `default`"
    if value is None or isinstance(value, bool | int | float | str):
        return f"`{value!r}`", ""
    return f"`{source}`", ""


def config_reference() -> tuple[str, list[str]]:
    """The reference's Markdown, and the problems to warn about."""
    keys = carboy_config.scan(SRC)
    meanings = _load_meanings()
    modules = sorted({k.group for k in keys.values()} - {"carboy"})
    from_docstrings = docstring_meanings(modules)
    problems = [f"{MEANINGS.name}: {k} is not read by the code" for k in meanings if k not in keys]
    problems += [f"config read not resolved: {u}" for u in carboy_config.unresolved(SRC)]
    groups: dict[str, list[carboy_config.ConfigKey]] = {}
    for key in keys.values():
        groups.setdefault(key.group, []).append(key)
    order = sorted(groups, key=lambda g: (g != "carboy", g))
    out: list[str] = []
    for group in order:
        title = _GROUP_TITLES.get(group, group)
        out += [f"### {title}", ""]
        if group in _GROUP_INTROS:
            out += [_GROUP_INTROS[group], ""]
        else:
            out += [f"Read by {{mod}}`{group}` (see its [API reference](api.rst)).", ""]
        out += ["| Key | Default | Meaning |", "|---|---|---|"]
        for key in sorted(groups[group], key=lambda k: k.name):
            entry = meanings.get(key.name, {})
            default, problem = _shown_default(key, entry.get("default"))
            if problem:
                problems.append(f"config key {key.name} {problem}")
            meaning = (
                entry.get("meaning") or from_docstrings.get(key.name) or f"See {{mod}}`{group}`."
            )
            readers = sorted(m for m in key.modules if m != group)
            if group == "carboy" or not readers:
                note = ""
            else:
                note = " Also read by " + ", ".join(f"`{m}`" for m in readers) + "."
            row = f"| `{key.name}` | {default} | {meaning}{note} |"
            out.append(row.replace("\n", " "))
        out.append("")
    return "\n".join(out), problems


# -- the scale modules' API ---------------------------------------------------------------


def scale_modules() -> list[str]:
    """``carboy.scale.<name>`` for each public module file under ``src/carboy/scale``."""
    folder = SRC / "carboy" / "scale"
    return [
        f"carboy.scale.{p.stem}" for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")
    ]


def _unexported_exceptions(module_name: str) -> list[str]:
    """Exceptions a module defines but leaves out of ``__all__``: what it raises is its API."""
    module = importlib.import_module(module_name)
    exported = set(getattr(module, "__all__", ()))
    return [
        name
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module_name
        and not name.startswith("_")
        and name not in exported
    ]


def scale_reference() -> str:
    lines: list[str] = []
    for module in scale_modules():
        title = f"``{module}``"
        lines += [title, "~" * len(title), "", f".. automodule:: {module}", ""]
        for name in _unexported_exceptions(module):
            lines += [f".. autoexception:: {module}.{name}", ""]
    return "\n".join(lines)


def _skip_foreign(
    app: Sphinx, what: str, name: str, obj: t.Any, skip: bool, options: t.Any
) -> bool | None:
    """Skip methods another package defined (limits' storages copy theirs into subclasses):
    their docstrings are written for that package's docs, and they are not carboy's API."""
    if isinstance(obj, property):
        target = obj.fget
    elif isinstance(obj, functools.cached_property):
        target = obj.func
    else:
        target = obj
    if inspect.isroutine(target):
        module = getattr(inspect.unwrap(target), "__module__", None) or ""
        if module and module.split(".")[0] not in ("carboy", "builtins"):
            return True
    return None


# -- hooks ----------------------------------------------------------------------------------


#: Markdown files outside docs/ that the site shows as pages of its own: a link to one of
#: them (``[the suite](../../benchmarks/README.md)``) goes to that page.
SHOWN_AS = {"benchmarks/README.md": "benchmarks/suite.md", "README.md": "index.md"}
_LINK = re.compile(r"\]\((?P<path>[^)#\s]+\.md)(?P<anchor>#[^)\s]*)?\)")


def _link_shown_copies(docname: str, text: str) -> str:
    here = (DOCS / docname).parent

    def swap(match: re.Match[str]) -> str:
        target = (here / match["path"]).resolve()
        try:
            outside = target.relative_to(DOCS.parent).as_posix()
        except ValueError:
            return match[0]
        page = SHOWN_AS.get(outside)
        if page is None or target.is_relative_to(DOCS):
            return match[0]
        link = os.path.relpath(DOCS / page, here)
        return f"]({Path(link).as_posix()}{match['anchor'] or ''})"

    return _LINK.sub(swap, text)


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    text = source[0]
    if app.env.doc2path(docname).suffix == ".md":
        text = _link_shown_copies(docname, text)
    if CONFIG_MARKER in text:
        reference, problems = config_reference()
        for problem in problems:
            logger.warning(problem, location=docname)
        app.env.note_dependency(str(MEANINGS))
        text = text.replace(CONFIG_MARKER, reference)
    if SCALE_MARKER in text:
        text = text.replace(SCALE_MARKER, scale_reference())
    if HEADLINE_MARKER in text:
        table = _readme_table()
        app.env.note_dependency(str(table.RESULTS))
        text = text.replace(HEADLINE_MARKER, table.headline(table.load()))
    source[0] = text


def _readme_table() -> t.Any:
    """``benchmarks/readme_table.py``, the one place the headline table is made."""
    path = DOCS.parent / "benchmarks" / "readme_table.py"
    spec = importlib.util.spec_from_file_location("carboy_readme_table", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def public_names() -> list[str]:
    """The names ``carboy/__init__.py`` re-exports (``from .x import Name as Name``)."""
    tree = ast.parse((SRC / "carboy" / "__init__.py").read_text(encoding="utf-8"))
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names += [a.asname for a in node.names if a.asname and a.asname == a.name]
    return names


def _check_public_names(app: Sphinx, env: BuildEnvironment) -> None:
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    modules = env.get_domain("py").modules  # type: ignore[attr-defined]
    for name in public_names():
        if f"carboy.{name}" not in objects and f"carboy.{name}" not in modules:
            logger.warning(f"carboy.{name} (a public name of carboy) is not in the API reference")


def _public_alias(target: str) -> str | None:
    """``carboy.Name[.rest]`` for a target named by its defining module, if Name is public."""
    parts = target.split(".")
    if len(parts) < 3 or parts[0] != "carboy":
        return None
    import carboy

    for split in range(len(parts) - 1, 1, -1):
        module_name, rest = ".".join(parts[:split]), parts[split:]
        try:
            obj: t.Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            obj = getattr(obj, rest[0])
        except AttributeError:
            return None
        for name in public_names():
            if getattr(carboy, name, None) is obj:
                return ".".join(["carboy", name, *rest[1:]])
        return None
    return None


def _unique_carboy_object(env: BuildEnvironment, name: str) -> str | None:
    """The one documented carboy object called *name* (a type hint written bare), if one."""
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    found = [full for full in objects if full.startswith("carboy.") and full.endswith("." + name)]
    return found[0] if len(found) == 1 else None


def _missing_reference(
    app: Sphinx, env: BuildEnvironment, node: t.Any, contnode: nodes.Element
) -> nodes.Element | None:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    domain = env.get_domain("py")
    alias = _public_alias(target) if "." in target else _unique_carboy_object(env, target)
    if alias is None:
        return None
    node = node.deepcopy()
    node["reftarget"] = alias
    return domain.resolve_xref(  # type: ignore[no-any-return]
        env, node["refdoc"], app.builder, node["reftype"], alias, node, contnode
    )


def setup(app: Sphinx) -> dict[str, t.Any]:
    app.connect("source-read", _source_read)
    app.connect("env-check-consistency", _check_public_names)
    app.connect("missing-reference", _missing_reference)
    app.connect("autodoc-skip-member", _skip_foreign)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


__all__ = ["config_reference", "public_names", "scale_modules", "setup"]
