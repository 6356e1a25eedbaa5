"""The rig itself: hosts in network namespaces with CPU budgets, HAProxy, Redis and wrk.

    with Rig(RigConfig(hosts=2, app="carboy_shared")) as rig:
        rig.ask("/readyz")                      # through HAProxy, from the root namespace
        result = rig.load(Request("GET", "/"), seconds=3)

:class:`Rig` is a context manager: entering brings everything up and waits until HAProxy sees
every host up; leaving (also on an exception, or a SIGINT/SIGTERM turned into one by the
command line) stops every process, then deletes the namespaces, veths, bridge, cgroups and the
run's directory. ``python -m benchmarks.rig cleanup`` removes what a killed run left.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import time
import typing as t
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from benchmarks import wrk
from benchmarks.scenarios import Answer, Request
from benchmarks.servers import ensure_bytecode, launch, stop_group

from . import app as rig_app
from . import haproxy, netns
from .cgroups import (
    CpuGroup,
    Hierarchy,
    Throttling,
    machine_busy_seconds,
    process_cpu_seconds,
)
from .servers import PORT, ServerSpec

STARTUP_TIMEOUT = 60.0
REDIS_PORT = 6379


def missing_prerequisites(redis: bool = True) -> list[str]:
    """What this machine lacks to run a rig (empty when nothing): root, ``ip``, HAProxy, wrk,
    ``redis-server``, a cpu cgroup."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces and cgroups)")
    for name, found in (
        ("ip (iproute2)", shutil.which("ip")),
        ("haproxy (Debian package haproxy)", haproxy.binary()),
        ("wrk (Debian package wrk)", shutil.which("wrk")),
        ("redis-server (Debian package redis-server)", shutil.which("redis-server") or not redis),
    ):
        if not found:
            missing.append(name)
    try:
        Hierarchy.detect()
    except RuntimeError as exc:
        missing.append(str(exc))
    return missing


@dataclass(frozen=True)
class RigConfig:
    """What a rig runs."""

    hosts: int = 2
    #: The app each host serves: an attribute of :mod:`benchmarks.rig.app`.
    app: str = "carboy_hello"
    server: ServerSpec = field(default_factory=ServerSpec)
    #: Each host's CPU budget in CPUs (``None``: no quota).
    cpus: float | None = 0.2
    #: The CFS period the budget applies in, µs: a host runs at most ``cpus * period_us`` in
    #: each. Short (10 ms) so a host is a steady slower machine, not one that stops for most
    #: of every 100 ms (the kernel's default period).
    period_us: int = 10_000
    #: Unused quota a host may carry into later periods, in periods' worth of quota (0: none;
    #: see :meth:`CpuGroup.set_burst`).
    burst_periods: float = 0.0
    #: Start a Redis in the infra namespace (the shared-state apps need it).
    redis: bool = True
    checks: haproxy.Checks = field(default_factory=haproxy.Checks)
    timeouts: haproxy.Timeouts = field(default_factory=haproxy.Timeouts)
    haproxy_threads: int = 1
    #: HAProxy's ``balance`` algorithm.
    balance: str = "roundrobin"
    #: HAProxy's ``maxconn`` on each server (``None``: no limit).
    server_maxconn: int | None = None
    #: ``cpu.shares`` per part of the run (each host, HAProxy, wrk, Redis), against the
    #: machine's other work: the run's group gets this times its number of parts, so every
    #: process of every run weighs the same whatever the run's size (``None``: the kernel's
    #: default for the whole run).
    shares: int | None = None
    #: Tag every answer with the worker that made it (``X-Rig-Worker``).
    worker_header: bool = False
    #: ``RIG_LIMIT``: the limit of ``/rig/limited``.
    limit: str = "5/minute"
    #: ``RIG_HEALTH``: ``rig`` (the app module's own ``/readyz``) or ``module:callable``.
    health: str = "rig"
    #: More environment for the hosts.
    env: tuple[tuple[str, str], ...] = ()
    #: Copy the run's logs here before the run's directory is removed.
    keep_logs: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.hosts <= 200:
            raise ValueError("hosts: 1 to 200")
        if self.app not in rig_app.APPS:
            raise ValueError(f"unknown app {self.app!r} (known: {', '.join(rig_app.APPS)})")

    @property
    def framework(self) -> str:
        return self.app.split("_", 1)[0]


