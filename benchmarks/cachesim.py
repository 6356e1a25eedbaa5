"""What one request costs a server's worker, counted by valgrind (callgrind with its cache model).

End-to-end req/s on a small VM moves by ±3-5% between runs, which is as large as most single
changes to a hot path. Callgrind's counts are repeatable (the same code measured again here
differed by 0.3% to 1.5%), and its cache model counts what instruction counts miss: code and data
that the server's own work between two requests pushed out of the L1 caches. For each
framework this script:

1. starts the server (the end-to-end measurement's command for it, one worker, pinned to
   CPU 0) under ``valgrind --tool=callgrind --cache-sim=yes --trace-children=yes``;
2. loads it with wrk (CPU 1, 32 connections) for a warm-up, then zeroes the worker's counters
   (``callgrind_control -z``), loads it again for ``--seconds`` and dumps them (``-d``);
3. divides the dump's totals (every thread of the worker: the server's Rust or C code, the
   event loop, the app) by the number of requests wrk counted.

It prints, per request: instructions (``Ir``), L1 instruction and data misses, and an
estimate of cycles, ``Ir + 10 * L1 misses + 100 * last-level misses``. The weights are rough
and kernel time is not counted, so compare estimates between apps, not with real time. Under
valgrind a worker runs about 50 times slower, so a run of 10 s sees a few thousand requests.

Usage (needs valgrind, wrk and taskset; about 1.5 minutes per framework)::

    python benchmarks/cachesim.py --frameworks raw-asgi,carboy-asgi --server granian-asgi

.. versionadded:: 0.1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import apps, servers, wrk
from benchmarks.scenarios import SCENARIOS

#: Weights of a first-level and a last-level cache miss, in cycles (rough, for comparison).
L1_MISS_CYCLES = 10
LL_MISS_CYCLES = 100


@dataclass
class Cost:
    """Callgrind's counts per request."""

    requests: int
    #: Event name (``Ir``, ``I1mr``, ``D1mr``, ...) to its count per request.
    events: dict[str, float]

    @property
    def estimate(self) -> float:
        """``Ir + 10 * L1 misses + 100 * last-level misses`` per request."""
        e = self.events
        l1 = e.get("I1mr", 0.0) + e.get("D1mr", 0.0) + e.get("D1mw", 0.0)
        ll = e.get("ILmr", 0.0) + e.get("DLmr", 0.0) + e.get("DLmw", 0.0)
        return e.get("Ir", 0.0) + L1_MISS_CYCLES * l1 + LL_MISS_CYCLES * ll


def read_totals(dump: str) -> dict[str, int]:
    """The event totals of a callgrind dump's text: its ``events:`` names paired with its
    ``summary:`` (or ``totals:``) counts.

    :raises ValueError: when either line is missing.
    """
    names: list[str] | None = None
    counts: list[int] | None = None
    for line in dump.splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("summary:", "totals:")) and counts is None:
            counts = [int(value) for value in line.split()[1:]]
    if names is None or counts is None:
        raise ValueError("not a callgrind dump: no events: or summary: line")
    counts += [0] * (len(names) - len(counts))  # trailing zeros may be left out
    return dict(zip(names, counts, strict=True))


def measure(framework: apps.Framework, server: servers.ServerKind, seconds: float) -> Cost:
    """Run *framework* under *server* and valgrind, and read its cost per hello request."""
    hello = next(scenario for scenario in SCENARIOS if scenario.name == "hello").request
    with tempfile.TemporaryDirectory(prefix="carboy-cachesim-") as tmp:
        valgrind = (
            "valgrind", "--tool=callgrind", "--cache-sim=yes", "--trace-children=yes",
            f"--callgrind-out-file={tmp}/callgrind.out.%p",
        )  # fmt: skip
        log = Path(tmp) / "server.log"
        # Valgrind makes start-up slow (about 20 s here).
        with servers.Server(server, framework, 0, log, valgrind, startup_timeout=300) as served:
            assert served.worker is not None
            pid = served.worker.pid
            wrk.run(served.url, hello, 5, 32, 1)  # warm-up: specialised bytecode, filled caches
            _control("-z", pid)
            load = wrk.run(served.url, hello, seconds, 32, 1)
            _control("-d", pid)
        dump = Path(tmp) / f"callgrind.out.{pid}.1"
        totals = read_totals(dump.read_text(errors="replace"))
    if load.non_2xx or load.socket_errors:
        raise RuntimeError(
            f"{framework.key}: {load.non_2xx} bad answers, {load.socket_errors} errors"
        )
    return Cost(load.requests, {name: count / load.requests for name, count in totals.items()})


def _control(option: str, pid: int) -> None:
    """``callgrind_control <option> <pid>``: ``-z`` zeroes the counters, ``-d`` dumps them."""
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--frameworks",
        default="raw-asgi,carboy-asgi",
        help="comma-separated; ratios are to the first",
    )
    parser.add_argument("--server", default="granian-asgi", choices=sorted(servers.BY_KEY))
    parser.add_argument("--seconds", type=float, default=10.0, help="measured load per framework")
    args = parser.parse_args(argv)
    if not wrk.available():
        parser.error("wrk and taskset are needed")
    server = servers.BY_KEY[args.server]
    costs = []
    for key in args.frameworks.split(","):
        framework = apps.BY_KEY[key]
        print(f"measuring {framework.key} under {server.label} and valgrind...", file=sys.stderr)
        costs.append((framework, measure(framework, server, args.seconds)))
    base = costs[0][1].estimate
    print(f"\nPer hello request under {server.label} (callgrind, cache model):\n")
    print("| app | requests | Ir | I1 misses | D1 misses | estimated cycles | ÷ first |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for framework, cost in costs:
        e = cost.events
        d1 = e.get("D1mr", 0.0) + e.get("D1mw", 0.0)
        cells = [
            framework.key, f"{cost.requests:,}", f"{e.get('Ir', 0):,.0f}",
            f"{e.get('I1mr', 0):,.0f}", f"{d1:,.0f}", f"{cost.estimate:,.0f}",
            f"{cost.estimate / base:.3f}",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
