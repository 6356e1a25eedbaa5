"""The rig's network: one bridge and a network namespace per host, each on a veth pair.

Every name a run makes starts with :data:`PREFIX` and its run number ``n`` (``cbr<n>``), and its
addresses are ``10.213.<n>.0/24``, a range used only by these namespaces; a run takes the first
number no bridge, namespace or run directory uses yet (under a lock, so two runs started at
once never share one). Interface names stay within Linux's 15 characters:

=====================  ========================  ================================
what                   name                      address
=====================  ========================  ================================
bridge (root netns)    ``cbr<n>``                10.213.<n>.1/24
namespace              ``cbr<n>-<role>``         (``lb``, ``infra``, ``client``, ``h1``...)
veth, bridge side      ``cbr<n>v<role>``
veth, namespace side   ``eth0``                  10.213.<n>.<ip> (see :data:`ADDRESSES`)
=====================  ========================  ================================

The root namespace keeps an address on the bridge, so the driver (this process) reaches every
namespace directly, for its checks; the load itself goes from the client namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Every bridge, veth, namespace, cgroup and temp directory of a rig starts with this.
PREFIX = "cbr"
#: The private range these namespaces use; run n gets 10.213.n.0/24.
NETWORK = ipaddress.ip_network("10.213.0.0/16")
#: Where runs keep their files (configs, logs, sockets); one directory per run.
TMP_ROOT = Path(tempfile.gettempdir())
LOCK = TMP_ROOT / "carboy-rig.lock"
#: The last octet of each fixed role; host i is 10 + i.
ADDRESSES = {"bridge": 1, "lb": 2, "infra": 3, "client": 4}


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip args...``; raises :class:`RuntimeError` with its error text when it fails and
    *check*."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def ip_batch(commands: list[str], namespace: str | None = None) -> None:
    """Run many ``ip`` commands in one process (``ip -batch -``), in *namespace* if given,
    failing on the first error."""
    if not commands:
        return
    proc = subprocess.run(
        ["ip", *(["-n", namespace] if namespace else []), "-batch", "-"],
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ip -batch failed: {proc.stderr.strip()}\n" + "\n".join(commands))


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def links() -> list[str]:
    names = []
    for line in ip("-o", "link", "show").stdout.splitlines():
        # "12: cbr7vh1@if2: <...>" -> "cbr7vh1"
        names.append(line.split(":", 2)[1].strip().split("@")[0])
    return names


def run_dir(run: str) -> Path:
    return TMP_ROOT / f"carboy-rig-{run}"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def runs_in_use() -> set[int]:
    """Run numbers some bridge, namespace, link or run directory already holds."""
    used: set[int] = set()
    names = [*namespaces(), *links()]
    names += [p.name.removeprefix("carboy-rig-") for p in TMP_ROOT.glob(f"carboy-rig-{PREFIX}*")]
    for name in names:
        if name.startswith(PREFIX):
            digits = ""
            for ch in name[len(PREFIX) :]:
                if not ch.isdigit():
                    break
                digits += ch
            if digits:
                used.add(int(digits))
    return used


def allocate_run() -> tuple[str, int, Path]:
    """A free run: its name (``cbr<n>``), number and a fresh directory that marks it taken
    (with this process's pid in ``owner``, read by :func:`owner_alive`).

    :raises RuntimeError: when all 254 numbers are taken (run ``python -m benchmarks.rig
        cleanup``).
    """
    with _locked():
        used = runs_in_use()
        for number in range(1, 255):
            if number not in used:
                break
        else:
            raise RuntimeError(
                "all rig run numbers are in use; run `python -m benchmarks.rig cleanup`"
            )
        run = f"{PREFIX}{number}"
        directory = run_dir(run)
        directory.mkdir(mode=0o755)
        (directory / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return run, number, directory


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        return text[text.rindex(")") + 2 :].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_alive(run: str) -> bool:
    """Whether the process that made *run* is still running (its pid and start time match)."""
    try:
        pid_text, start = (run_dir(run) / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid_text)) == start


class Network:
    """A run's bridge and namespaces. :meth:`add` makes a namespace with its veth and address;
    :meth:`remove` takes everything down (also what a half-made :meth:`add` left)."""

    def __init__(self, run: str, number: int) -> None:
        self.run = run
        self.number = number
        self.bridge = run
        self.subnet = ipaddress.ip_network(f"10.213.{number}.0/24")
        self.namespaces: dict[str, str] = {}

    def address(self, role: str) -> str:
        """The address of *role* (``lb``, ``infra``, ``client``, ``bridge`` or ``h<i>``)."""
        last = 10 + int(role[1:]) if role.startswith("h") else ADDRESSES[role]
        return str(self.subnet.network_address + last)

    def namespace(self, role: str) -> str:
        return f"{self.run}-{role}"

    def create(self) -> None:
        ip_batch([
            f"link add {self.bridge} type bridge",
            f"addr add {self.address('bridge')}/24 dev {self.bridge}",
            f"link set {self.bridge} up",
        ])  # fmt: skip

    def add(self, role: str) -> str:
        """Make *role*'s namespace on the bridge; returns its name."""
        ns = self.namespace(role)
        veth = f"{self.run}v{role}"
        if len(veth) > 15:
            raise ValueError(f"interface name {veth!r} is longer than 15 characters")
        ip("netns", "add", ns)
        self.namespaces[role] = ns
        ip_batch([
            f"link add {veth} type veth peer name eth0 netns {ns}",
            f"link set {veth} master {self.bridge} up",
        ])  # fmt: skip
        ip_batch([
            f"addr add {self.address(role)}/24 dev eth0",
            "link set eth0 up",
            "link set lo up",
        ], namespace=ns)  # fmt: skip
        # Clients that open a connection per request (wrk against gunicorn's sync worker, and
        # HAProxy's connections to it) leave each port in TIME_WAIT for 60 s: with the default
        # 28,000 ports a few thousand requests a second run out within seconds (measured: 3,100
        # req/s fell to 530). Both settings are per namespace.
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
             "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        return ns

    def exec_command(self, role: str, command: list[str]) -> list[str]:
        """*command* run in *role*'s namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace(role), *command]

    def remove(self) -> list[str]:
        return remove_network(self.run)


def remove_network(run: str) -> list[str]:
    """Kill every process in *run*'s namespaces, delete them, their veths and the bridge;
    returns what could not be removed."""
    failed = []
    mine = [ns for ns in namespaces() if ns == run or ns.startswith(run + "-")]
    for ns in mine:
        pids = ip("netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        if ip("netns", "delete", ns, check=False).returncode != 0:
            failed.append(f"netns {ns}")
    for link in links():
        if link != run and not link.startswith(run + "v"):
            continue
        deleted = ip("link", "delete", link, check=False).returncode == 0
        if not deleted and link in links():  # a veth goes with its namespace's end
            failed.append(f"link {link}")
    return failed


def remove_run_dir(run: str) -> None:
    shutil.rmtree(run_dir(run), ignore_errors=True)
