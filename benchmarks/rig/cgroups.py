"""CPU budgets for the rig's hosts, through the cpu cgroup (v1 or v2).

Each run owns one directory per hierarchy, named after the run (``cbr<n>``), holding one child
group per component (``h1``, ``h2``..., ``lb``, ``infra``, ``client``). A host's group gets a
quota (``cpu.cfs_quota_us`` over ``cpu.cfs_period_us`` on v1, ``cpu.max`` on v2); the others
have none and are there so every component's CPU time is read the same way.

* **v1** (this machine): the ``cpu`` hierarchy (quota and throttling counters) and the
  ``cpuacct`` hierarchy (``cpuacct.usage``, ns) are mounted apart, so a group is made in both and
  a process joins both.
* **v2**: one hierarchy; the ``cpu`` controller is enabled in the run's directory
  (``cgroup.subtree_control``) and ``cpu.stat`` has both the usage and the throttling counters.

A process is put in its group before it execs the server (see :meth:`CpuGroup.wrap`), so a
server's master and every worker it forks are in the group from the start.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

#: Where the hierarchies are mounted.
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Hierarchy:
    """Where a run's groups live: cgroup v1 (``cpu`` and ``cpuacct`` directories) or v2."""

    version: int
    #: v1: the ``cpu`` hierarchy's mount; v2: the unified mount.
    cpu: Path
    #: v1: the ``cpuacct`` hierarchy's mount (``None`` when it is not mounted); v2: unused.
    cpuacct: Path | None = None

    @classmethod
    def detect(cls, root: Path = CGROUP_ROOT) -> Hierarchy:
        """The hierarchy under *root*: v1 when a ``cpu`` hierarchy with CFS quotas is mounted
        at ``root/cpu``, else v2 when ``root`` is a unified mount offering the ``cpu``
        controller.

        :raises RuntimeError: when neither is usable.
        """
        v1 = root / "cpu"
        if (v1 / "cpu.cfs_quota_us").exists():
            acct = root / "cpuacct"
            if not (acct / "cpuacct.usage").exists():
                acct = v1 if (v1 / "cpuacct.usage").exists() else None  # type: ignore[assignment]
            return cls(1, v1, acct)
        controllers = root / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            return cls(2, root)
        raise RuntimeError(
            f"no cpu cgroup under {root}: neither a v1 'cpu' hierarchy with cpu.cfs_quota_us "
            "nor a cgroup v2 mount offering the cpu controller"
        )

    def run_dirs(self, run: str) -> list[Path]:
        """The run's top directories (one per hierarchy)."""
        dirs = [self.cpu / run]
        if self.version == 1 and self.cpuacct is not None and self.cpuacct != self.cpu:
            dirs.append(self.cpuacct / run)
        return dirs

    def create_run(self, run: str) -> None:
        for path in self.run_dirs(run):
            path.mkdir(exist_ok=True)
        if self.version == 2:
            # Child groups get the cpu controller only if each ancestor enables it.
            _enable_cpu(self.cpu / "cgroup.subtree_control")
            _enable_cpu(self.cpu / run / "cgroup.subtree_control")

    def set_shares(self, run: str, shares: int) -> None:
        """The run's weight against its siblings (the machine's other work): ``cpu.shares``
        on v1 (default 1024), ``cpu.weight`` on v2 (default 100; *shares* is scaled to it)."""
        if self.version == 1:
            (self.cpu / run / "cpu.shares").write_text(str(shares))
        else:
            weight = min(10000, max(1, round(shares * 100 / 1024)))
            (self.cpu / run / "cpu.weight").write_text(str(weight))

    def group(self, run: str, name: str) -> CpuGroup:
        return CpuGroup(self, run, name)

    def leftovers(self, prefix: str) -> list[str]:
        """Names of run directories starting with *prefix*, in any hierarchy."""
        names: set[str] = set()
        for top in {self.cpu, self.cpuacct} - {None}:
            assert top is not None
            if top.is_dir():
                names.update(
                    p.name for p in top.iterdir() if p.is_dir() and p.name.startswith(prefix)
                )
        return sorted(names)

    def remove_run(self, run: str) -> list[str]:
        """Kill what is left in the run's groups and remove them; returns what it could not
        remove (empty when all went)."""
        failed = []
        for top in self.run_dirs(run):
            if not top.is_dir():
                continue
            for child in sorted((p for p in top.iterdir() if p.is_dir()), reverse=True):
                if not _remove_group(child):
                    failed.append(str(child))
            if not _remove_group(top):
                failed.append(str(top))
        return failed


def _enable_cpu(control: Path) -> None:
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")


