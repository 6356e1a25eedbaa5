"""The compiled matcher that maps a request path and method to a rule.

A :class:`Router` is built from a Werkzeug :class:`~werkzeug.routing.Map` and answers
``match(path, method)`` with ``(rule, view_args)`` for the paths it can decide alone, or
``None`` when the answer needs Werkzeug's full matcher: a 404 that might really be a slash
redirect, a 405, a rule with ``redirect_to``, defaults that redirect, host or subdomain matching,
a converter that refuses the value. The caller then asks Werkzeug, so every edge case keeps
Werkzeug's exact behaviour while the common request costs one dict lookup (static rule) or one
regex match (dynamic rule).

Werkzeug walks a tree of path segments depth first: the static branch before the dynamic ones,
dynamic branches by weight and then in the order they were made. The first rule met whose
regex and method fit is the answer; a converter refusing its value then ends the match (404,
or 405), it does not try another rule. On the way, a state where the path ends but a rule one
slash further fits (``/a`` for ``/a/``) answers with a redirect (or that rule, when it is not
strict), and a path ending in a slash whose state has a non-strict rule answers with it. The
router lists the rules in the order of that walk, with one extra entry for each of those two
slash cases ("twins", always deferred to Werkzeug), so the first entry that matches the path
is the one event Werkzeug meets first.
"""

from __future__ import annotations

import re
import typing as t

from werkzeug.routing import Map as _WerkzeugMap
from werkzeug.routing import Rule, ValidationError
from werkzeug.routing.converters import (
    AnyConverter,
    FloatConverter,
    IntegerConverter,
    UnicodeConverter,
    UUIDConverter,
)

if t.TYPE_CHECKING:
    from werkzeug.routing import BaseConverter

#: ``(rule, allowed methods or None, per-rule regex source, [(group, name, converter)],
#: deferred)``; deferred is ``False`` (decide alone), ``True`` (leave to Werkzeug when the method
#: fits) or :data:`_CHECK_SLASH` (decide alone unless a one-segment value holds a slash).
_Entry = tuple[Rule, "frozenset[str] | None", str, list[tuple[str, str, "BaseConverter"]], t.Any]
#: ``[the alternation of these rules' regexes, or None until first use; rule indexes]``
_Group = list[t.Any]

#: The deferred mark of a rule with a converter that keeps to one path segment in Werkzeug's
#: matcher but whose regex might match a slash in carboy's whole-path regex (custom converters).
_CHECK_SLASH = 2

#: Converters whose regex never matches a slash.
_SLASHLESS = (UnicodeConverter, IntegerConverter, FloatConverter, UUIDConverter)

#: Entry kinds: the rule itself; the path one trailing slash short of a rule ending in ``/``
#: (Werkzeug redirects, or matches a non-strict rule); the path with one slash more than a
#: non-strict rule (Werkzeug matches it).
_RULE, _SHORT, _LONG = 0, 1, 2


class Map(_WerkzeugMap):
    """Werkzeug's :class:`~werkzeug.routing.Map`, counting the rules added to it.

    Flask-compatible: the class of ``flask.Flask.url_map`` (a Werkzeug map). The count lets a
    :class:`Router` notice new rules without listing the map's rules on every request.

    .. versionadded:: 0.1
    """

    #: Incremented by every :meth:`add`.
    version = 0

    def add(self, rulefactory: t.Any) -> None:
        super().add(rulefactory)
        self.version += 1


def _tree_keys(rules: list[Rule]) -> list[tuple[t.Any, ...]]:
    """Each rule's place in Werkzeug's depth-first walk, as a sortable key.

    A key has one item per rule part: ``(0,)`` for a static part (the path's segment picks the
    one static branch, so static branches never compete), ``(1, weight, n)`` for a dynamic part,
    where *n* numbers the distinct dynamic parts leaving the same state in the order the rules
    made them, Werkzeug's tie-break between equal weights. A rule whose parts are a prefix of
    another's sorts first (its state is reached first).
    """
    branches: dict[tuple[t.Any, ...], list[t.Any]] = {}
    keys = []
    for rule in rules:
        state: tuple[t.Any, ...] = ()
        key: list[tuple[t.Any, ...]] = []
        for part in rule._parts:
            if part.static:
                state += (part.content,)
                key.append((0,))
                continue
            siblings = branches.setdefault(state, [])
            # RulePart compares by value: an equal part of another rule is the same branch.
            n = next((i for i, other in enumerate(siblings) if other == part), len(siblings))
            if n == len(siblings):
                siblings.append(part)
            state += (n,)
            key.append((1, part.weight, n))
        keys.append(tuple(key))
    return keys


