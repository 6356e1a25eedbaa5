"""Worker balance: how evenly a host's workers share its requests.

One host runs W workers (4 by default) behind HAProxy; every answer carries the worker that made
it (``X-Rig-Worker``, see :mod:`benchmarks.rig.app`), and the wrk script counts answers per
worker. Reported per server configuration: each worker's count, the busiest over the idlest
(``max/min``), the coefficient of variation and the busiest worker's share.

Why it varies: without ``SO_REUSEPORT`` the workers share one listening socket and the kernel
wakes whichever is waiting (often the same, most recently idle one); with it (gunicorn
``--reuse-port``) each worker has its own socket and the kernel spreads *connections* by a hash
of the addresses. HAProxy keeps a few keep-alive connections to each server and sends many
requests down each, so the balance of requests follows the balance of those connections.
"""

from __future__ import annotations

import re
import statistics
import typing as t
from collections import Counter
from dataclasses import replace

from benchmarks import wrk
from benchmarks.scenarios import Request

from .app import WORKER_HEADER
from .rig import Rig, RigConfig
from .servers import ServerSpec

#: The server configurations compared by default (``--servers``).
CONFIGS: dict[str, ServerSpec] = {
    "gunicorn": ServerSpec("gunicorn"),
    "gunicorn-reuse-port": ServerSpec("gunicorn", reuse_port=True),
    "gunicorn-gthread": ServerSpec("gunicorn", threads=4),
    "gunicorn-gthread-reuse-port": ServerSpec("gunicorn", threads=4, reuse_port=True),
    "granian": ServerSpec("granian"),
    "uvicorn": ServerSpec("uvicorn"),
}

COUNTING = f"""
local rig_threads = {{}}
function setup(thread) table.insert(rig_threads, thread) end
counts = {{}}
function response(status, headers, body)
  local w = headers["{WORKER_HEADER.lower()}"] or headers["{WORKER_HEADER}"] or "none"
  counts[w] = (counts[w] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(rig_threads) do
    for k, v in pairs(t:get("counts")) do io.write(string.format("WORKER %s %d\\n", k, v)) end
  end
end
"""


def counting_script(request: Request) -> str:
    """A wrk script sending *request* and printing ``WORKER <tag> <answers>`` at the end."""
    return wrk.lua_script(request) + COUNTING


def parse_counts(output: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for tag, n in re.findall(r"^WORKER (\S+) (\d+)$", output, re.MULTILINE):
        counts[tag] += int(n)
    return counts


def spread(counts: t.Sequence[int]) -> dict[str, float]:
    """max/min (inf when a worker got nothing), coefficient of variation, busiest share."""
    total = sum(counts) or 1
    mean = statistics.mean(counts)
    return {
        "max_over_min": max(counts) / min(counts) if min(counts) else float("inf"),
        "cv": statistics.pstdev(counts) / mean if mean else 0.0,
        "busiest_share": max(counts) / total,
    }


def measure(
    key: str,
    spec: ServerSpec,
    framework: str = "carboy",
    workers: int = 4,
    seconds: float = 5.0,
    connections: int = 32,
    cpus: float | None = 0.8,
    repeats: int = 3,
    direct: bool = False,
    log: t.Callable[[str], None] = print,
) -> dict[str, t.Any]:
    """Answers per worker of one server configuration, *repeats* loads of *seconds*."""
    spec = replace(spec, workers=workers)
    config = RigConfig(
        hosts=1, app=f"{framework}_hello", server=spec, cpus=cpus, redis=False,
        worker_header=True,
    )  # fmt: skip
    rounds = []
    with Rig(config) as rig:
        request = Request("GET", "/")
        script = counting_script(request)
        rig.load(request, 1, connections, script=script, via="h1" if direct else None)
        for _ in range(repeats):
            m = rig.load(request, seconds, connections, script=script,
                         via="h1" if direct else None)  # fmt: skip
            counts = parse_counts(m.wrk_output)
            workers_seen = sorted(counts.values(), reverse=True)
            # a worker that answered nothing is not in the output: count it as 0
            workers_seen += [0] * max(0, workers - len(workers_seen))
            rounds.append({
                "rps": m.load.rps,
                "errors": m.load.non_2xx + m.load.socket_errors,
                "per_worker": workers_seen,
                "load_average": m.load_average[0],
                "machine_busy_cores": m.machine_busy_cores,
                **spread(workers_seen),
            })  # fmt: skip
            log(
                f"  {key:28} {m.load.rps:8.0f} req/s  per worker {workers_seen}  "
                f"max/min {rounds[-1]['max_over_min']:.2f}  cv {rounds[-1]['cv']:.2f}"
            )
    return {
        "server": spec.label(),
        "direct": direct,
        "rounds": rounds,
        "max_over_min_median": statistics.median(r["max_over_min"] for r in rounds),
        "cv_median": statistics.median(r["cv"] for r in rounds),
        "busiest_share_median": statistics.median(r["busiest_share"] for r in rounds),
    }


def table(results: dict[str, t.Any]) -> str:
    rows = [
        "| server | path | req/s | answers per worker (median round) | max/min | CV | "
        "busiest share | load avg |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for key, e in results["configs"].items():
        rounds = sorted(e["rounds"], key=lambda r: r["cv"])
        mid = rounds[(len(rounds) - 1) // 2]
        rows.append(
            f"| {key} | {'direct' if e['direct'] else 'HAProxy'} | {mid['rps']:.0f} | "
            f"{', '.join(map(str, mid['per_worker']))} | {_ratio(e['max_over_min_median'])} | "
            f"{e['cv_median']:.2f} | {e['busiest_share_median']:.0%} | "
            f"{statistics.median(r.get('load_average', 0.0) for r in e['rounds']):.1f} |"
        )
    return "\n".join(rows)


def _ratio(value: float) -> str:
    return "∞ (a worker got none)" if value == float("inf") else f"{value:.2f}"