@dataclass
class Host:
    name: str
    address: str
    group: CpuGroup
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{PORT}"


@dataclass
class Usage:
    """Cumulative counters read at one moment (see :meth:`Rig.snapshot`)."""

    at: float
    haproxy_cpu: float
    redis_cpu: float
    hosts_cpu: dict[str, float]
    throttling: dict[str, Throttling]
    machine_busy: float
    machine_total: float
    served: dict[str, int]


@dataclass
class Measurement:
    """One bounded load through HAProxy, and what each part of the rig used meanwhile."""

    load: wrk.Load
    seconds: float
    #: Hosts HAProxy balanced over; the per-host figures below are theirs only.
    hosts_enabled: int
    #: wrk's connections.
    connections: int
    #: CPU used, in cores (CPU seconds over wall seconds).
    haproxy_cores: float
    redis_cores: float
    wrk_cores: float
    #: Per host: cores used, and that over its budget (1.0: it used all it may).
    host_cores: dict[str, float]
    host_budget_used: dict[str, float]
    #: Per host: periods in which it was throttled, over the periods it ran in.
    host_throttled: dict[str, float]
    host_throttled_periods: dict[str, tuple[int, int]]
    #: 2xx answers HAProxy got from each host.
    served: dict[str, int]
    machine_busy_cores: float
    load_average: tuple[float, float, float]
    wrk_output: str = ""

    def as_dict(self) -> dict[str, t.Any]:
        out = dict(self.__dict__)
        out["load"] = self.load.as_dict()
        out.pop("wrk_output")
        return out


