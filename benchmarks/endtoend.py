"""End-to-end measurements: each app behind a real server, loaded over TCP by wrk.

Every framework is served by every server of its protocol (granian and gunicorn sync for
WSGI, granian and uvicorn for ASGI), each in its own server with one worker process pinned to
core 0, while wrk runs pinned to core 1 (as does this driver, which mostly sleeps meanwhile).
All the frameworks of one server kind are started together and stay idle but for the one under
load: for each scenario every answer is checked over HTTP, every server is warmed up, and the
measured rounds take turns between the frameworks. wrk reports requests per second, p50 and
p99 latency and errors; the worker's peak resident memory is read at the end.

A separate measurement serves hello from a fresh worker for an exact number of requests (wrk
exits by itself) and reads the worker's memory after 10,000 and after 100,000 requests.
"""

from __future__ import annotations

import os
import tempfile
import time
import typing as t
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from . import wrk
from .apps import Framework
from .scenarios import BY_NAME, SCENARIOS, Scenario, WrongAnswer, with_session
from .servers import Server, ServerKind, ask

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    #: Seconds of measured load per scenario and framework, split into ``rounds`` runs,
    #: after ``warmup`` seconds of unmeasured load.
    duration: float = 6.0
    rounds: int = 3
    warmup: float = 1.5
    #: wrk's keep-alive connections (gunicorn's sync worker closes each after one request).
    connections: int = 32
    server_cpu: int = 0
    client_cpu: int = 1
    #: Request counts at which the memory measurement reads the worker's RSS.
    rss_counts: tuple[int, ...] = (10_000, 100_000)
    rss_connections: int = 8
    #: Server logs go here (a temporary directory when empty).
    log_dir: str = field(default="")


QUICK = Settings(duration=1.0, rounds=1, warmup=0.5, rss_counts=(2_000, 20_000))


def _errors(scenario: Scenario, load: wrk.Load) -> int:
    """Failed requests: socket errors, plus answers whose status class was not the expected
    one (wrk counts non-2xx/3xx answers; the 404 scenario expects nothing else)."""
    if scenario.status >= 400:
        return load.socket_errors + max(0, load.requests - load.non_2xx)
    return load.socket_errors + load.non_2xx


def summarize(scenario: Scenario, loads: list[wrk.Load]) -> dict[str, t.Any]:
    """One framework's rounds of a scenario: the figures of the median round (by req/s), the
    errors of all rounds, and every round's req/s."""
    ranked = sorted(loads, key=lambda load: load.rps)
    result: dict[str, t.Any] = ranked[(len(ranked) - 1) // 2].as_dict()
    result["errors"] = sum(_errors(scenario, load) for load in loads)
    result["requests_total"] = sum(load.requests for load in loads)
    result["rps_rounds"] = [load.rps for load in loads]
    return result


def _log_dir(settings: Settings) -> Path:
    if settings.log_dir:
        return Path(settings.log_dir)
    return Path(tempfile.gettempdir()) / f"carboy-benchmarks-{os.getuid()}" / "logs"


def measure(
    frameworks: Sequence[Framework],
    servers: Sequence[ServerKind],
    scenarios: Sequence[Scenario] = SCENARIOS,
    settings: Settings = Settings(),
    progress: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, t.Any]]]:
    """``{server key: {framework key: {"scenarios": {name: {...}}, "peak_rss_mb": ...}}}``.

    All the frameworks a server kind serves run at once, each in its own server process
    pinned to the same core, and each scenario's measured rounds take turns between them, so
    a slow spell of the machine hits all of them alike. Only one is under load at a time.

    :raises WrongAnswer: when a served app answers a scenario wrongly.
    """
    _pin_self(settings.client_cpu)
    names = [scenario.name for scenario in scenarios]
    logs = _log_dir(settings)
    results: dict[str, dict[str, dict[str, t.Any]]] = {}
    for kind in servers:
        served = {
            fw.key: fw.scenarios(names)
            for fw in frameworks
            if fw.interface == kind.interface and fw.scenarios(names)
        }
        if not served:
            continue
        progress(f"end-to-end: {kind.label}: starting {', '.join(served)}")
        with ExitStack() as stack:
            running = {
                fw.key: stack.enter_context(
                    Server(kind, fw, settings.server_cpu, logs / f"{kind.key}-{fw.key}.log")
                )
                for fw in frameworks
                if fw.key in served
            }
            entries: dict[str, dict[str, t.Any]] = {
                key: {"command": server.command, "scenarios": {}} for key, server in running.items()
            }
            for scenario in scenarios:
                active = {k: s for k, s in running.items() if scenario.name in served[k]}
                progress(f"end-to-end: {kind.label}: {scenario.name} ({', '.join(active)})")
                loads = _load_in_turns(scenario, active, settings)
                for key, server in active.items():
                    entry = summarize(scenario, loads[key])
                    entry["rss_mb"] = server.rss() / MiB
                    entries[key]["scenarios"][scenario.name] = entry
            for key, server in running.items():
                entries[key]["peak_rss_mb"] = server.peak_rss() / MiB
                entries[key]["worker_cpus"] = server.worker.cpu_affinity() if server.worker else []
        results[kind.key] = entries
    return results