def _pids(group: Path) -> list[int]:
    try:
        return [int(line) for line in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _remove_group(group: Path, timeout: float = 5.0) -> bool:
    """SIGKILL every process in *group*, wait until it is empty, remove it."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _pids(group)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            group.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            # EBUSY while killed processes are still exiting.
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


class CpuGroup:
    """One component's group in a run: its budget, its processes, its CPU time and throttling."""

    def __init__(self, hierarchy: Hierarchy, run: str, name: str) -> None:
        self.hierarchy = hierarchy
        self.name = name
        self.dirs = [top / name for top in hierarchy.run_dirs(run)]
        #: The directory holding the cpu controller's files.
        self.path = self.dirs[0]

    def create(self, cpus: float | None = None, period_us: int = 100_000) -> CpuGroup:
        """Make the group, with a budget of *cpus* CPUs (0.2: 20 ms in each 100 ms period) or,
        for ``None``, no quota."""
        for path in self.dirs:
            path.mkdir(exist_ok=True)
        if cpus is not None:
            self.set_budget(cpus, period_us)
        return self

    def set_budget(self, cpus: float | None, period_us: int = 100_000) -> None:
        """Set (or with ``None`` lift) the quota.

        :raises ValueError: for a budget under 1 ms per period (the kernel's minimum).
        """
        quota = -1 if cpus is None else round(cpus * period_us)
        if quota != -1 and quota < 1000:
            raise ValueError(f"a budget of {cpus} CPU gives a quota of {quota} us (< 1000 us)")
        if self.hierarchy.version == 1:
            (self.path / "cpu.cfs_period_us").write_text(str(period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.path / "cpu.max").write_text(f"{'max' if quota == -1 else quota} {period_us}")

    def set_burst(self, burst_us: int) -> bool:
        """Let the group carry up to *burst_us* of unused quota into later periods
        (``cpu.cfs_burst_us`` on v1, ``cpu.max.burst`` on v2; Linux 5.14+). The budget over
        time stays the same; a host woken late in a period loses less of it. Returns whether
        the kernel has the setting."""
        name = "cpu.cfs_burst_us" if self.hierarchy.version == 1 else "cpu.max.burst"
        path = self.path / name
        if not path.exists():
            return False
        path.write_text(str(burst_us))
        return True

    def budget(self) -> float | None:
        """The quota in CPUs, as the kernel holds it (``None``: unlimited)."""
        if self.hierarchy.version == 1:
            quota = int((self.path / "cpu.cfs_quota_us").read_text())
            period = int((self.path / "cpu.cfs_period_us").read_text())
            return None if quota < 0 else quota / period
        quota_text, period_text = (self.path / "cpu.max").read_text().split()
        return None if quota_text == "max" else int(quota_text) / int(period_text)

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process joins (one per hierarchy)."""
        return [path / "cgroup.procs" for path in self.dirs]

    def wrap(self, command: list[str]) -> list[str]:
        """*command*, run by a shell that first puts itself in this group, then execs it (the
        pid stays the same, and whatever it forks is in the group too)."""
        joins = " && ".join(f'echo $$ > "${i + 1}"' for i in range(len(self.procs_files)))
        n = len(self.procs_files)
        return ["sh", "-c", f'{joins} && shift {n} && exec "$@"', "rig-cgroup",
                *map(str, self.procs_files), *command]  # fmt: skip

    def pids(self) -> list[int]:
        return _pids(self.path)

    def usage_seconds(self) -> float:
        """CPU time used by the group's processes (and those that exited) so far, in seconds."""
        if self.hierarchy.version == 1:
            acct = self.dirs[-1] if self.hierarchy.cpuacct is not None else None
            if acct is not None and (acct / "cpuacct.usage").exists():
                return int((acct / "cpuacct.usage").read_text()) / 1e9
            return sum(process_cpu_seconds(pid) for pid in self.pids())
        return self.stat()["usage_usec"] / 1e6

    def stat(self) -> dict[str, int]:
        """``cpu.stat`` as numbers: ``nr_periods``, ``nr_throttled`` and ``throttled_time``
        (ns, v1) or ``throttled_usec`` (v2), and on v2 ``usage_usec``."""
        out = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
        return out

    def throttling(self) -> Throttling:
        stat = self.stat()
        if "throttled_usec" in stat:
            throttled = stat["throttled_usec"] / 1e6
        else:
            throttled = stat.get("throttled_time", 0) / 1e9
        return Throttling(stat.get("nr_periods", 0), stat.get("nr_throttled", 0), throttled)


@dataclass(frozen=True)
class Throttling:
    """The CFS bandwidth counters of a group (cumulative)."""

    periods: int
    throttled: int
    #: Seconds the group's threads spent throttled.
    throttled_seconds: float

    def __sub__(self, other: Throttling) -> Throttling:
        return Throttling(
            self.periods - other.periods,
            self.throttled - other.throttled,
            self.throttled_seconds - other.throttled_seconds,
        )


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process *pid* (all its threads), from ``/proc/<pid>/stat``;
    0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK
