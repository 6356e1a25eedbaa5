"""Run carboy's benchmark suite: in-process and end-to-end comparisons, in one run.

    python benchmarks/run.py                      # everything, about 20 minutes
    python benchmarks/run.py --quick              # a smoke run, 1-2 minutes; noisy
    python benchmarks/run.py --only inprocess     # or: --only endtoend
    python benchmarks/run.py --check              # check every answer; time nothing
    python benchmarks/run.py --rewrite            # redo results.md and charts from results.json

Writes docs/benchmarks/results.md, results.json, inprocess.png and endtoend.png, and the
table of ratios in README.md (``--out`` writes elsewhere and leaves README alone). See
benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import shlex
import sys
import time
import typing as t
from dataclasses import asdict, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import endtoend, inprocess, machine, readme_table, report, targets, wrk
from benchmarks.apps import BY_KEY as FRAMEWORKS
from benchmarks.apps import FRAMEWORKS as ALL_FRAMEWORKS
from benchmarks.apps import Framework
from benchmarks.scenarios import BY_NAME as SCENARIOS
from benchmarks.scenarios import NAMES, Scenario, WrongAnswer
from benchmarks.servers import BY_KEY as SERVERS

ROOT = Path(__file__).resolve().parent.parent
#: Whose worker memory is followed over many requests, and on which server.
MEMORY = (
    ("carboy-wsgi", "granian-wsgi"),
    ("flask", "granian-wsgi"),
    ("carboy-asgi", "granian-asgi"),
    ("starlette", "granian-asgi"),
)


def _keys(text: str, known: t.Iterable[str], what: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in set(known)]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return keys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short, noisy smoke run")
    parser.add_argument("--only", choices=("inprocess", "endtoend"), help="run one half only")
    parser.add_argument(
        "--check", action="store_true", help="check every framework's answers, time nothing"
    )
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="measure nothing: rewrite results.md and the charts from --out's results.json",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument(
        "--scenarios",
        help="comma-separated (default: all; end to end in --quick mode: hello)",
    )
    group = parser.add_argument_group("end to end")
    group.add_argument("--duration", type=float, help="measured seconds per scenario")
    group.add_argument("--rounds", type=int, help="measured rounds the duration is split into")
    group.add_argument("--warmup", type=float, help="warm-up seconds per scenario")
    group.add_argument("--connections", type=int, help="wrk connections")
    group.add_argument(
        "--rss-counts", help="request counts at which to read worker RSS, e.g. 10000,100000"
    )
    group.add_argument("--no-memory", action="store_true", help="skip the worker memory runs")
    group = parser.add_argument_group("in process")
    group.add_argument("--target-time", type=float, help="seconds per timed loop")
    group.add_argument("--repeats", type=int, help="timed loops per framework (best is kept)")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> tuple[inprocess.Settings, endtoend.Settings]:
    inproc = inprocess.QUICK if args.quick else inprocess.Settings()
    if args.target_time is not None:
        inproc = replace(inproc, target=args.target_time)
    if args.repeats is not None:
        inproc = replace(inproc, repeats=args.repeats)
    e2e = endtoend.QUICK if args.quick else endtoend.Settings()
    changes: dict[str, t.Any] = {
        name: getattr(args, name)
        for name in ("duration", "rounds", "warmup", "connections")
        if getattr(args, name) is not None
    }
    if args.rss_counts:
        changes["rss_counts"] = tuple(int(n) for n in args.rss_counts.split(","))
    return inproc, replace(e2e, **changes)


def notes(frameworks: list[str], results: dict[str, t.Any]) -> list[str]:
    """What a reader needs to know to read this run's tables right."""
    found = []
    for key in frameworks:
        module = importlib.import_module(FRAMEWORKS[key].import_path)
        reason = getattr(module, "UNSUPPORTED_REASON", None)
        if reason:
            found.append(f"{FRAMEWORKS[key].label}: n/a where a scenario is missing: {reason}.")
    found.append(
        "The raw WSGI and raw ASGI apps answer hello only: they are the ceiling of each server, "
        "not frameworks; n/a elsewhere."
    )
    found.append(
        "carboy's ASGI app declares its views `async def` (they run on the event loop; a `def` "
        "view would hop to carboy's thread pool); its WSGI app has the same views as `def`. "
        "Static files are served by carboy's built-in (sync) static view in both."
    )
    found.append(
        "Starlette's SessionMiddleware wraps the session route only (Starlette's best case); "
        "carboy, Flask and Quart have sessions app-wide; Falcon's session is an itsdangerous-"
        "signed cookie, Bottle's its signed cookie holding JSON."
    )
    if "inprocess" in results:
        found.append(
            "In-process call counts cover the calling thread only: static files under carboy "
            "(ASGI), Starlette and Quart are partly read in worker threads, not counted."
        )
    if "endtoend" in results:
        versions = results["meta"]["machine"]["versions"]
        found.append(
            "gunicorn's sync worker closes the connection after each response, so its figures "
            "include a TCP connect per request. uvicorn runs with "
            f"{'uvloop' if versions['uvloop'] != 'not installed' else 'asyncio'} and "
            f"{'httptools' if versions['httptools'] != 'not installed' else 'h11'}."
        )
        found.append(
            "Every worker imports carboy and the app modules from bytecode the suite wrote "
            "before starting it, as the other frameworks' installed wheels do."
        )
    for half, reason in results["meta"].get("skipped", {}).items():
        name = "End to end" if half == "endtoend" else half
        found.append(f"{name}: skipped, because {reason}; its targets are not measured.")
    if results["meta"]["mode"] == "quick":
        found.append("Quick run: short loops and a hello-only end-to-end pass; figures are noisy.")
    return found


