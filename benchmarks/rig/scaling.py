"""The scaling measurement: throughput through HAProxy with 1, 2 and 4 hosts at a fixed CPU
budget per host, for each scenario and framework.

For each (scenario, framework), by default one rig per host count (each with its own HAProxy,
Redis and wrk), all loaded at the same moment, so the machine's other work and the state of its
caches touch every count of a repetition alike (:func:`_concurrent`); or, with
``concurrent=False``, one rig with the most hosts whose counts are loaded in turn, the other
hosts in maintenance through HAProxy's runtime API (:func:`_sequential`). A ratio is computed
per repetition and over the medians. Every load also measures the CPU that HAProxy, Redis and
wrk used, each host's use of its budget, its throttled periods and its CPU per request, and the
machine's busy cores, to say what saturated.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import platform
import statistics
import time
import typing as t
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks.scenarios import Answer, Request, WrongAnswer, expect

from .app import HELLO
from .rig import Measurement, Rig, RigConfig
from .servers import ServerSpec

SCENARIOS = ("hello", "shared")
FRAMEWORKS = ("carboy", "flask")
#: The issue's targets: throughput(n) / throughput(1) at least this.
TARGETS = {2: 1.9, 4: 3.6}
#: Above this share of one core a single-threaded part (HAProxy with one thread, Redis, wrk
#: with one thread) is counted as saturated.
SATURATED = 0.9


@dataclass(frozen=True)
class ScalingSettings:
    scenarios: tuple[str, ...] = SCENARIOS
    frameworks: tuple[str, ...] = FRAMEWORKS
    hosts: tuple[int, ...] = (1, 2, 4)
    repeats: int = 5
    duration: float = 4.0
    warmup: float = 2.0
    #: wrk's connections per enabled host, by scenario, so each host sees the same concurrency
    #: at every count. Enough that a host's backlog fills its budget for a whole period:
    #: round-robin sends each finished connection's next request to the next host, so with
    #: several hosts the connections wait at the hosts that are out of budget, and a host that
    #: runs then gets only its own backlog (at 30 us a request, hello's 1 ms is 33 requests;
    #: 128 also keeps a backlog while HAProxy and wrk wait for a core).
    #: Not many more: a deep queue delays HAProxy's health checks past their timeout (1 s)
    #: and the host is taken out (shared state at 64 did that: ~700 us a request).
    connections_per_host: tuple[tuple[str, int], ...] = (("hello", 128), ("shared", 16))
    #: Each host's budget: 0.1 CPU in every 10 ms period (see docs/scale/deploying-rig.md for
    #: why not 0.2 CPU in 100 ms: hosts that run 20 ms and stop for 80 ms park round-robin
    #: requests, and the hosts that run then get them one at a time).
    cpus: float = 0.1
    period_us: int = 10_000
    burst_periods: float = 0.0
    #: HAProxy's ``balance`` algorithm.
    balance: str = "roundrobin"
    #: HAProxy's ``maxconn`` on each server = the connections per host, HAProxy queueing the
    #: rest: without it each host of 4 holds up to 4 times the connections of a lone host (every
    #: client connection reaches every host) and spent 10-15% more CPU per hello request.
    server_maxconn: bool = True
    #: cpu.shares per part of a run (v1; cpu.weight on v2 scaled from it): its weight against
    #: the machine's other work when the cores are contended (:attr:`RigConfig.shares`).
    #: ``None``: the kernel's default (1024) for a whole run.
    shares: int | None = 4096
    server: ServerSpec = field(default_factory=ServerSpec)
    haproxy_threads: int = 1
    wrk_threads: int = 1
    #: Load every count at the same moment, each on its own rig (see :func:`_concurrent`);
    #: else in turn on one rig.
    concurrent: bool = True


def check_hello(res: Answer) -> None:
    expect(res.status == 200, f"status {res.status}; body {res.body[:200]!r}")
    expect(res.body == HELLO.encode(), f"body {res.body[:200]!r}")


def scenario_request(rig: Rig, scenario: str) -> tuple[Request, t.Callable[[Answer], None]]:
    """The timed request of *scenario* and its checker, checked once through HAProxy."""
    if scenario == "hello":
        request, check = Request("GET", "/"), check_hello
    else:
        from benchmarks.shared_state import check_shared, signed_in

        request, check = signed_in(lambda r: _ask(rig, r)), check_shared
    for _ in range(4):  # through every host, round-robin
        check(_ask(rig, request))
    return request, check


def _ask(rig: Rig, request: Request) -> Answer:
    return rig.ask(
        request.target, request.method, headers=dict(request.headers), body=request.body or None
    )


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / statistics.median(values)
        if statistics.median(values)
        else 0.0,
    }


def summarise(runs: dict[int, list[Measurement]], settings: ScalingSettings) -> dict[str, t.Any]:
    """Medians, spreads, ratios and saturation of one (scenario, framework)."""
    by_hosts: dict[str, t.Any] = {}
    for n, ms in runs.items():
        budget = [statistics.median(m.host_budget_used.values()) for m in ms]
        throttled = [statistics.median(m.host_throttled.values()) for m in ms]
        by_hosts[str(n)] = {
            "rps": [m.load.rps for m in ms],
            "rps_summary": _summary([m.load.rps for m in ms]),
            "p50_ms": statistics.median(m.load.p50_ms for m in ms),
            "p99_ms": statistics.median(m.load.p99_ms for m in ms),
            "errors": sum(m.load.non_2xx + m.load.socket_errors for m in ms),
            "requests": sum(m.load.requests for m in ms),
            "hosts_serving": [sum(1 for v in m.served.values() if v > 0) for m in ms],
            "connections": ms[0].connections,
            "haproxy_cores": _summary([m.haproxy_cores for m in ms]),
            "redis_cores": _summary([m.redis_cores for m in ms]),
            "wrk_cores": _summary([m.wrk_cores for m in ms]),
            "machine_busy_cores": _summary([m.machine_busy_cores for m in ms]),
            "host_budget_used": _summary(budget),
            "host_throttled_share": _summary(throttled),
            "cpu_us_per_request": _summary(
                [sum(m.host_cores.values()) / m.load.rps * 1e6 for m in ms if m.load.rps]
            ),
            "load_average": [m.load_average[0] for m in ms],
            "runs": [m.as_dict() for m in ms],
        }
    base = runs[min(runs)]
    ratios: dict[str, t.Any] = {}
    for n, ms in runs.items():
        if n == min(runs):
            continue
        per_rep = [m.load.rps / b.load.rps for m, b in zip(ms, base, strict=True)]
        of_medians = by_hosts[str(n)]["rps_summary"]["median"] / statistics.median(
            b.load.rps for b in base
        )
        ratios[str(n)] = {
            "of_medians": of_medians,
            "per_repetition": per_rep,
            "per_repetition_summary": _summary(per_rep),
            "target": TARGETS.get(n),
            "met": None if n not in TARGETS else of_medians >= TARGETS[n],
        }
    return {"by_hosts": by_hosts, "ratios": ratios, "saturation": saturation(runs, settings)}


def saturation(runs: dict[int, list[Measurement]], settings: ScalingSettings) -> list[str]:
    """What saturated, in words (empty when only the hosts' budgets bound)."""
    notes = []
    cpus = os.cpu_count() or 1
    for n, ms in sorted(runs.items()):
        worst = {
            "HAProxy": (max(m.haproxy_cores for m in ms), settings.haproxy_threads),
            "Redis": (max(m.redis_cores for m in ms), 1),
            "wrk": (max(m.wrk_cores for m in ms), settings.wrk_threads),
        }
        for part, (cores, threads) in worst.items():
            if cores >= SATURATED * threads:
                notes.append(f"{n} hosts: {part} used {cores:.2f} cores of {threads}: saturated")
        busy = max(m.machine_busy_cores for m in ms)
        if busy >= SATURATED * cpus:
            used_median = statistics.median(
                statistics.median(m.host_budget_used.values()) for m in ms
            )
            notes.append(
                f"{n} hosts: the machine was up to {busy:.2f} of {cpus} cores busy (with its "
                f"other work); the hosts still used {used_median:.0%} of their budgets"
            )
        used = min(min(m.host_budget_used.values()) for m in ms)
        if used < SATURATED:
            notes.append(
                f"{n} hosts: a host used only {used:.0%} of its budget in some run "
                "(something else limited it)"
            )
    return notes


def _config(scenario: str, framework: str, hosts: int, settings: ScalingSettings) -> RigConfig:
    return RigConfig(
        hosts=hosts,
        app=f"{framework}_{scenario}",
        server=settings.server,
        cpus=settings.cpus,
        period_us=settings.period_us,
        burst_periods=settings.burst_periods,
        redis=scenario == "shared",
        haproxy_threads=settings.haproxy_threads,
        shares=settings.shares,
        balance=settings.balance,
        server_maxconn=dict(settings.connections_per_host)[scenario]
        if settings.server_maxconn
        else None,
    )


def _checked_load(
    rig: Rig, request: Request, n: int, seconds: float, settings: ScalingSettings, name: str
) -> Measurement:
    connections = dict(settings.connections_per_host)[name.split()[1]]
    m = rig.load(request, seconds, connections * n, settings.wrk_threads)
    if m.load.non_2xx or m.load.socket_errors:
        raise WrongAnswer(
            f"{name}, {n} hosts: {m.load.non_2xx} non-2xx and {m.load.socket_errors} socket "
            f"errors\n{m.wrk_output}"
        )
    return m


def _line(name: str, rep: int, settings: ScalingSettings, n: int, m: Measurement) -> str:
    per_request = sum(m.host_cores.values()) / m.load.rps * 1e6 if m.load.rps else 0.0
    return (
        f"  {name:13} rep {rep + 1}/{settings.repeats} {n} host(s): {m.load.rps:8.0f} req/s  "
        f"{per_request:5.0f} us CPU/req  budget used "
        f"{statistics.median(m.host_budget_used.values()):.0%}  haproxy {m.haproxy_cores:.2f}  "
        f"redis {m.redis_cores:.2f}  wrk {m.wrk_cores:.2f}  machine "
        f"{m.machine_busy_cores:.2f}  load {m.load_average[0]:.2f}"
    )


def measure(
    scenario: str,
    framework: str,
    settings: ScalingSettings,
    log: t.Callable[[str], None] = print,
) -> dict[str, t.Any]:
    """One (scenario, framework) series, every count loaded ``repeats`` times: at the same
    moment on separate rigs (:attr:`ScalingSettings.concurrent`), or in turn on one rig.

    :raises WrongAnswer: when an answer is wrong before or after the load, or a load had
        errors.
    """
    if settings.concurrent:
        runs = _concurrent(scenario, framework, settings, log)
    else:
        runs = _sequential(scenario, framework, settings, log)
    return summarise(runs, settings)


def _sequential(
    scenario: str, framework: str, settings: ScalingSettings, log: t.Callable[[str], None]
) -> dict[int, list[Measurement]]:
    """One rig with the most hosts; each count in turn (the others in maintenance)."""
    name = f"{framework} {scenario}"
    runs: dict[int, list[Measurement]] = {n: [] for n in sorted(settings.hosts)}
    with Rig(_config(scenario, framework, max(settings.hosts), settings)) as rig:
        request, check = scenario_request(rig, scenario)

        def load(n: int, seconds: float) -> Measurement:
            rig.use_hosts(n)
            return _checked_load(rig, request, n, seconds, settings, name)

        if settings.warmup > 0:
            load(max(settings.hosts), settings.warmup)
        for rep in range(settings.repeats):
            # ascending, then descending: a drift of the machine's load over a pair of
            # repetitions touches every count alike
            for n in sorted(settings.hosts, reverse=rep % 2 == 1):
                m = load(n, settings.duration)
                runs[n].append(m)
                log(_line(name, rep, settings, n, m))
        rig.use_hosts(max(settings.hosts))
        for _ in range(4):
            check(_ask(rig, request))
    return runs


def _concurrent(
    scenario: str, framework: str, settings: ScalingSettings, log: t.Callable[[str], None]
) -> dict[int, list[Measurement]]:
    """One rig per count (its own HAProxy, Redis and wrk), all loaded at the same moment: a
    change in the machine's other work, or in what its caches hold, touches every count of a
    repetition alike, and the ratio of one repetition compares like with like."""
    name = f"{framework} {scenario}"
    counts = sorted(settings.hosts)
    runs: dict[int, list[Measurement]] = {n: [] for n in counts}
    with contextlib.ExitStack() as stack:
        rigs = {
            n: stack.enter_context(Rig(_config(scenario, framework, n, settings))) for n in counts
        }
        requests = {n: scenario_request(rig, scenario) for n, rig in rigs.items()}
        with concurrent.futures.ThreadPoolExecutor(len(counts)) as pool:

            def together(seconds: float) -> dict[int, Measurement]:
                futures = {
                    n: pool.submit(
                        _checked_load, rigs[n], requests[n][0], n, seconds, settings, name
                    )
                    for n in counts
                }
                return {n: f.result() for n, f in futures.items()}

            if settings.warmup > 0:
                together(settings.warmup)
            for rep in range(settings.repeats):
                for n, m in together(settings.duration).items():
                    runs[n].append(m)
                    log(_line(name, rep, settings, n, m))
        for n, rig in rigs.items():
            request, check = requests[n]
            for _ in range(2 * n):
                check(_ask(rig, request))
    return runs


def run(settings: ScalingSettings, log: t.Callable[[str], None] = print) -> dict[str, t.Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = os.getloadavg()
    results: dict[str, t.Any] = {
        "started": started,
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_average_before": load_before,
        },
        "settings": {
            **{k: v for k, v in settings.__dict__.items() if k != "server"},
            "server": settings.server.__dict__,
            "server_label": settings.server.label(),
        },
        "series": {},
    }
    for scenario in settings.scenarios:
        for framework in settings.frameworks:
            log(f"{framework} / {scenario}: {max(settings.hosts)} hosts at {settings.cpus} CPU")
            results["series"][f"{framework}/{scenario}"] = measure(
                scenario, framework, settings, log
            )
    results["machine"]["load_average_after"] = os.getloadavg()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return results


def table(results: dict[str, t.Any]) -> str:
    """The scaling table in Markdown."""
    hosts = sorted(int(n) for n in next(iter(results["series"].values()))["by_hosts"])
    head = "| series | " + " | ".join(f"{n} host{'s' if n > 1 else ''} req/s" for n in hosts)
    head += " | " + " | ".join(f"x{n}/x{hosts[0]}" for n in hosts[1:]) + " |"
    rows = [head, "|---|" + "---:|" * (2 * len(hosts) - 1)]
    for key, series in results["series"].items():
        cells = []
        for n in hosts:
            s = series["by_hosts"][str(n)]["rps_summary"]
            cells.append(f"{s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f})")
        for n in hosts[1:]:
            r = series["ratios"][str(n)]
            rep = r["per_repetition_summary"]
            mark = "" if r["met"] is None else (" ✓" if r["met"] else " ✗")
            cells.append(f"{r['of_medians']:.2f}{mark} ({rep['min']:.2f}-{rep['max']:.2f})")
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parts_table(results: dict[str, t.Any]) -> str:
    """CPU of each part (median cores over the repetitions, max in brackets)."""
    rows = [
        "| series | hosts | host budget used | throttled periods | host CPU µs / request | "
        "HAProxy cores | Redis cores | wrk cores | machine busy cores | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, series in results["series"].items():
        for n, e in series["by_hosts"].items():

            def c(name: str, e: dict[str, t.Any] = e) -> str:
                return f"{e[name]['median']:.2f} ({e[name]['max']:.2f})"

            rows.append(
                f"| {key} | {n} | {e['host_budget_used']['median']:.0%} | "
                f"{e['host_throttled_share']['median']:.0%} | "
                f"{e['cpu_us_per_request']['median']:.0f} | {c('haproxy_cores')} | "
                f"{c('redis_cores')} | {c('wrk_cores')} | {c('machine_busy_cores')} | "
                f"{statistics.median(e['load_average']):.2f} |"
            )
    return "\n".join(rows)


def chart(results: dict[str, t.Any], path: Path) -> None:
    """Throughput against hosts (top) and the speed-up against the ideal line (bottom), one
    column per scenario; error bars span the repetitions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({k.split("/")[1] for k in results["series"]}, key=SCENARIOS.index)
    fig, axes = plt.subplots(2, len(scenarios), figsize=(5.5 * len(scenarios), 7.5), squeeze=False)
    colors = {"carboy": "#c0392b", "flask": "#2e86c1"}
    labels = {"carboy": "carboy", "flask": "Flask"}
    for col, scenario in enumerate(scenarios):
        top, bottom = axes[0][col], axes[1][col]
        hosts: list[int] = []
        for key, series in results["series"].items():
            framework, name = key.split("/")
            if name != scenario:
                continue
            hosts = sorted(int(n) for n in series["by_hosts"])
            s = [series["by_hosts"][str(n)]["rps_summary"] for n in hosts]
            med = [x["median"] for x in s]
            err = [[m - x["min"] for m, x in zip(med, s, strict=True)],
                   [x["max"] - m for m, x in zip(med, s, strict=True)]]  # fmt: skip
            color = colors.get(framework, "#555555")
            top.errorbar(hosts, med, yerr=err, marker="o", capsize=4, color=color,
                         label=labels.get(framework, framework))  # fmt: skip
            top.plot(hosts, [med[0] * n / hosts[0] for n in hosts], linestyle=":", color=color,
                     alpha=0.6)  # fmt: skip
            speedup = [m / med[0] for m in med]
            bottom.plot(hosts, speedup, marker="o", color=color,
                        label=labels.get(framework, framework))  # fmt: skip
        if hosts:
            bottom.plot(hosts, [n / hosts[0] for n in hosts], linestyle=":", color="#888888",
                        label="ideal")  # fmt: skip
            for n, target in TARGETS.items():
                if n in hosts:
                    bottom.scatter([n], [target], marker="_", s=400, color="#333333")
            top.set_xticks(hosts)
            bottom.set_xticks(hosts)
        top.set_title(f"{scenario}: req/s through HAProxy (dotted: linear)")
        top.set_ylabel("requests per second (median, min-max)")
        top.set_ylim(bottom=0)
        top.legend()
        bottom.set_title(f"{scenario}: speed-up over 1 host (bars: targets)")
        bottom.set_xlabel(f"hosts ({results['settings']['cpus']} CPU each)")
        bottom.set_ylabel("throughput(n) / throughput(1)")
        bottom.set_ylim(bottom=0)
        bottom.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def with_server(settings: ScalingSettings, **changes: t.Any) -> ScalingSettings:
    return replace(settings, server=replace(settings.server, **changes))
