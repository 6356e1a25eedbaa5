"""Realtime fan-out: one publisher, many WebSocket clients, several workers (issue 21).

Serves ``tests/served_apps/realtime_app.py`` (the broadcast's WebSocket helper on the Redis
Streams backend) with uvicorn or granian, connects the clients from this process (the
``websockets`` library's sans-I/O client, :mod:`realtime_clients`), publishes timestamped
messages at a fixed rate from a thread, and reports, per round: how many clients received
every message in order, the publisher-to-client latency (p50, p90, p99, max), the deliveries
per second and the CPU seconds of the workers and of the client process. The same scenario
is the suite's fan-out test (``tests/test_scale_realtime.py``), which asserts completeness and
order; this script also checks the latency target::

    python benchmarks/realtime.py        # 300 clients, 3 workers, 1000 messages at 100/s
    python benchmarks/realtime.py --clients 1000 --rate 200 --messages 2000
    python benchmarks/realtime.py --server granian --rounds 3 --target-p99 50 --strict

Needs the machine's Redis at 127.0.0.1:6379 (database 15; the run's keys are deleted).
``--strict`` exits with status 1 when a round misses ``--target-p99`` (milliseconds) or loses
a message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]
# The servers import this tree's carboy too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
)

import httpx  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402

import carboy  # noqa: E402
from carboy.scale.broadcast import Broadcast  # noqa: E402
from realtime_clients import FanOut, fan_out  # noqa: E402
from servers import Server, free_port, tool  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/15"
APP = "realtime_app:app"


def command(server: str, port: int, workers: int, app: str = APP) -> list[str]:
    """The command line that serves *app* (``module:attribute``) with *workers* workers."""
    if server == "granian":
        return [
            *tool("granian"),
            *("--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", str(workers), "--log-level", "warning", app),
        ]
    return [
        *tool("uvicorn"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--log-level", "warning", app),
    ]


def worker_cpu(server: Server) -> float:
    """CPU seconds of the server's processes so far."""
    assert server.proc is not None
    total = 0.0
    for proc in [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    prefix = f"bench-realtime-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    app = carboy.Carboy("publisher")
    app.config.update(REDIS_URL=REDIS_URL, BROADCAST_KEY_PREFIX=prefix, BROADCAST_KEY_TTL=600)
    publisher = Broadcast(app)
    port = free_port()
    env = {"RT_REDIS_URL": REDIS_URL, "RT_PREFIX": prefix, "RT_BACKEND": "streams"}
    log = Path(args.log_dir) / f"realtime-{args.server}.log"
    rounds: list[dict[str, object]] = []
    try:
        with Server(command(args.server, port, args.workers), port, log, env) as server:
            server.wait_until_up("/pid")
            pids: set[str] = set()
            while len(pids) < args.workers:  # every worker up, so that clients spread
                pids.add(httpx.get(server.base_url + "/pid", headers={"Connection": "close"}).text)
            for n in range(args.rounds):
                cpu = worker_cpu(server)
                result: FanOut = asyncio.run(
                    fan_out(
                        server.ws_url + f"/ws/bench{n}",
                        lambda text: publisher.publish(f"bench{n}", text),  # noqa: B023
                        clients=args.clients,
                        messages=args.messages,
                        rate=args.rate,
                        pad=args.pad,
                    )
                )
                figures = {
                    "round": n + 1,
                    "server": args.server,
                    "workers": args.workers,
                    **measured(result, args.rate, worker_cpu(server) - cpu),
                }
                rounds.append(figures)
                print(json.dumps(figures), flush=True)
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
    return rounds


def measured(result: FanOut, rate: float, worker_cpu_s: float) -> dict[str, object]:
    """The figures of one round (*rate*: messages a second; *worker_cpu_s*: the servers')."""
    return {
        "clients": result.clients,
        "messages": result.messages,
        "rate": rate,
        "complete": result.complete,
        "missing": result.missing,
        "disordered": result.disordered,
        "p50_ms": round(result.ms(0.5), 1),
        "p90_ms": round(result.ms(0.9), 1),
        "p99_ms": round(result.ms(0.99), 1),
        "max_ms": round(result.ms(1.0), 1),
        "deliveries_per_s": round(len(result.latencies) / result.seconds),
        "worker_cpu_s": round(worker_cpu_s, 1),
        "client_cpu_s": round(result.client_cpu, 1),
        "per_worker": sorted(result.workers.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="messages a second")
    parser.add_argument("--pad", type=int, default=40, help="bytes of filler per message")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--target-p99", type=float, default=50.0, help="milliseconds")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a round misses")
    parser.add_argument("--log-dir", default="/tmp")
    args = parser.parse_args(argv)
    rounds = run(args)
    missed = [r for r in rounds if r["complete"] != r["clients"]]
    slow = [r for r in rounds if t_float(r["p99_ms"]) > args.target_p99]
    for r in rounds:
        verdict = "meets" if r not in slow else "MISSES"
        print(
            f"round {r['round']}: {r['complete']}/{r['clients']} clients complete and in order;"
            f" p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms ({verdict} the {args.target_p99:g} ms"
            f" target); {r['deliveries_per_s']} deliveries/s; CPU s: workers"
            f" {r['worker_cpu_s']}, client {r['client_cpu_s']}"
        )
    return 1 if args.strict and (missed or slow) else 0


def t_float(value: object) -> float:
    return float(value)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