def _rule_regex(
    rule: Rule, index: int, kind: int
) -> tuple[str, list[tuple[str, str, BaseConverter]], bool]:
    """*rule*'s path as one regex (anchored by the caller), with named groups per variable.

    :param kind: :data:`_RULE`, :data:`_SHORT` (without the rule's trailing slash) or
        :data:`_LONG` (with one slash more).
    :returns: the regex source, the ``(group, variable, converter)`` list, and whether a
        one-segment converter's regex might match a slash.
    """
    pieces: list[str] = []
    groups: list[tuple[str, str, BaseConverter]] = []
    in_path = spans_segments = may_slash = False
    for is_dynamic, data in rule._trace:
        if not in_path:
            in_path = not is_dynamic and data == "|"
            continue
        if is_dynamic:
            group = f"r{index}_{len(groups)}"
            converter = rule._converters[data]
            if not converter.part_isolating:
                spans_segments = True
            elif type(converter) not in _SLASHLESS and not (
                type(converter) is AnyConverter and "/" not in converter.regex
            ):
                may_slash = True
            pieces.append(f"(?P<{group}>{converter.regex})")
            groups.append((group, data, converter))
        else:
            pieces.append(re.escape(data))
    if spans_segments and pieces[-1] == "/":
        # Werkzeug's value of a segment-spanning converter before a trailing slash never ends
        # with a slash itself ("/docs/a//" is no match, then a merged-slashes redirect).
        pieces[-1] = "(?<!/)/"
    if kind == _SHORT:
        pieces[-1] = "(?<!/)" if spans_segments else ""
    elif kind == _LONG:
        pieces.append("/")
    return "".join(pieces), groups, may_slash


def _static_head(rule: Rule) -> str:
    """*rule*'s path as compiled (slashes merged unless the rule says not to) up to its first
    variable: the whole path of a static rule."""
    trace = rule._trace[rule._trace.index((False, "|")) + 1 :]
    head = []
    for is_dynamic, data in trace:
        if is_dynamic:
            break
        head.append(data)
    return "".join(head)


def _first_segment(source_head: str) -> str | None:
    """The first path segment of a rule whose path starts with *source_head* (its static text
    up to the first variable), when that segment is wholly static, else ``None``."""
    segment, slash, _ = source_head[1:].partition("/")
    return segment if slash else None


