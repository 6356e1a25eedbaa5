"""Find every config key carboy's code reads, with its default, by reading the code.

The configuration reference (``docs/config.md``) is rendered from :func:`scan`, so the table
cannot drift from the code. Nothing is imported to find the keys: the module sources under
``src/carboy`` are parsed and these are collected:

* the keys of module-level dicts named ``DEFAULT_CONFIG`` or ``_DEFAULTS`` (the core's
  defaults and each scale module's), with their values;
* reads of a mapping whose expression ends in ``config`` (``app.config``, ``self.config``,
  ``config``): ``x.config["K"]``, ``.get("K", default)``, ``.setdefault("K", default)``,
  ``.pop("K", default)`` and ``"K" in x.config``;
* ``ConfigAttribute("K")``.

A key that is not a string literal is followed back: a parameter of the enclosing function is
resolved at that function's call sites in the same module (``_config("MAX_FORM_PARTS", 1_000)``),
an f-string over such parameters is expanded (the limiter's ``f"{keys}_PER_METHOD"``), and a
loop variable over a local dict literal takes that dict's keys or values. A key the scan cannot
resolve is reported by :func:`unresolved`, which the test suite requires to be empty.

``tests/test_docs.py`` checks the result independently, by recording the keys a real app and
each scale extension read at run time.
"""

from __future__ import annotations

import ast
import itertools
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

#: Names of module-level dicts that hold config defaults.
DEFAULT_DICTS = ("DEFAULT_CONFIG", "_DEFAULTS")
_READ_METHODS = ("get", "setdefault", "pop")
_MISSING = "<missing>"


@dataclass
class ConfigKey:
    """One config key, where it is read and its default (Python source, or None if unset)."""

    name: str
    default: str | None = None
    default_from: str = ""  # "dict" (a defaults dict) or "read" (the reading call) or ""
    default_module: str = ""  # where the default's source text is (to evaluate it there)
    modules: set[str] = field(default_factory=set)
    defined_in: str = ""  # the module whose defaults dict holds it

    @property
    def group(self) -> str:
        """The module the reference lists the key under: its defaults dict's module, else
        ``carboy`` when the core reads it, else the first scale module that reads it."""
        if self.defined_in:
            return _group(self.defined_in)
        groups = sorted({_group(m) for m in self.modules})
        return "carboy" if "carboy" in groups else groups[0]


def _group(module: str) -> str:
    return module if module.startswith("carboy.scale.") else "carboy"


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_config(node: ast.AST) -> bool:
    text = ast.unparse(node)
    return text == "config" or text.endswith(".config")


class _Scope:
    """A function (or the module) and its parent, to resolve names to call-site values."""

    def __init__(self, node: ast.AST, parent: _Scope | None) -> None:
        self.node = node
        self.parent = parent
        self.params: list[str] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            self.params = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]


