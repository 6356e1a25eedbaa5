"""WebSocket fan-out across the rig's hosts (issue 20's scenario; issue 21's "across hosts").

One rig of ``max(hosts)`` hosts serving ``carboy_realtime`` (:mod:`benchmarks.rig.app`:
carboy's ``Broadcast`` on the rig's Redis, Streams backend, and its WebSocket helper) under
an ASGI server (uvicorn or granian ASGI), each host with its CPU budget. For each hosts count
n, HAProxy balances over the first n hosts only (the others are put in maintenance, as the
scaling's ``--sequential`` does), and one process in the client namespace
(:mod:`benchmarks.rig.fanout_clients`) connects the WebSocket clients and publishes
timestamped messages at a fixed rate through h1 (``POST /rig/publish/<channel>``, straight to
h1: one publisher, one host). Each count uses a channel of its own.

The clients connect **through HAProxy** by default, as browsers would: round-robin spreads the
connections over the hosts (each client's greeting names its host and worker), and the run
exercises HAProxy's WebSocket path (``timeout tunnel``). ``direct`` connects client i straight
to host ``i mod n`` instead, which takes HAProxy's forwarding (one more hop, and its CPU) out
of the latency.

Reported per count: clients connected and where, messages, the clients that got every
message in order and once, the messages lost, out of order and duplicated (summed over the
clients), deliveries a second, publisher-to-client latency (p50, p90, p99, max), and the CPU
each part used meanwhile (hosts, HAProxy, Redis, the clients' process), the machine's busy
cores and its load average. Every wait is bounded: the clients' process by its own timeouts
(connect, ``settle`` after the last publish), and the driver kills it past
``connect + messages / rate + settle + 30`` seconds.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field

from .rig import Rig, RigConfig
from .servers import PORT, ServerSpec

SERVERS = ("uvicorn", "granian-asgi")
CONNECT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class FanoutSettings:
    """What a fan-out run does."""

    hosts: tuple[int, ...] = (1, 2, 4)
    clients: int = 300
    messages: int = 1000
    #: Messages a second, from one publisher.
    rate: float = 100.0
    #: Filler bytes per message (a message is about 20 bytes plus this).
    pad: int = 40
    server: str = "uvicorn"
    workers: int = 1
    #: Each host's CPU budget in CPUs (``None``: no quota).
    cpus: float | None = 0.5
    #: Connect the clients straight to the hosts instead of through HAProxy.
    direct: bool = False
    #: Seconds to wait after the last publish for the last deliveries.
    settle_s: float = 30.0
    #: ``cpu.shares`` per part of the run against the machine's other work, as the scaling
    #: measurement sets it (:attr:`RigConfig.shares`; ``None``: the kernel's default).
    shares: int | None = 4096

    def __post_init__(self) -> None:
        if self.server not in SERVERS:
            raise ValueError(f"fan-out needs an ASGI server: {', '.join(SERVERS)}")
        if not self.hosts or min(self.hosts) < 1:
            raise ValueError("hosts: counts of 1 or more")
        if self.clients < 1 or self.messages < 1 or self.rate <= 0:
            raise ValueError("clients, messages and rate must be positive")

    def config(self) -> RigConfig:
        return RigConfig(
            hosts=max(self.hosts),
            app="carboy_realtime",
            server=ServerSpec(
                self.server,
                workers=self.workers,
                # the rig's granian runs --no-ws; the last of the two flags wins
                extra=("--ws",) if self.server == "granian-asgi" else (),
            ),
            cpus=self.cpus,
            redis=True,
            shares=self.shares,
        )

    @property
    def bound_s(self) -> float:
        """The longest the clients' process may run for one count."""
        return CONNECT_TIMEOUT_S + self.messages / self.rate + self.settle_s + 30


