"""Writing one run's results: ``results.json`` (everything) and ``results.md`` (tables).

Every ratio in the tables is carboy ÷ the other framework, both measured in this run: carboy
over WSGI against the WSGI frameworks, carboy over ASGI against the ASGI ones. For µs per
request a ratio below 1 means carboy is faster; for req/s a ratio above 1 does.
"""

from __future__ import annotations

import json
import typing as t
from collections.abc import Callable, Sequence
from pathlib import Path

from .apps import BY_KEY as FRAMEWORKS
from .scenarios import BY_NAME as SCENARIOS
from .servers import BY_KEY as SERVERS

Results = dict[str, t.Any]
NA = "n/a"


def number(value: float | None, unit: str = "") -> str:
    """A figure with about three significant digits (thousands separated)."""
    if value is None:
        return NA
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return text + unit


def ratio(mine: float | None, theirs: float | None) -> str:
    if mine is None or theirs is None or theirs == 0:
        return NA
    return f"{mine / theirs:.2f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> list[str]:
    """A markdown table: the first *text_columns* columns left-aligned, the rest (figures)
    right-aligned."""
    lines = ["| " + " | ".join(header) + " |"]
    aligns = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines.append("|" + "|".join(aligns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _columns(keys: t.Iterable[str], interface: str) -> tuple[str, list[str]]:
    """carboy's key and the other frameworks' keys (registry order) for *interface*."""
    present = [k for k in FRAMEWORKS if k in set(keys) and FRAMEWORKS[k].interface == interface]
    carboy = next((k for k in present if FRAMEWORKS[k].is_carboy), "")
    return carboy, [k for k in present if k != carboy]


def _label(key: str) -> str:
    return FRAMEWORKS[key].label


def _comparison(
    rows_source: Sequence[tuple[str, Callable[[str], float | None]]],
    carboy: str,
    others: list[str],
    fmt: Callable[[float | None], str] = number,
) -> list[list[str]]:
    """Rows of ``title | carboy | others... | carboy ÷ each other``."""
    rows = []
    for title, value in rows_source:
        mine = value(carboy) if carboy else None
        figures = [fmt(mine)] + [fmt(value(k)) for k in others]
        rows.append([title, *figures, *(ratio(mine, value(k)) for k in others)])
    return rows


def _comparison_header(first: str, carboy: str, others: list[str]) -> list[str]:
    return [
        first,
        _label(carboy) if carboy else "carboy",
        *(_label(k) for k in others),
        *(f"carboy ÷ {_label(k)}" for k in others),
    ]


# -- sections -----------------------------------------------------------------------------------


def _machine(meta: Results) -> list[str]:
    machine = meta["machine"]
    versions = ", ".join(f"{name} {v}" for name, v in machine["versions"].items())
    load = machine.get("load_average_at_start")
    return [
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores; {machine['os']}",
        f"- Python {machine['python']}; {machine['wrk']}",
        f"- carboy at {machine['carboy_commit']}",
        f"- Versions: {versions}",
        f"- Load average when the run started: {', '.join(f'{x:.2f}' for x in load)}"
        if load
        else "- Load average: unknown",
        "",
    ]


def _targets(results: Results) -> list[str]:
    rows = []
    for outcome in results.get("targets", []):
        measured = outcome["measured"]
        if measured is None:
            shown, status = NA, "not measured"
        else:
            shown = f"{measured:.2f}%" if outcome["limit"].endswith("%") else f"{measured:.2f}"
            status = "**met**" if outcome["met"] else "**not met**"
        rows.append([outcome["target"], outcome["limit"], shown, status, outcome["detail"]])
    if not rows:
        return []
    return [
        "## Targets",
        "",
        "Evaluated from this run's figures; nothing here is typed in by hand.",
        "",
        *table(["target", "limit", "measured", "", "figures"], rows, text_columns=5),
    ]


def _inprocess(results: Results) -> list[str]:
    data = results.get("inprocess")
    if not data:
        return []
    settings = results["meta"]["settings"]["inprocess"]
    lines = [
        "## In process",
        "",
        "The app object called directly (no server, no sockets), in one process. µs per "
        f"request: best of {settings['repeats']} loops of about {settings['target']} s each, "
        "the loops taking turns between frameworks. Calls: Python function calls per request "
        "counted by cProfile (C builtins excluded), on the calling thread only.",
        "",
    ]
    keys = {k for row in data.values() for k in row}
    for interface in ("wsgi", "asgi"):
        carboy, others = _columns(keys, interface)
        if not carboy and not others:
            continue
        name = interface.upper()
        us_rows = [
            (SCENARIOS[s].title, lambda key, s=s: data[s].get(key, {}).get("us")) for s in data
        ]
        lines += [f"### {name}: µs per request (lower is faster)", ""]
        lines += table(
            _comparison_header("scenario", carboy, others),
            _comparison(us_rows, carboy, others),
        )
        shown = [carboy, *others] if carboy else others
        calls_rows = []
        for scenario in data:
            row = [SCENARIOS[scenario].title]
            for key in shown:
                calls = data[scenario].get(key, {}).get("calls")
                row.append(NA if calls is None else f"{calls:.0f}")
            calls_rows.append(row)
        lines += [f"### {name}: Python function calls per request", ""]
        lines += table(["scenario", *(_label(k) for k in shown)], calls_rows)
    return lines


def _endtoend(results: Results) -> list[str]:
    data = results.get("endtoend")
    if not data:
        return []
    settings = results["meta"]["settings"]["endtoend"]
    rounds = settings["rounds"]
    lines = [
        "## End to end",
        "",
        f"Each app behind each server, one worker process pinned to CPU {settings['server_cpu']}; "
        f"`wrk -t1 -c{settings['connections']}` pinned to CPU {settings['client_cpu']}. "
        f"Per scenario: {settings['warmup']} s of warm-up, then {rounds} round(s) of "
        f"{settings['duration'] / rounds:g} s per framework, the rounds taking turns between "
        "frameworks; the median round is shown, errors are summed over all rounds. Peak RSS is "
        "the worker's high-water mark over the whole run of that server.",
        "",
    ]
    for server_key, per_framework in data.items():
        lines += _server(server_key, per_framework)
    return lines


def _server(server_key: str, per_framework: dict[str, t.Any]) -> list[str]:
    """One server's tables: req/s with ratios (plus peak RSS and errors), then latency."""
    server = SERVERS[server_key]
    carboy, others = _columns(per_framework, server.interface)
    shown = [carboy, *others] if carboy else others
    scenarios = [s for s in SCENARIOS if any(s in e["scenarios"] for e in per_framework.values())]

    def figure(scenario: str, field: str) -> Callable[[str], float | None]:
        def value(key: str) -> float | None:
            entry = per_framework.get(key, {}).get("scenarios", {}).get(scenario)
            return None if entry is None else entry[field]

        return value

    def peak_rss(key: str) -> float | None:
        return t.cast("float | None", per_framework.get(key, {}).get("peak_rss_mb"))

    rows = [(SCENARIOS[s].title, figure(s, "rps")) for s in scenarios]
    rows.append(("worker peak RSS (MiB)", peak_rss))
    comparison = _comparison(rows, carboy, others)
    errors = [
        sum(s["errors"] for s in per_framework[k]["scenarios"].values()) if k in per_framework
        else None
        for k in shown
    ]  # fmt: skip
    comparison.append(
        ["errors (all scenarios)", *(NA if e is None else f"{e:.0f}" for e in errors)]
        + [""] * len(others)
    )
    lines = [f"### {server.label}: requests per second (higher is faster)", ""]
    lines += table(_comparison_header("scenario", carboy, others), comparison)

    latency_rows = []
    for s in scenarios:
        row = [SCENARIOS[s].title]
        for key in shown:
            entry = per_framework.get(key, {}).get("scenarios", {}).get(s)
            if entry is None:
                row.append(NA)
                continue
            text = f"{number(entry['p50_ms'])} / {number(entry['p99_ms'])}"
            if entry["errors"]:
                text += f" ({entry['errors']} errors)"
            row.append(text)
        latency_rows.append(row)
    lines += [f"### {server.label}: latency p50 / p99 (ms)", ""]
    lines += table(["scenario", *(_label(k) for k in shown)], latency_rows)
    return lines


def _memory(results: Results) -> list[str]:
    data = results.get("memory")
    if not data:
        return []
    counts = max((len(entry["points"]) for entry in data.values()), default=0)
    first = next(iter(data.values()))
    header = [
        "framework",
        "server",
        *(f"RSS after {p['requests']:,} req." for p in first["points"][:counts]),
        "growth",
        "peak RSS",
    ]
    rows = []
    for key, entry in data.items():
        framework = FRAMEWORKS[key]
        rows.append(
            [
                f"{framework.label} ({framework.interface.upper()})",
                SERVERS[entry["server"]].label,
                *(f"{p['rss_mb']:.1f} MiB" for p in entry["points"]),
                f"{entry['growth_pct']:+.2f}%",
                f"{entry['peak_rss_mb']:.1f} MiB",
            ]
        )
    return [
        "## Worker memory over many requests",
        "",
        "A fresh worker serves hello; wrk exits by itself once the given number of responses "
        "has arrived (the count includes the server's startup probe), and the worker's RSS is "
        "read half a second later.",
        "",
        *table(header, rows, text_columns=2),
    ]


def _notes(results: Results) -> list[str]:
    notes = results.get("notes", [])
    if not notes:
        return []
    return ["## Notes", "", *(f"- {note}" for note in notes), ""]


def markdown(results: Results) -> str:
    meta = results["meta"]
    charts = [f"![{name}]({name}.png)" for name in meta.get("charts", [])]
    lines = [
        "# carboy benchmark results",
        "",
        f"Generated by `{meta['command']}` ({meta['mode']} run) on {meta['started']}, "
        f"in {meta['seconds'] / 60:.1f} minutes. Every ratio is carboy ÷ the other framework, "
        "measured in this same run: below 1 means carboy is faster for µs, above 1 for req/s. "
        "Absolute figures depend on the machine; compare ratios. How to rerun: "
        "`benchmarks/README.md`.",
        "",
        *(f"{chart}\n" for chart in charts),
        *_targets(results),
        *_inprocess(results),
        *_endtoend(results),
        *_memory(results),
        *_notes(results),
        *_machine(meta),
    ]
    return "\n".join(lines).rstrip() + "\n"


def write(results: Results, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    md_path = out / "results.md"
    md_path.write_text(markdown(results))
    return [md_path, json_path]
