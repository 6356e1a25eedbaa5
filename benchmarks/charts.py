"""Charts of one run's results (PNG, matplotlib's Agg backend): grouped bars per scenario."""

from __future__ import annotations

import math
import typing as t
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .apps import BY_KEY as FRAMEWORKS
from .scenarios import NAMES
from .servers import BY_KEY as SERVERS

Results = dict[str, t.Any]
#: One colour per framework label, the same in every panel.
COLORS = {
    "carboy": "#c0392b",
    "Flask": "#2e86c1",
    "Quart": "#85c1e9",
    "Falcon": "#28b463",
    "Bottle": "#af7ac5",
    "Starlette": "#34495e",
    "raw WSGI": "#f39c12",
    "raw ASGI": "#f39c12",
}


def _bars(
    ax: t.Any,
    scenarios: Sequence[str],
    keys: Sequence[str],
    value: t.Callable[[str, str], float | None],
    title: str,
    ylabel: str,
) -> None:
    """Grouped bars: one group per scenario, one bar per framework that has a figure."""
    width = 0.8 / max(1, len(keys))
    figures = [f for s in scenarios for k in keys if (f := value(s, k))]
    for i, key in enumerate(keys):
        framework = FRAMEWORKS[key]
        color = COLORS.get(framework.label, "#95a5a6")
        xs, heights = [], []
        for j, scenario in enumerate(scenarios):
            figure = value(scenario, key)
            if figure is not None:
                xs.append(j + (i - (len(keys) - 1) / 2) * width)
                heights.append(figure)
        ax.bar(xs, heights, width, label=framework.label, color=color)
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set_yscale("log")
    if figures:  # bars rise from the decade below the smallest figure, legend room on top
        ax.set_ylim(10 ** math.floor(math.log10(min(figures))), max(figures) * 4)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small", ncols=min(5, len(keys)), loc="upper left")


def _ordered(keys: t.Iterable[str], interface: str) -> list[str]:
    wanted = set(keys)
    return [k for k, f in FRAMEWORKS.items() if k in wanted and f.interface == interface]


def inprocess(results: Results, path: Path) -> Path | None:
    data = results.get("inprocess")
    if not data:
        return None
    scenarios = list(data)
    keys = {k for row in data.values() for k in row}
    panels = [(i, _ordered(keys, i)) for i in ("wsgi", "asgi") if _ordered(keys, i)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for ax, (interface, ordered) in zip(axes[:, 0], panels, strict=True):
        _bars(
            ax,
            scenarios,
            ordered,
            lambda s, k: data[s].get(k, {}).get("us"),
            f"In process, {interface.upper()}: µs per request (log scale, lower is faster)",
            "µs per request",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def endtoend(results: Results, path: Path) -> Path | None:
    data = results.get("endtoend")
    if not data:
        return None
    servers = list(data)
    columns = 2 if len(servers) > 1 else 1
    rows = (len(servers) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(8 * columns, 4.4 * rows), squeeze=False)
    for ax, server in zip(axes.flat, servers, strict=False):
        _server_bars(ax, server, data[server])
    for ax in list(axes.flat)[len(servers) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _server_bars(ax: t.Any, server: str, per_framework: dict[str, t.Any]) -> None:
    scenarios = [
        s for s in NAMES if any(s in entry["scenarios"] for entry in per_framework.values())
    ]
    _bars(
        ax,
        scenarios,
        _ordered(per_framework, SERVERS[server].interface),
        lambda s, k: per_framework.get(k, {}).get("scenarios", {}).get(s, {}).get("rps"),
        f"{SERVERS[server].label}: requests/s (log scale, higher is faster)",
        "requests per second",
    )