@dataclass
class FanoutResult:
    """One hosts count's figures (the clients' process's, plus what each part used)."""

    hosts: int
    server: str
    path: str
    clients: int
    connected: int
    connect_s: float
    #: The addresses the clients connected from (the client namespace's).
    sources: list[str]
    #: Clients per host, and per worker (``h1/<pid>``), from their greetings.
    per_host: dict[str, int]
    per_worker: dict[str, int]
    messages: int
    rate: float
    #: Seconds the publisher took to publish them all.
    publish_s: float
    #: Clients that got every message, in order, once.
    complete: int
    #: Summed over the clients: messages never received, received after a later one, and
    #: received twice.
    lost: int
    out_of_order: int
    duplicates: int
    deliveries: int
    deliveries_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    #: CPU seconds while the clients' process ran: each host, HAProxy, Redis, the clients.
    cpu_s: dict[str, float]
    wall_s: float
    machine_busy_cores: float
    load_average: tuple[float, float, float]
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every client connected and got every message in order, once, and the clients
        were on every host balanced over."""
        return (
            self.connected == self.clients == self.complete
            and self.lost == self.out_of_order == self.duplicates == 0
            and len(self.per_host) == self.hosts
            and not self.errors
        )

    def line(self) -> str:
        spread = ", ".join(f"{h} {n}" for h, n in self.per_host.items())
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in self.cpu_s.items())
        load = ", ".join(f"{x:.1f}" for x in self.load_average)
        return (
            f"{self.hosts} host{'s' if self.hosts > 1 else ''} ({self.server}, {self.path}): "
            f"{self.connected}/{self.clients} clients ({spread}), {self.messages} messages at "
            f"{self.rate:g}/s (published in {self.publish_s:.1f} s): {self.complete} complete "
            f"in order, lost {self.lost}, out of order {self.out_of_order}, duplicates "
            f"{self.duplicates}; "
            f"{self.deliveries_per_s:.0f} deliveries/s; latency p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms; CPU s in {self.wall_s:.1f} s: "
            f"{cpu}; machine {self.machine_busy_cores:.2f} cores busy, load {load}"
            f" -> {'ok' if self.ok else 'FAIL'}"
        )

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def measure(rig: Rig, settings: FanoutSettings, hosts: int, channel: str) -> FanoutResult:
    """Balance *rig* over its first *hosts* hosts and run the clients' process once."""
    assert rig.network is not None
    rig.use_hosts(hosts)
    lb = rig.network.address("lb")
    if settings.direct:
        ws = [f"ws://{h.address}:{PORT}/rig/fanout/{channel}" for h in rig.hosts[:hosts]]
    else:
        ws = [f"ws://{lb}:80/rig/fanout/{channel}"]
    out = rig.dir / f"fanout-{channel}.json"
    command = [
        sys.executable, "-m", "benchmarks.rig.fanout_clients",
        *(arg for url in ws for arg in ("--ws", url)),
        "--publish", f"{rig.hosts[0].url}/rig/publish/{channel}",
        "--clients", str(settings.clients), "--messages", str(settings.messages),
        "--rate", f"{settings.rate:g}", "--pad", str(settings.pad),
        "--connect-timeout", f"{CONNECT_TIMEOUT_S:g}", "--settle", f"{settings.settle_s:g}",
        "--out", str(out),
    ]  # fmt: skip
    client_group = rig.groups["client"]
    before, client_before = rig.snapshot(), client_group.usage_seconds()
    rig.run_client(command, settings.bound_s)
    after, client_after = rig.snapshot(), client_group.usage_seconds()
    figures = json.loads(out.read_text())
    wall = after.at - before.at
    cpu = {n: after.hosts_cpu[n] - before.hosts_cpu[n] for n in after.hosts_cpu}
    cpu["haproxy"] = after.haproxy_cpu - before.haproxy_cpu
    cpu["redis"] = after.redis_cpu - before.redis_cpu
    cpu["clients"] = client_after - client_before
    busy = (after.machine_busy - before.machine_busy) / max(
        1e-9, after.machine_total - before.machine_total
    )
    return FanoutResult(
        hosts=hosts,
        server=settings.server,
        path="direct" if settings.direct else "HAProxy",
        cpu_s={k: round(v, 2) for k, v in cpu.items()},
        wall_s=round(wall, 2),
        machine_busy_cores=round(busy * (os.cpu_count() or 1), 2),
        load_average=os.getloadavg(),
        **figures,
    )


def run(settings: FanoutSettings, echo: bool = True) -> list[FanoutResult]:
    """One rig, every hosts count of *settings* in turn; torn down after (also on failure)."""
    results = []
    with Rig(settings.config()) as rig:
        for n in settings.hosts:
            result = measure(rig, settings, n, f"fanout-{n}")
            if echo:
                print(result.line(), *result.errors, sep="\n  ", flush=True)
            results.append(result)
    return results


def table(results: list[FanoutResult]) -> str:
    """A Markdown table of *results*."""
    lines = [
        "| hosts | clients per host | messages (published a second) | complete, in order | "
        "lost, out of order, duplicates | deliveries/s | p50 | p99 | max | CPU s: hosts, "
        "HAProxy, Redis, clients (wall s) | load average |",
        "|---:|---|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        hosts_cpu = sum(v for k, v in r.cpu_s.items() if k.startswith("h") and k[1:].isdigit())
        lines.append(
            f"| {r.hosts} | {', '.join(str(n) for n in r.per_host.values())} | {r.messages} "
            f"({r.messages / max(1e-9, r.publish_s):.0f}) | "
            f"{r.complete}/{r.clients} | {r.lost}, {r.out_of_order}, {r.duplicates} | "
            f"{r.deliveries_per_s:,.0f} | {r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms | "
            f"{r.max_ms:.0f} ms | {hosts_cpu:.1f}, {r.cpu_s['haproxy']:.1f}, "
            f"{r.cpu_s['redis']:.1f}, {r.cpu_s['clients']:.1f} ({r.wall_s:.0f}) | "
            f"{r.load_average[0]:.1f} |"
        )
    return "\n".join(lines)
