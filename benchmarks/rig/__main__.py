"""``python -m benchmarks.rig``: bring up a rig, load it, measure scaling and worker balance,
clean up after crashed runs. Needs root, iproute2, haproxy, wrk and redis-server.

    python -m benchmarks.rig up --hosts 2 --app carboy_shared      # until Ctrl-C
    python -m benchmarks.rig load --hosts 4 --app flask_hello --duration 5
    python -m benchmarks.rig scaling                              # the full matrix (~3 min)
    python -m benchmarks.rig balance                              # 4 workers (~4 min)
    python -m benchmarks.rig rolling --servers gunicorn,uvicorn,granian   # ~12 s a server
    python -m benchmarks.rig fanout --hosts 1,2,4 --clients 300 --messages 1000 --rate 100
    python -m benchmarks.rig cleanup                              # leftovers of killed runs

Every command tears down what it made (processes, namespaces, veths, bridge, cgroups, its
directory) when it ends, fails, or gets SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import typing as t
from pathlib import Path

from benchmarks.scenarios import Request

from . import balance, fanout, rolling, scaling
from .app import APPS
from .rig import Rig, RigConfig, cleanup, missing_prerequisites
from .servers import KINDS, ServerSpec

ROOT = Path(__file__).resolve().parents[2]


def _terminate(signum: int, _frame: t.Any) -> None:
    # Unwind through every ``with Rig(...)`` and ``finally``: the rig tears itself down.
    raise SystemExit(128 + signum)


def _server(args: argparse.Namespace) -> ServerSpec:
    return ServerSpec(
        args.server, workers=args.workers, threads=args.threads, reuse_port=args.reuse_port,
        keep_alive_s=args.keep_alive,
    )  # fmt: skip


def _add_server_args(p: argparse.ArgumentParser, workers: int = 1) -> None:
    p.add_argument("--server", choices=KINDS, default="granian", help="default: %(default)s")
    p.add_argument("--workers", type=int, default=workers, help="workers per host")
    p.add_argument("--threads", type=int, default=1, help="granian blocking / gunicorn threads")
    p.add_argument("--reuse-port", action="store_true", help="gunicorn --reuse-port")
    p.add_argument("--keep-alive", type=int, default=5, help="server keep-alive timeout, s")


def _rig_config(args: argparse.Namespace) -> RigConfig:
    return RigConfig(
        hosts=args.hosts, app=args.app, server=_server(args),
        cpus=None if args.cpus <= 0 else args.cpus, period_us=args.period_us,
        redis=not args.no_redis,
        worker_header=getattr(args, "worker_header", False), health=args.health,
        keep_logs=args.keep_logs,
    )  # fmt: skip


def _add_rig_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--app", choices=APPS, default="carboy_hello")
    p.add_argument("--cpus", type=float, default=0.2, help="CPU budget per host (0: none)")
    p.add_argument("--period-us", type=int, default=10_000, help="CFS period, us")
    p.add_argument("--no-redis", action="store_true", help="start no Redis")
    p.add_argument("--health", default="rig", help="'rig' or module:callable (RIG_HEALTH)")
    p.add_argument("--keep-logs", type=Path, help="copy the run's logs here at the end")
    _add_server_args(p)


def cmd_up(args: argparse.Namespace) -> int:
    with Rig(_rig_config(args)) as rig:
        print(f"run {rig.run}: HAProxy at {rig.url} (stats socket {rig.stats_socket})")
        for h in rig.hosts:
            print(f"  {h.name}: {h.url} (namespace {rig.network.namespace(h.name)})")  # type: ignore[union-attr]
        if rig.config.redis:
            print(f"  redis: {rig.redis_url}")
        print(f"  wrk from: ip netns exec {rig.network.namespace('client')} wrk ...")  # type: ignore[union-attr]
        print("Ctrl-C tears it down.")
        deadline = time.monotonic() + args.for_seconds if args.for_seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    with Rig(_rig_config(args)) as rig:
        if args.app.endswith("_shared"):
            request, _ = scaling.scenario_request(rig, "shared")
        else:
            request = Request("GET", args.target)
        m = rig.load(request, args.duration, args.connections)
        print(m.wrk_output)
        print(json.dumps(m.as_dict(), indent=2))
    return 0


def _per_scenario(text: str) -> tuple[tuple[str, int], ...]:
    """``hello=64,shared=16`` (or one number for every scenario)."""
    if text.isdigit():
        return tuple((s, int(text)) for s in scaling.SCENARIOS)
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    return tuple((k.strip(), int(v)) for k, v in pairs)


def cmd_scaling(args: argparse.Namespace) -> int:
    settings = scaling.ScalingSettings(
        scenarios=tuple(args.scenarios.split(",")),
        frameworks=tuple(args.frameworks.split(",")),
        hosts=tuple(int(n) for n in args.hosts.split(",")),
        repeats=args.repeats, duration=args.duration, warmup=args.warmup,
        connections_per_host=_per_scenario(args.connections_per_host), cpus=args.cpus,
        server=_server(args), concurrent=not args.sequential,
        shares=args.shares or None, period_us=args.period_us, balance=args.balance,
        burst_periods=args.burst, server_maxconn=args.server_maxconn,
    )  # fmt: skip
    results = scaling.run(settings)
    results["command"] = "python -m benchmarks.rig " + " ".join(sys.argv[1:])
    print()
    print(scaling.table(results))
    print()
    print(scaling.parts_table(results))
    for key, series in results["series"].items():
        for note in series["saturation"]:
            print(f"{key}: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    if args.chart:
        scaling.chart(results, args.chart)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    keys = args.servers.split(",")
    unknown = [k for k in keys if k not in balance.CONFIGS]
    if unknown:
        raise SystemExit(f"unknown: {unknown} (known: {', '.join(balance.CONFIGS)})")
    results: dict[str, t.Any] = {
        "command": "python -m benchmarks.rig " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {k: str(v) for k, v in vars(args).items() if k != "func"},
        "configs": {},
    }
    for key in keys:
        for direct in (False, True) if args.direct else (False,):
            name = key + (" (direct)" if direct else "")
            results["configs"][name] = balance.measure(
                key, balance.CONFIGS[key], args.framework, args.workers, args.duration,
                args.connections, args.cpus or None, args.repeats, direct,
            )  # fmt: skip
    print()
    print(balance.table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def cmd_rolling(args: argparse.Namespace) -> int:
    kinds = [k for k in args.servers.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown: {unknown} (known: {', '.join(KINDS)})")
    results = []
    for _ in range(args.repeats):
        for kind in kinds:
            result = rolling.run(kind, args.hosts, args.cpus or None)
            print(result.line(), *result.errors, sep="\n  ", flush=True)
            results.append(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.as_dict() for r in results], indent=1))
    return 0 if all(r.ok for r in results) else 1


def cmd_fanout(args: argparse.Namespace) -> int:
    settings = fanout.FanoutSettings(
        hosts=tuple(int(n) for n in args.hosts.split(",")), clients=args.clients,
        messages=args.messages, rate=args.rate, pad=args.pad, server=args.server,
        workers=args.workers, cpus=args.cpus or None, direct=args.direct,
        shares=args.shares or None,
    )  # fmt: skip
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results = []
    for _ in range(args.repeats):
        results += fanout.run(settings)
    print()
    print(fanout.table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "python -m benchmarks.rig " + " ".join(sys.argv[1:]),
            "started": started,
            "results": [r.as_dict() for r in results],
        }, indent=1))  # fmt: skip
    return 0 if all(r.ok for r in results) else 1


def cmd_cleanup(args: argparse.Namespace) -> int:
    report = cleanup(force=args.force)
    for run, what in report.items():
        print(f"{run}: {what}")
    if not report:
        print("nothing left behind")
    return 0 if all(w == "removed" or w.startswith("in use") for w in report.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rig",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(required=True)

    p = sub.add_parser("up", help="bring up a rig and keep it until Ctrl-C")
    _add_rig_args(p)
    p.add_argument("--for-seconds", type=float, default=0, help="tear down after this long")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("load", help="bring up a rig, load it once, print what it measured")
    _add_rig_args(p)
    p.add_argument("--target", default="/")
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("scaling", help="throughput with 1, 2 and 4 hosts (the full matrix)")
    p.add_argument("--scenarios", default=",".join(scaling.SCENARIOS))
    p.add_argument("--frameworks", default=",".join(scaling.FRAMEWORKS))
    p.add_argument("--hosts", default="1,2,4")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per load")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections-per-host",
                   default=",".join(f"{k}={v}" for k, v in
                                    scaling.ScalingSettings.connections_per_host),
                   help="wrk connections per host, by scenario (default: %(default)s)")  # fmt: skip
    p.add_argument("--period-us", type=int, default=scaling.ScalingSettings.period_us,
                   help="CFS period of the budget, us (default: %(default)s)")  # fmt: skip
    p.add_argument("--balance", default="roundrobin", help="HAProxy's algorithm")
    p.add_argument("--burst", type=float, default=scaling.ScalingSettings.burst_periods,
                   help="unused quota a host may carry over, in periods "
                   "(default: %(default)s)")  # fmt: skip
    p.add_argument("--no-server-maxconn", dest="server_maxconn", action="store_false",
                   help="no HAProxy maxconn on the servers (default: the connections per "
                   "host)")  # fmt: skip
    p.add_argument("--sequential", action="store_true",
                   help="one rig, the counts loaded in turn (default: one rig per count, "
                   "all loaded at the same moment)")  # fmt: skip
    p.add_argument("--shares", type=int, default=scaling.ScalingSettings.shares,
                   help="cpu.shares per part of a run (host, HAProxy, wrk, Redis) against "
                   "the machine's other work (default: %(default)s; 0: the kernel's 1024 "
                   "per run)")  # fmt: skip
    p.add_argument("--cpus", type=float, default=scaling.ScalingSettings.cpus,
                   help="CPU budget per host (default: %(default)s)")  # fmt: skip
    _add_server_args(p)
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--chart", type=Path, help="write the chart (PNG) here")
    p.set_defaults(func=cmd_scaling)

    p = sub.add_parser("balance", help="requests per worker, 4 workers on one host")
    p.add_argument("--servers", default=",".join(balance.CONFIGS))
    p.add_argument("--framework", choices=("carboy", "flask"), default="carboy")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--cpus", type=float, default=0.8, help="the host's budget (0: none)")
    p.add_argument("--direct", action="store_true", help="also load the host without HAProxy")
    p.add_argument("--json", type=Path)
    p.set_defaults(func=cmd_balance)

    p = sub.add_parser("rolling", help="SIGTERM one host under load: nothing may be lost")
    p.add_argument("--servers", default=",".join(rolling.SERVERS))
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--cpus", type=float, default=0.4, help="CPU budget per host (0: none)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.set_defaults(func=cmd_rolling)

    p = sub.add_parser("fanout", help="WebSocket fan-out across 1, 2 and 4 hosts")
    p.add_argument("--hosts", default="1,2,4", help="hosts counts, in turn on one rig")
    p.add_argument("--clients", type=int, default=300)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0, help="messages a second")
    p.add_argument("--pad", type=int, default=40, help="filler bytes per message")
    p.add_argument("--server", choices=fanout.SERVERS, default="uvicorn")
    p.add_argument("--workers", type=int, default=1, help="workers per host")
    p.add_argument("--cpus", type=float, default=fanout.FanoutSettings.cpus,
                   help="CPU budget per host (default: %(default)s; 0: none)")  # fmt: skip
    p.add_argument("--direct", action="store_true",
                   help="clients straight to the hosts (default: through HAProxy)")  # fmt: skip
    p.add_argument("--shares", type=int, default=fanout.FanoutSettings.shares,
                   help="cpu.shares per part of the run (default: %(default)s; 0: the "
                   "kernel's 1024 per run)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", type=Path)
    p.set_defaults(func=cmd_fanout)

    p = sub.add_parser("cleanup", help="remove what killed runs left behind")
    p.add_argument("--force", action="store_true", help="also runs whose owner still runs")
    p.set_defaults(func=cmd_cleanup)

    args = parser.parse_args(argv)
    if args.func is not cmd_cleanup:
        missing = missing_prerequisites(redis=args.func is not cmd_rolling)
        if missing:
            print("the rig needs: " + "; ".join(missing), file=sys.stderr)
            return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
