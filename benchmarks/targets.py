"""carboy's performance targets, evaluated against the figures of one run.

Each target is a ratio (or a growth) with a limit. A target whose figures were not measured in
the run (``--only``, a narrowed ``--frameworks`` list...) is reported as not measured, never
as met.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable
from dataclasses import asdict, dataclass

Results = dict[str, t.Any]


@dataclass
class Outcome:
    target: str
    #: "≤ 1.50", "≥ 0.85"...
    limit: str
    measured: float | None
    met: bool | None
    detail: str

    def as_dict(self) -> dict[str, t.Any]:
        return asdict(self)


def _get(results: Results, *path: str) -> t.Any:
    node: t.Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _inprocess_ratio(
    scenario: str, carboy: str, other: str, limit: float, label: str
) -> Callable[[Results], Outcome]:
    def evaluate(results: Results) -> Outcome:
        target = f"in-process {scenario}: carboy µs ÷ {label} µs"
        mine = _get(results, "inprocess", scenario, carboy, "us")
        theirs = _get(results, "inprocess", scenario, other, "us")
        if mine is None or theirs is None:
            return Outcome(target, f"≤ {limit:.2f}", None, None, "not measured in this run")
        ratio = mine / theirs
        detail = f"carboy {mine:.1f} µs, {label} {theirs:.1f} µs"
        return Outcome(target, f"≤ {limit:.2f}", ratio, ratio <= limit, detail)

    return evaluate


def _ceiling_ratio(
    server: str, carboy: str, raw: str, limit: float, label: str
) -> Callable[[Results], Outcome]:
    def evaluate(results: Results) -> Outcome:
        target = f"end-to-end hello on {label}: carboy req/s ÷ raw app req/s"
        mine = _get(results, "endtoend", server, carboy, "scenarios", "hello", "rps")
        theirs = _get(results, "endtoend", server, raw, "scenarios", "hello", "rps")
        if mine is None or theirs is None:
            return Outcome(target, f"≥ {limit:.2f}", None, None, "not measured in this run")
        ratio = mine / theirs
        detail = f"carboy {mine:,.0f} req/s, raw {theirs:,.0f} req/s"
        return Outcome(target, f"≥ {limit:.2f}", ratio, ratio >= limit, detail)

    return evaluate


def _counts(entry: Results | None) -> tuple[str, str]:
    if entry is None:
        return "10,000", "100,000"
    return f"{entry['points'][0]['requests']:,}", f"{entry['points'][-1]['requests']:,}"


def _rss_vs_flask(results: Results) -> Outcome:
    mine = _get(results, "memory", "carboy-wsgi")
    theirs = _get(results, "memory", "flask")
    target = f"worker RSS after {_counts(mine)[0]} hello requests: carboy ÷ Flask"
    if mine is None or theirs is None or mine["server"] != theirs["server"]:
        return Outcome(target, "≤ 1.00", None, None, "not measured in this run")
    a, b = mine["points"][0], theirs["points"][0]
    ratio = a["rss_mb"] / b["rss_mb"]
    detail = f"{mine['server']}: carboy {a['rss_mb']:.1f} MiB, Flask {b['rss_mb']:.1f} MiB"
    return Outcome(target, "≤ 1.00", ratio, ratio <= 1.0, detail)


def _rss_growth(framework: str, label: str) -> Callable[[Results], Outcome]:
    def evaluate(results: Results) -> Outcome:
        entry = _get(results, "memory", framework)
        first_count, last_count = _counts(entry)
        target = f"{label} worker RSS growth from {first_count} to {last_count} hello requests"
        if entry is None:
            return Outcome(target, "≤ 2%", None, None, "not measured in this run")
        first, last = entry["points"][0], entry["points"][-1]
        detail = f"{entry['server']}: {first['rss_mb']:.2f} MiB, then {last['rss_mb']:.2f} MiB"
        growth = entry["growth_pct"]
        return Outcome(target, "≤ 2%", growth, growth <= 2.0, detail)

    return evaluate


TARGETS: tuple[Callable[[Results], Outcome], ...] = (
    _inprocess_ratio("hello", "carboy-wsgi", "falcon", 1.5, "Falcon"),
    _inprocess_ratio("json", "carboy-wsgi", "falcon", 1.5, "Falcon"),
    _inprocess_ratio("hello", "carboy-wsgi", "flask", 0.12, "Flask"),
    _inprocess_ratio("json", "carboy-wsgi", "flask", 0.12, "Flask"),
    _inprocess_ratio("hello", "carboy-asgi", "starlette", 0.8, "Starlette (ASGI)"),
    _ceiling_ratio("granian-wsgi", "carboy-wsgi", "raw-wsgi", 0.85, "granian WSGI"),
    _ceiling_ratio("granian-asgi", "carboy-asgi", "raw-asgi", 0.85, "granian ASGI"),
    _rss_vs_flask,
    _rss_growth("carboy-wsgi", "carboy (WSGI)"),
    _rss_growth("carboy-asgi", "carboy (ASGI)"),
)


def evaluate(results: Results) -> list[Outcome]:
    return [target(results) for target in TARGETS]