class _Scanner(ast.NodeVisitor):
    def __init__(self, module: str, tree: ast.Module) -> None:
        self.module = module
        self.tree = tree
        self.reads: list[tuple[list[str], list[str | None]]] = []
        self.defaults: dict[str, str] = {}
        self.unresolved: list[str] = []
        self.scopes: dict[int, _Scope] = {}
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.parents: dict[int, ast.AST] = {}
        self._index(tree, None)

    # -- indexing -------------------------------------------------------------------------

    def _index(self, node: ast.AST, scope: _Scope | None) -> None:
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef):
            scope = _Scope(node, scope)
            if not isinstance(node, ast.Module):
                self.functions.setdefault(node.name, []).append(node)
        self.scopes[id(node)] = t.cast(_Scope, scope)
        for child in ast.iter_child_nodes(node):
            self.parents[id(child)] = node
            self._index(child, scope)

    # -- resolving ------------------------------------------------------------------------

    def _resolve(self, expr: ast.AST | None, at: ast.AST, depth: int = 0) -> list[str | None]:
        """The source texts an expression can stand for (one per call site), else []."""
        if expr is None:
            return [None]
        if depth > 4:
            return []
        if isinstance(expr, ast.Constant):
            return [ast.unparse(expr)]
        if isinstance(expr, ast.JoinedStr):
            pieces: list[list[str]] = []
            for value in expr.values:
                if isinstance(value, ast.Constant):
                    pieces.append([str(value.value)])
                elif isinstance(value, ast.FormattedValue):
                    options = self._resolve(value.value, at, depth + 1)
                    texts = [_literal_str(o) for o in options]
                    if not texts or any(s is None for s in texts):
                        return []
                    pieces.append(t.cast(list[str], texts))
            return [repr("".join(combo)) for combo in itertools.product(*pieces)]
        if isinstance(expr, ast.Name):
            from_loop = self._from_loop(expr, at)
            if from_loop is not None:
                return from_loop
            return self._from_call_sites(expr.id, at, depth)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            # ``name.value`` where ``name`` is a loop variable: substitute, keep the attribute.
            owners = self._from_loop(expr.value, at)
            if owners:
                return [f"{o}.{expr.attr}" for o in owners if o is not None]
        return [ast.unparse(expr)]

    def _loops(self, at: ast.AST) -> t.Iterator[tuple[ast.expr, ast.expr]]:
        """``(target, iterable)`` of the ``for`` loops and comprehensions around *at*."""
        node: ast.AST | None = at
        while node is not None:
            parent = self.parents.get(id(node))
            if isinstance(parent, ast.For) and node in parent.body:
                yield parent.target, parent.iter
            if isinstance(node, ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
                for gen in node.generators:
                    yield gen.target, gen.iter
            node = parent

    def _from_loop(self, name: ast.Name, at: ast.AST) -> list[str | None] | None:
        """The values a loop variable takes, when it loops over a literal (local or global)."""
        for target, source in self._loops(at):
            targets = target.elts if isinstance(target, ast.Tuple) else [target]
            names = [n.id if isinstance(n, ast.Name) else None for n in targets]
            if name.id not in names:
                continue
            position = names.index(name.id)
            method = None
            if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute):
                method = source.func.attr
                source = source.func.value
            literal = self._literal(source, at)
            if isinstance(literal, ast.Dict):
                if method == "items":
                    column = literal.keys if position == 0 else literal.values
                else:
                    column = literal.values if method == "values" else literal.keys
            elif isinstance(literal, ast.Tuple | ast.List | ast.Set) and len(targets) == 1:
                column = list(literal.elts)
            else:
                return None
            return [ast.unparse(c) for c in column if c is not None]
        return None

    def _literal(self, source: ast.AST, at: ast.AST) -> ast.AST | None:
        """*source* itself, or the value a name in the function or the module was set to."""
        if not isinstance(source, ast.Name):
            return source
        for scope_node in (self.scopes[id(at)].node, self.tree):
            for node in ast.walk(scope_node):
                if isinstance(node, ast.Assign) and any(
                    isinstance(tg, ast.Name) and tg.id == source.id for tg in node.targets
                ):
                    return node.value
                if (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)
                    and node.target.id == source.id
                ):
                    return node.value
        return None

    def _from_call_sites(self, name: str, at: ast.AST, depth: int) -> list[str | None]:
        scope: _Scope | None = self.scopes[id(at)]
        while scope is not None and name not in scope.params:
            scope = scope.parent
        if scope is None or isinstance(scope.node, ast.Module):
            return []
        func = t.cast(ast.FunctionDef, scope.node)
        position = scope.params.index(name)
        out: list[str | None] = []
        for call in ast.walk(self.tree):
            if not (isinstance(call, ast.Call) and _called_name(call) == func.name):
                continue
            arg: ast.AST | None = None
            for keyword in call.keywords:
                if keyword.arg == name:
                    arg = keyword.value
            offset = 1 if scope.params[:1] in (["self"], ["cls"]) else 0
            if arg is None and position - offset < len(call.args) and position >= offset:
                arg = call.args[position - offset]
            if arg is None:
                continue
            out.extend(self._resolve(arg, call, depth + 1))
        return out

    # -- collecting -----------------------------------------------------------------------

    def _read(self, key: ast.AST, default: ast.AST | None, at: ast.AST) -> None:
        if ast.unparse(key) == "self.__name__":
            return  # ConfigAttribute's own accessors: its call sites name the keys
        keys = self._resolve(key, at)
        names = [_literal_str(k) for k in keys]
        if not names or any(n is None for n in names):
            self.unresolved.append(
                f"{self.module}:{getattr(at, 'lineno', '?')}: {ast.unparse(key)}"
            )
            return
        defaults = self._resolve(default, at) if default is not None else [None]
        if len(defaults) != len(names):
            defaults = [defaults[0] if len(set(defaults)) == 1 else None] * len(names)
        self.reads.append((t.cast(list[str], names), defaults))

    def visit_Assign(self, node: ast.Assign) -> None:
        self._defaults(node.targets, node.value, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._defaults([node.target], node.value, node)
        self.generic_visit(node)

    def _defaults(self, targets: list[ast.expr], value: ast.expr, node: ast.AST) -> None:
        if not isinstance(self.scopes[id(node)].node, ast.Module):
            return
        if not any(isinstance(tg, ast.Name) and tg.id in DEFAULT_DICTS for tg in targets):
            return
        if isinstance(value, ast.Dict):
            for k, v in zip(value.keys, value.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(k.value, str):
                    self.defaults[k.value] = _source(v)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _is_config(node.value):
            self._read(node.slice, None, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr in _READ_METHODS
            and _is_config(func.value)
            and node.args
        ):
            self._read(node.args[0], node.args[1] if len(node.args) > 1 else None, node)
        elif _called_name(node) == "ConfigAttribute" and node.args:
            self._read(node.args[0], None, node)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if (
            len(node.ops) == 1
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and _is_config(node.comparators[0])
        ):
            self._read(node.left, None, node)
        self.generic_visit(node)


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Subscript):  # ConfigAttribute[bool]("TESTING")
        func = func.value
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal_str(source: str | None) -> str | None:
    if source is None:
        return None
    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def _source(node: ast.AST) -> str:
    text = ast.get_source_segment(_CURRENT_SOURCE[0], node) if _CURRENT_SOURCE else None
    return text if text is not None else ast.unparse(node)


_CURRENT_SOURCE: list[str] = []


def _scan_file(path: Path, module: str) -> _Scanner:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    _CURRENT_SOURCE[:] = [text]
    try:
        scanner = _Scanner(module, tree)
        scanner.visit(tree)
    finally:
        _CURRENT_SOURCE.clear()
    return scanner


def _scan(src: Path) -> tuple[dict[str, ConfigKey], list[str]]:
    keys: dict[str, ConfigKey] = {}
    unresolved: list[str] = []
    for path in sorted((src / "carboy").rglob("*.py")):
        module = _module_name(path, src)
        scanner = _scan_file(path, module)
        unresolved.extend(scanner.unresolved)
        for name, default in scanner.defaults.items():
            key = keys.setdefault(name, ConfigKey(name))
            key.defined_in = key.defined_in or module
            key.default, key.default_from, key.default_module = default, "dict", module
        for names, defaults in scanner.reads:
            for name, default in zip(names, defaults, strict=True):
                key = keys.setdefault(name, ConfigKey(name))
                key.modules.add(module)
                if key.default_from != "dict" and default is not None and key.default is None:
                    key.default, key.default_from, key.default_module = default, "read", module
    return keys, unresolved


def scan(src: Path) -> dict[str, ConfigKey]:
    """Every config key read under ``src/carboy``, by name (see the module docs)."""
    return _scan(src)[0]


def unresolved(src: Path) -> list[str]:
    """Config reads whose key the scan could not resolve (``module:line: expression``)."""
    return _scan(src)[1]