def write(results: dict[str, t.Any], out: Path) -> list[Path]:
    """Evaluate the targets, then write the charts, results.md and results.json to *out*;
    when *out* is ``docs/benchmarks``, also README's table of ratios (``readme_table.py``)."""
    from benchmarks import charts  # matplotlib is only needed from here on

    results["targets"] = [outcome.as_dict() for outcome in targets.evaluate(results)]
    out.mkdir(parents=True, exist_ok=True)
    written = [
        path
        for path in (
            charts.inprocess(results, out / "inprocess.png"),
            charts.endtoend(results, out / "endtoend.png"),
        )
        if path is not None
    ]
    for stale in ("inprocess.png", "endtoend.png"):  # a chart from an earlier run would mislead
        if out / stale not in written:
            (out / stale).unlink(missing_ok=True)
    results["meta"]["charts"] = [path.stem for path in written]
    written += report.write(results, out)
    if out.resolve() == readme_table.RESULTS.parent.resolve() and readme_table.update():
        written.append(readme_table.README)
    return written


def _mode(args: argparse.Namespace) -> str:
    """ "quick", "full", or "custom" when the run was narrowed or retuned."""
    if args.quick:
        return "quick"
    defaults = parse_args([])
    tuned = [
        name
        for name, value in vars(args).items()
        if name not in ("out", "only") and value != getattr(defaults, name)
    ]
    return "custom" if tuned or args.only else "full"


def check(frameworks: list[Framework], scenarios: list[Scenario]) -> int:
    """Print whether each framework answers each scenario right, in process; 1 if any is wrong."""
    grid = inprocess.check_all(frameworks, scenarios)
    keys = [framework.key for framework in frameworks]
    print("| scenario | " + " | ".join(keys) + " |")
    wrong = []
    for scenario, row in grid.items():
        cells = []
        for key in keys:
            verdict = row[key]
            if verdict.startswith("WRONG"):
                wrong.append(f"{key} {scenario}: {verdict}")
                verdict = "WRONG"
            cells.append(verdict)
        print(f"| {scenario} | " + " | ".join(cells) + " |")
    for line in wrong:
        print(line)
    print(f"{len(wrong)} wrong answers" if wrong else "all answers right")
    return 1 if wrong else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    frameworks = _keys(args.frameworks, FRAMEWORKS, "frameworks")
    servers = _keys(args.servers, SERVERS, "servers")
    all_scenarios = [SCENARIOS[n] for n in _keys(args.scenarios or ",".join(NAMES), NAMES, "")]
    selected = [FRAMEWORKS[k] for k in FRAMEWORKS if k in frameworks]

    if args.check:
        return check(selected, all_scenarios)
    if args.rewrite:
        stored = json.loads((args.out / "results.json").read_text())
        for path in write(stored, args.out):
            print(f"rewrote {path}")
        return 0

    inproc_settings, e2e_settings = _settings(args)
    e2e_scenarios = all_scenarios
    if args.quick and not args.scenarios:
        e2e_scenarios = [SCENARIOS["hello"]]
    start = time.monotonic()
    results: dict[str, t.Any] = {
        "meta": {
            "command": "python " + shlex.join(["benchmarks/run.py", *sys.argv[1:]])
            if argv is None
            else "python " + shlex.join(["benchmarks/run.py", *argv]),
            "mode": _mode(args),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine.describe(),
            "settings": {},
        },
        "frameworks": {
            f.key: {"label": f.label, "interface": f.interface, "target": f.target}
            for f in ALL_FRAMEWORKS
            if f.key in frameworks
        },
    }
    skipped = None
    if args.only != "inprocess" and not wrk.available():
        skipped = "wrk and taskset are not on PATH (Debian packages wrk and util-linux)"
        if args.only == "endtoend":
            raise SystemExit(f"end to end: cannot run: {skipped}")
        # Said first, so nobody waits for the in-process half to learn it.
        print(f"end to end: skipped: {skipped}; measuring in process only", file=sys.stderr)
        results["meta"]["skipped"] = {"endtoend": skipped}
    try:
        if args.only != "endtoend":
            results["meta"]["settings"]["inprocess"] = asdict(inproc_settings)
            results["inprocess"] = inprocess.measure(selected, all_scenarios, inproc_settings)
        if args.only != "inprocess" and skipped is None:
            results["meta"]["settings"]["endtoend"] = asdict(e2e_settings)
            kinds = [SERVERS[k] for k in SERVERS if k in servers]
            results["endtoend"] = endtoend.measure(selected, kinds, e2e_scenarios, e2e_settings)
            if not args.no_memory:
                results["memory"] = {}
                for key, server in MEMORY:
                    if key in frameworks and server in servers:
                        print(f"memory: {key} on {server}, {e2e_settings.rss_counts} requests")
                        results["memory"][key] = endtoend.rss_growth(
                            FRAMEWORKS[key], SERVERS[server], e2e_settings
                        )
    except WrongAnswer as exc:
        print(f"wrong answer, nothing written: {exc}", file=sys.stderr)
        return 1

    results["meta"]["seconds"] = time.monotonic() - start
    results["notes"] = notes(frameworks, results)
    written = write(results, args.out)
    for outcome in results["targets"]:
        measured = outcome["measured"]
        verdict = "not measured" if measured is None else ("met" if outcome["met"] else "NOT MET")
        shown = "n/a" if measured is None else f"{measured:.2f}"
        print(f"target: {outcome['target']} {outcome['limit']}: {shown} ({verdict})")
    if skipped is not None:
        print(f"end to end: skipped: {skipped}")
    print(f"took {results['meta']['seconds'] / 60:.1f} min; wrote:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