class Rig:
    """N app hosts behind HAProxy, with Redis and a wrk client, each in its own namespace."""

    def __init__(self, config: RigConfig) -> None:
        self.config = config
        self.run = ""
        self.dir = Path()
        self.network: netns.Network | None = None
        self.hierarchy: Hierarchy | None = None
        self.hosts: list[Host] = []
        self.groups: dict[str, CpuGroup] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        #: How many hosts (the first ones) HAProxy balances over (:meth:`use_hosts`).
        self.enabled = config.hosts

    # -- bringing up ----------------------------------------------------------------------------

    def __enter__(self) -> Rig:
        missing = missing_prerequisites(self.config.redis)
        if missing:
            raise RuntimeError("the rig needs: " + "; ".join(missing))
        self.run, number, self.dir = netns.allocate_run()
        try:
            self._bring_up(number)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _bring_up(self, number: int) -> None:
        cfg = self.config
        self.hierarchy = Hierarchy.detect()
        self.hierarchy.create_run(self.run)
        if cfg.shares is not None:
            parts = cfg.hosts + 2 + (1 if cfg.redis else 0)
            self.hierarchy.set_shares(self.run, cfg.shares * parts)
        self.network = net = netns.Network(self.run, number)
        net.create()
        roles = ["lb", "client", *(["infra"] if cfg.redis else [])]
        for role in roles:
            net.add(role)
            self.groups[role] = self.hierarchy.group(self.run, role).create()
        for i in range(1, cfg.hosts + 1):
            name = f"h{i}"
            net.add(name)
            group = self.hierarchy.group(self.run, name).create(cfg.cpus, cfg.period_us)
            if cfg.cpus is not None and cfg.burst_periods > 0:
                group.set_burst(round(cfg.cpus * cfg.period_us * cfg.burst_periods))
            self.groups[name] = group
            self.hosts.append(Host(name, net.address(name), group))
        if cfg.redis:
            self._start_redis()
        ensure_bytecode()
        for host in self.hosts:
            self._start_host(host)
        for host in self.hosts:
            self._wait_host(host)
        self._start_haproxy()
        self.wait_servers_up([h.name for h in self.hosts])

    @property
    def redis_url(self) -> str:
        assert self.network is not None
        return f"redis://{self.network.address('infra')}:{REDIS_PORT}/0"

    @property
    def key_prefix(self) -> str:
        return f"{self.run}:"

    @property
    def url(self) -> str:
        """HAProxy's frontend (reachable from the root namespace too)."""
        assert self.network is not None
        return f"http://{self.network.address('lb')}:{haproxy.PORT}"

    @property
    def stats_socket(self) -> Path:
        return self.dir / "haproxy.sock"

    def _spawn(
        self, role: str, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        assert self.network is not None
        argv = self.groups[role].wrap(self.network.exec_command(role, command))
        proc = launch(argv, self.dir / f"{role}.log", env)
        self.processes[role] = proc
        return proc

    def _start_redis(self) -> None:
        import redis

        assert self.network is not None
        address = self.network.address("infra")
        self._spawn("infra", [
            shutil.which("redis-server") or "redis-server", "--bind", address,
            "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--dir", str(self.dir), "--maxclients", "10000",
        ])  # fmt: skip
        deadline = time.monotonic() + 10
        client = redis.Redis(host=address, port=REDIS_PORT, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                self._check_alive("infra")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis did not start:\n{self.log_tail('infra')}")
                time.sleep(0.05)
            finally:
                client.close()

    def _host_env(self, host: Host) -> dict[str, str]:
        cfg = self.config
        env = {
            rig_app.ENV_HOST: host.name,
            rig_app.ENV_LIMIT: cfg.limit,
            rig_app.ENV_HEALTH: cfg.health,
            "SHARED_STATE_REDIS": self.redis_url if cfg.redis else "",
            "SHARED_STATE_PREFIX": self.key_prefix,
        }
        if cfg.worker_header:
            env[rig_app.ENV_WORKER_HEADER] = cfg.server.interface
        env.update(cfg.env)
        return env

    def _start_host(self, host: Host) -> None:
        cfg = self.config
        command = cfg.server.command(f"benchmarks.rig.app:{cfg.app}", cfg.framework)
        host.process = self._spawn(host.name, command, self._host_env(host))

    def _wait_host(self, host: Host) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        path = self.config.checks.path
        while True:
            try:
                if http_get(host.address, PORT, path, timeout=2).status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            self._check_alive(host.name)
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{host.name} did not answer {path}:\n{self.log_tail(host.name)}"
                )
            time.sleep(0.1)

    def _start_haproxy(self) -> None:
        assert self.network is not None
        cfg = self.config
        text = haproxy.config(
            self.network.address("lb"),
            [(h.name, f"{h.address}:{PORT}") for h in self.hosts],
            self.stats_socket,
            cfg.checks,
            cfg.timeouts,
            cfg.haproxy_threads,
            balance=cfg.balance,
            server_maxconn=cfg.server_maxconn,
        )
        path = self.dir / "haproxy.cfg"
        path.write_text(text)
        binary = haproxy.binary()
        assert binary is not None
        check = subprocess.run(
            [binary, "-c", "-q", "-f", str(path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejected its configuration:\n{check.stderr}\n{text}")
        self._spawn("lb", [binary, "-db", "-f", str(path)])

    def wait_servers_up(self, names: Sequence[str], timeout: float = 20.0) -> None:
        """Wait until HAProxy's checks see each of *names* up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                stats = haproxy.stats(self.stats_socket)
                if all(stats.get(n) is not None and stats[n].up for n in names):
                    return
            except OSError:
                stats = {}
            self._check_alive("lb")
            if time.monotonic() > deadline:
                states = {n: s.status for n, s in stats.items()}
                raise RuntimeError(f"haproxy does not see {list(names)} up: {states}")
            time.sleep(0.05)

    def _check_alive(self, role: str) -> None:
        proc = self.processes.get(role)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{role} exited ({proc.returncode}):\n{self.log_tail(role)}")

    def log_tail(self, role: str, lines: int = 30) -> str:
        try:
            text = (self.dir / f"{role}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- using it -------------------------------------------------------------------------------

    def ask(self, target: str, method: str = "GET", host: str | None = None, **kw: t.Any) -> Answer:
        """One request from the root namespace: through HAProxy, or straight to *host*."""
        if host is None:
            assert self.network is not None
            return http_get(self.network.address("lb"), haproxy.PORT, target, method=method, **kw)
        h = self.host(host)
        return http_get(h.address, PORT, target, method=method, **kw)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def use_hosts(self, count: int) -> None:
        """Balance over the first *count* hosts only; the others go to maintenance."""
        if not 1 <= count <= len(self.hosts):
            raise ValueError(f"count: 1 to {len(self.hosts)}")
        for i, h in enumerate(self.hosts):
            haproxy.set_state(self.stats_socket, h.name, "ready" if i < count else "maint")
        self.wait_servers_up([h.name for h in self.hosts[:count]])
        self.enabled = count

    def served(self) -> dict[str, int]:
        """2xx answers HAProxy has had from each host so far."""
        return {n: s.responses_2xx for n, s in haproxy.stats(self.stats_socket).items()}

    def snapshot(self) -> Usage:
        busy, total = machine_busy_seconds()
        return Usage(
            at=time.monotonic(),
            haproxy_cpu=self._process_cpu("lb"),
            redis_cpu=self._process_cpu("infra"),
            hosts_cpu={h.name: h.group.usage_seconds() for h in self.hosts[: self.enabled]},
            throttling={h.name: h.group.throttling() for h in self.hosts[: self.enabled]},
            machine_busy=busy,
            machine_total=total,
            served=self.served(),
        )

    def _process_cpu(self, role: str) -> float:
        proc = self.processes.get(role)
        return process_cpu_seconds(proc.pid) if proc is not None else 0.0

    def load(
        self,
        request: Request,
        seconds: float,
        connections: int = 32,
        threads: int = 1,
        script: str | None = None,
        timeout: float = 10.0,
        via: str | None = None,
    ) -> Measurement:
        """Load HAProxy with *request* from the client namespace for *seconds* (wrk), and
        measure what each part used meanwhile.

        :param script: a wrk Lua script to use instead of the one made for *request*.
        :param via: load this host directly instead of HAProxy.
        :raises RuntimeError: when wrk fails or overruns its time by 30 s.
        """
        assert self.network is not None
        lua = self.dir / f"wrk-{time.monotonic_ns()}.lua"
        lua.write_text(script if script is not None else wrk.lua_script(request))
        out = lua.with_suffix(".out")
        command = [
            shutil.which("wrk") or "wrk", f"-t{threads}", f"-c{connections}",
            f"-d{max(1, round(seconds))}s", "--latency", "--timeout", f"{timeout:g}s",
            "-s", str(lua), (self.host(via).url if via else self.url) + request.target,
        ]  # fmt: skip
        argv = self.groups["client"].wrap(self.network.exec_command("client", command))
        before = self.snapshot()
        with open(out, "wb") as sink:
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        status, rusage = _wait4(proc, seconds + 30)
        after = self.snapshot()
        text = out.read_text(errors="replace")
        if status != 0:
            raise RuntimeError(f"wrk failed ({status}):\n{text}")
        return self._measure(wrk.parse(text), before, after, rusage, text, connections)

    def run_client(
        self, command: list[str], timeout: float, env: dict[str, str] | None = None
    ) -> tuple[str, resource.struct_rusage | None]:
        """Run *command* in the client namespace and cgroup (as :meth:`load` runs wrk), from
        the repository with it importable, and wait for it; it is stopped with the rig if the
        driver fails meanwhile.

        :param timeout: seconds; past them its process group is killed.
        :returns: its output (stdout and stderr) and resource use.
        :raises RuntimeError: when it exits with a status other than 0, or overruns.
        """
        assert self.network is not None
        argv = self.groups["client"].wrap(self.network.exec_command("client", command))
        log = self.dir / f"client-{time.monotonic_ns()}.log"
        proc = launch(argv, log, env)
        self.processes["client"] = proc
        try:
            status, rusage = _wait4(proc, timeout)
        finally:
            if self.processes.pop("client", None) is not None and proc.returncode is None:
                stop_group(proc)
        text = log.read_text(errors="replace")
        if status != 0:
            raise RuntimeError(f"{command[:3]} failed ({status}):\n{text[-3000:]}")
        return text, rusage

    def _measure(
        self,
        load: wrk.Load,
        before: Usage,
        after: Usage,
        rusage: resource.struct_rusage | None,
        text: str,
        connections: int,
    ) -> Measurement:
        wall = after.at - before.at
        cpus = self.config.cpus
        host_cores = {n: (after.hosts_cpu[n] - before.hosts_cpu[n]) / wall for n in after.hosts_cpu}
        throttled = {n: after.throttling[n] - before.throttling[n] for n in after.throttling}
        wrk_cpu = rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0
        served = {n: after.served.get(n, 0) - before.served.get(n, 0) for n in after.served}
        return Measurement(
            load=load,
            seconds=wall,
            hosts_enabled=len(host_cores),
            connections=connections,
            haproxy_cores=(after.haproxy_cpu - before.haproxy_cpu) / wall,
            redis_cores=(after.redis_cpu - before.redis_cpu) / wall,
            wrk_cores=wrk_cpu / wall,
            host_cores=host_cores,
            host_budget_used={n: c / cpus for n, c in host_cores.items()} if cpus else {},
            host_throttled={
                n: (x.throttled / x.periods if x.periods else 0.0) for n, x in throttled.items()
            },
            host_throttled_periods={n: (x.throttled, x.periods) for n, x in throttled.items()},
            served=served,
            machine_busy_cores=(after.machine_busy - before.machine_busy)
            / max(1e-9, after.machine_total - before.machine_total)
            * (os.cpu_count() or 1),
            load_average=os.getloadavg(),
            wrk_output=text,
        )

    def signal_host(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Send *sig* to *name*'s server (its master process): for drain and restart tests."""
        proc = self.host(name).process
        if proc is None:
            raise RuntimeError(f"{name} runs no server")
        os.kill(proc.pid, sig)

    def restart_host(self, name: str) -> None:
        """Start *name*'s server again (after it exited) and wait until it answers."""
        h = self.host(name)
        if h.process is not None and h.process.poll() is None:
            raise RuntimeError(f"{name} is still running")
        self._start_host(h)
        self._wait_host(h)

    # -- tearing down ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything and remove every trace of the run; safe to call twice."""
        if not self.run:
            return
        with _shielded():
            errors = []
            for role in ["lb", *(h.name for h in self.hosts), "infra", "client"]:
                proc = self.processes.pop(role, None)
                if proc is not None:
                    try:
                        stop_group(proc)
                    except Exception as exc:  # keep tearing down
                        errors.append(f"stop {role}: {exc}")
            if self.config.keep_logs is not None:
                target = self.config.keep_logs / self.run
                with contextlib.suppress(OSError):
                    shutil.copytree(self.dir, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("*.sock", "*.rdb"))  # fmt: skip
            errors += netns.remove_network(self.run)
            hierarchy = self.hierarchy or _detect_or_none()
            if hierarchy is not None:
                errors += hierarchy.remove_run(self.run)
            netns.remove_run_dir(self.run)
            self.run = ""
            if errors:
                raise RuntimeError("rig teardown left: " + "; ".join(errors))


def _detect_or_none() -> Hierarchy | None:
    try:
        return Hierarchy.detect()
    except RuntimeError:
        return None


def _wait4(
    proc: subprocess.Popen[bytes], timeout: float
) -> tuple[int, resource.struct_rusage | None]:
    """Wait for *proc* (killing its group after *timeout* s); its exit code and resource use."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, rusage
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"ran past its time: {proc.args}")
        time.sleep(0.02)


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (teardown is not cut in half)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        saved[sig] = signal.signal(sig, lambda n, _f: caught.append(n))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if caught:
            os.kill(os.getpid(), caught[0])


def http_get(
    address: str,
    port: int,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One request over a fresh connection."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, [(k.lower(), v) for k, v in response.getheaders()], data)
    finally:
        conn.close()


def leftover_runs() -> list[str]:
    """Runs that left something behind: namespaces, links, cgroups or a run directory."""
    runs: set[str] = set()
    names = [*netns.namespaces(), *netns.links()]
    names += [p.name.removeprefix("carboy-rig-") for p in netns.TMP_ROOT.glob("carboy-rig-cbr*")]
    hierarchy = _detect_or_none()
    if hierarchy is not None:
        names += hierarchy.leftovers(netns.PREFIX)
    for name in names:
        match = re.match(rf"^({netns.PREFIX}\d+)(?:$|[-v])", name)
        if match:
            runs.add(match.group(1))
    return sorted(runs, key=lambda r: int(r[len(netns.PREFIX) :]))


def cleanup(force: bool = False) -> dict[str, str]:
    """Remove what crashed runs left (processes, namespaces, veths, bridges, cgroups, run
    directories); a run whose owner process still runs is left alone unless *force*.
    Returns what happened to each run found."""
    report = {}
    for run in leftover_runs():
        if netns.owner_alive(run) and not force:
            report[run] = "in use (its owner is running); left alone"
            continue
        errors = netns.remove_network(run)
        hierarchy = _detect_or_none()
        if hierarchy is not None:
            errors += hierarchy.remove_run(run)
        netns.remove_run_dir(run)
        report[run] = "removed" if not errors else "left: " + "; ".join(errors)
    return report