def _load_in_turns(
    scenario: Scenario, servers: dict[str, Server], settings: Settings
) -> dict[str, list[wrk.Load]]:
    """Check each server's answer, warm each up, then measure ``settings.rounds`` rounds of
    ``duration / rounds`` seconds each, taking turns; check the answers again after."""
    requests = {}
    for key, server in servers.items():
        try:
            request, _cookie = with_session(scenario, partial(ask, server.port))
            scenario.check(ask(server.port, request))
        except WrongAnswer as exc:
            raise WrongAnswer(f"{server.describe()} answered {scenario.name!r} wrongly: {exc}")
        requests[key] = request
        if settings.warmup > 0:
            wrk.run(server.url, request, settings.warmup, settings.connections, settings.client_cpu)
    loads: dict[str, list[wrk.Load]] = {key: [] for key in servers}
    seconds = settings.duration / settings.rounds
    for _ in range(settings.rounds):
        for key, server in servers.items():
            loads[key].append(
                wrk.run(
                    server.url, requests[key], seconds, settings.connections, settings.client_cpu
                )
            )
    for key, server in servers.items():
        try:
            scenario.check(ask(server.port, requests[key]))  # still right after the load
        except WrongAnswer as exc:
            raise WrongAnswer(f"{server.describe()} answered {scenario.name!r} wrongly: {exc}")
    return loads


def rss_growth(
    framework: Framework, kind: ServerKind, settings: Settings = Settings()
) -> dict[str, t.Any]:
    """The worker's RSS after each count in ``settings.rss_counts`` hello requests, served
    from a fresh worker, and the growth from the first reading to the last."""
    _pin_self(settings.client_cpu)
    hello = BY_NAME["hello"]
    log = _log_dir(settings) / f"rss-{kind.key}-{framework.key}.log"
    points: list[dict[str, float]] = []
    with Server(kind, framework, settings.server_cpu, log) as server:
        hello.check(ask(server.port, hello.request))
        done = 1  # the startup probe and the check above
        for count in settings.rss_counts:
            more = max(1, count - done)
            wrk.send(server.url, hello.request, more, settings.rss_connections, settings.client_cpu)
            done += more
            time.sleep(0.5)  # let the worker settle
            points.append({"requests": done, "rss_mb": server.rss() / MiB})
        peak = server.peak_rss() / MiB
    first, last = points[0]["rss_mb"], points[-1]["rss_mb"]
    return {
        "server": kind.key,
        "points": points,
        "peak_rss_mb": peak,
        "growth_pct": (last - first) / first * 100,
        "settings": asdict(settings),
    }


def _pin_self(cpu: int) -> None:
    """Run this driver on the load generator's core, away from the server's."""
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