class Router:
    """A rule table compiled for matching; built once from a map and rebuilt if rules are added.

    :param url_map: the Werkzeug map whose rules are matched.

    .. versionadded:: 0.1
    """

    __slots__ = (
        "_by_segment",
        "_dynamic",
        "_other",
        "_static",
        "_version",
        "url_map",
    )

    def __init__(self, url_map: _WerkzeugMap) -> None:
        self.url_map = url_map
        url_map.update()  # compiles every rule (Werkzeug sorts and fills ``_parts``/``_trace``)
        rules = list(url_map.iter_rules())
        self._version = getattr(url_map, "version", 0)

        # Endpoints with a rule that carries defaults can answer with a redirect to the rule
        # that provides them (Werkzeug's ``redirect_defaults``); leave those to Werkzeug.
        endpoints_with_defaults = {r.endpoint for r in rules if r.defaults}

        entries: list[tuple[tuple[t.Any, ...], int, Rule]] = []
        for rule, key in zip(rules, _tree_keys(rules), strict=True):
            entries.append((key, _RULE, rule))
            if rule._trace[-1] == (False, "/") and rule._trace[-2] != (False, "|"):
                entries.append((key, _SHORT, rule))
            if not rule.strict_slashes:
                entries.append(((*key, (2,)), _LONG, rule))
        # Stable: entries of one state keep the order their rules were added, as Werkzeug's do.
        entries.sort(key=lambda entry: entry[0])

        self._static: dict[str, list[tuple[Rule, frozenset[str] | None, bool]]] = {}
        self._dynamic: list[_Entry] = []
        segment_of: list[str | None] = []
        for _, kind, rule in entries:
            methods = frozenset(rule.methods) if rule.methods is not None else None
            deferred: t.Any = bool(
                kind != _RULE
                or rule.redirect_to is not None
                or rule.alias
                or rule.websocket
                or rule.host
                or rule.subdomain
                or rule.endpoint in endpoints_with_defaults
                or url_map.host_matching
            )
            head = _static_head(rule)
            if not rule.arguments and kind != _LONG:
                # Werkzeug's walk meets the all-static state of a path before any other.
                self._static.setdefault(head[:-1] if kind == _SHORT else head, []).append(
                    (rule, methods, deferred)
                )
                continue
            index = len(self._dynamic)
            source, groups, may_slash = _rule_regex(rule, index, kind)
            if may_slash and not deferred:
                deferred = _CHECK_SLASH
            # PERF: a rule's own regex is only needed when an earlier alternative matched but
            # was refused (method); it is compiled then, not here (~110 KiB less resident
            # memory on a 200-rule map).
            self._dynamic.append((rule, methods, source, groups, deferred))
            segment_of.append(
                _first_segment(head + "/" if kind == _LONG and not rule.arguments else head)
            )
        # PERF: the dynamic rules are grouped by their first path segment when it is static
        # ("users" in /users/<int:id>); a path is tested against one alternation regex holding
        # its segment's rules plus those whose first segment is dynamic, in priority order, in
        # C. The first alternative that matches the whole path is the entry Werkzeug would meet
        # first. On a 200-rule map this cut matching a dynamic path from ~3.5 to ~0.6 µs. A
        # group's regex is compiled when a path first needs it: segments never requested cost
        # no compiled pattern (~130 KiB resident on a 200-rule map of distinct segments).
        self._by_segment: dict[str, _Group] = {
            segment: [None, [i for i, seg in enumerate(segment_of) if seg in (segment, None)]]
            for segment in set(segment_of)
            if segment is not None
        }
        # A path starting with "//" is matched by Werkzeug with its leading slashes merged into
        # one; an empty group leaves it (and a bare "/" no static rule has) to Werkzeug.
        self._by_segment[""] = [None, []]
        self._other: _Group = [None, [i for i, seg in enumerate(segment_of) if seg is None]]

    def _compile(self, group: _Group) -> re.Pattern[str] | None:
        """*group*'s alternation regex, compiled on first use; ``None`` for no rules."""
        regex, indexes = group
        if regex is None and indexes:
            dynamic = self._dynamic
            regex = group[0] = re.compile("|".join(f"(?P<r{i}>{dynamic[i][2]})" for i in indexes))
        return t.cast("re.Pattern[str] | None", regex)

    def is_stale(self) -> bool:
        """Whether rules were added to the map since this router was built.

        Only a :class:`Map` counts its rules; with another map class, the app drops its router
        whenever a rule is registered through it instead.
        """
        return getattr(self.url_map, "version", 0) != self._version

    def match(self, path: str, method: str) -> tuple[Rule, dict[str, t.Any]] | None:
        """Match *path* (a decoded, ``/``-prefixed path) and *method* (upper case).

        :returns: ``(rule, view_args)`` with converted values and the rule's defaults, exactly
            as Werkzeug's matcher would answer, or ``None`` when Werkzeug's matcher must decide
            (including every error and redirect answer).
        """
        static = self._static.get(path)
        if static is not None:
            for rule, methods, deferred in static:
                if methods is None or method in methods:
                    if deferred:
                        return None
                    return rule, dict(rule.defaults) if rule.defaults else {}
        group = self._by_segment.get(path[1:].partition("/")[0], self._other)
        any_rule = group[0] or self._compile(group)
        if any_rule is None:
            return None
        order = group[1]
        found = any_rule.fullmatch(path)
        if found is None:
            return None
        # ``lastgroup`` is the outermost group that closed last: the matching alternative.
        start = int(found.lastgroup[1:])  # type: ignore[index]
        for index in order[order.index(start) :]:
            rule, methods, source, groups, deferred = self._dynamic[index]
            matched = found if index == start else re.fullmatch(source, path)
            if matched is None:
                continue
            if methods is not None and method not in methods:
                continue
            if deferred:
                if deferred is True:
                    return None
                # Werkzeug matches such a converter within one segment.
                for group_name, _, converter in groups:
                    if converter.part_isolating and "/" in matched.group(group_name):
                        return None
            values: dict[str, t.Any] = {}
            try:
                for group_name, name, converter in groups:
                    values[name] = converter.to_python(matched.group(group_name))
            except ValidationError:
                # Werkzeug ends the match here (404, or 405 if a rule passed over allowed
                # other methods); it does not try the next rule.
                return None
            if rule.defaults:
                values.update(rule.defaults)
            return rule, values
        return None

    def surely_missing(self, path: str) -> bool:
        """Whether Werkzeug would answer 404 for *path*, decided without asking it.

        True only when no rule matches the path, no rule matches it with a trailing slash
        added or taken off where Werkzeug would redirect or match (the twin entries), and no
        doubled slash could make a merged-slashes redirect.
        """
        if "//" in path:
            return False
        if path in self._static:
            return False
        segment = path[1:].partition("/")[0]
        any_rule = self._compile(
            self._by_segment.get(segment, self._other) if segment else self._other
        )
        return any_rule is None or any_rule.fullmatch(path) is None
