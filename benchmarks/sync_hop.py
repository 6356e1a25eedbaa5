"""What a ``def`` view costs under an ASGI server: the hop to carboy's thread pool.

Under ASGI, carboy runs an ``async def`` view on the server's event loop and sends an endpoint
whose view and hooks are all ``def`` to its thread pool, one hop per request. This measures
that hop with the benchmark suite's own apps, drivers, servers and wrk settings: carboy's
benchmark app with ``def`` views (the app WSGI servers get) and with the same views declared
``async def``, each served as an ASGI app, next to the ``def`` app under WSGI.

    python benchmarks/sync_hop.py                   # in process and end to end, ~2 minutes
    python benchmarks/sync_hop.py --only inprocess  # no servers, no wrk (~20 s)
    python benchmarks/sync_hop.py --quick           # a smoke run; figures are noisy

Prints a Markdown report (``--json FILE`` also writes every figure). ``docs/serving.md``
quotes a run of it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import endtoend, inprocess, machine, wrk
from benchmarks.apps import BY_KEY, Framework
from benchmarks.scenarios import BY_NAME
from benchmarks.servers import BY_KEY as SERVERS


@dataclass(frozen=True)
class DefViewsUnderAsgi(Framework):
    """carboy's benchmark app with ``def`` views (its ``wsgi`` object), served over ASGI: the
    same app object is an ASGI app too."""

    @property
    def target(self) -> str:
        return f"{self.import_path}:wsgi"

    def load(self) -> t.Any:
        return importlib.import_module(self.import_path).wsgi


WSGI_DEF = BY_KEY["carboy-wsgi"]
ASGI_ASYNC = BY_KEY["carboy-asgi"]
ASGI_DEF = DefViewsUnderAsgi("carboy-asgi-def", "carboy, def views", "carboy_app", "asgi", "carboy")
STACKS = (WSGI_DEF, ASGI_ASYNC, ASGI_DEF)
LABELS = {
    WSGI_DEF.key: "`def` views, WSGI",
    ASGI_ASYNC.key: "`async def` views, ASGI",
    ASGI_DEF.key: "`def` views, ASGI (pool hop)",
}
SCENARIOS = ("hello", "json", "template")
SERVER_KEYS = ("granian-wsgi", "granian-asgi", "uvicorn")


def measure(args: argparse.Namespace) -> dict[str, t.Any]:
    scenarios = [BY_NAME[name] for name in SCENARIOS]
    results: dict[str, t.Any] = {"machine": machine.describe(), "command": sys.argv}
    quick = args.quick
    if args.only in (None, "inprocess"):
        settings = inprocess.QUICK if quick else inprocess.Settings(repeats=args.repeats)
        results["inprocess"] = inprocess.measure(STACKS, scenarios, settings, progress=_say)
    if args.only in (None, "endtoend"):
        if not wrk.available():
            _say("end to end: skipped, wrk is not installed")
        else:
            settings = (
                endtoend.QUICK
                if quick
                else endtoend.Settings(duration=args.duration, rounds=args.rounds)
            )
            servers = [SERVERS[key] for key in SERVER_KEYS]
            results["endtoend"] = endtoend.measure(
                STACKS, servers, scenarios, settings, progress=_say
            )
            results["endtoend_settings"] = {
                "duration": settings.duration,
                "rounds": settings.rounds,
            }
    return results


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(results: dict[str, t.Any]) -> str:
    lines = [
        "# A `def` view under an ASGI server",
        "",
        f"`{' '.join(results['command'])}`; Python {results['machine']['python']}, "
        f"{results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"carboy at {results['machine']['carboy_commit']}.",
        "",
    ]
    inproc = results.get("inprocess")
    if inproc:
        lines += [
            "## In process (µs per request, best loop; lower is faster)",
            "",
            "| scenario | " + " | ".join(LABELS[s.key] for s in STACKS) + " | hop: def - async |",
            "|---|" + "---:|" * (len(STACKS) + 1),
        ]
        for name, row in inproc.items():
            cells = [f"{row[s.key]['us']:.1f}" for s in STACKS]
            hop = row[ASGI_DEF.key]["us"] - row[ASGI_ASYNC.key]["us"]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | +{hop:.1f} |")
        lines.append("")
    e2e = results.get("endtoend")
    if e2e:
        lines += [
            "## End to end (req/s, median round; higher is faster)",
            "",
            "| server | app | " + " | ".join(SCENARIOS) + " |",
            "|---|---|" + "---:|" * len(SCENARIOS),
        ]
        for server, apps in e2e.items():
            for key, entry in apps.items():
                rps = [f"{entry['scenarios'][n]['rps']:,.0f}" for n in SCENARIOS]
                label = SERVERS[server].label
                lines.append(f"| {label} | {LABELS[key]} | " + " | ".join(rps) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("inprocess", "endtoend"))
    parser.add_argument("--quick", action="store_true", help="tiny loops and loads (smoke)")
    parser.add_argument("--repeats", type=int, default=7, help="in-process timed loops")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per app")
    parser.add_argument("--rounds", type=int, default=3, help="rounds the duration is split in")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = measure(args)
    results["seconds"] = time.monotonic() - started
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
