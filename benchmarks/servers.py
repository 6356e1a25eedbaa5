"""Starting and stopping the servers the end-to-end measurements load.

Each server runs one worker process, pinned to one core with ``taskset`` (its children
inherit the pinning), in its own process group on a free 127.0.0.1 port; :class:`Server`
stops the whole group on exit, SIGTERM first, then SIGKILL.
"""

from __future__ import annotations

import compileall
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil

from .apps import Framework
from .scenarios import Answer, Request

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
#: What the workers import from source rather than from an installed wheel.
SOURCE_TREES = (ROOT / "src" / "carboy", ROOT / "benchmarks")


def ensure_bytecode() -> None:
    """Write the bytecode caches of :data:`SOURCE_TREES`, as pip does when it installs a wheel.

    The other frameworks are installed wheels whose ``.pyc`` files pip wrote. carboy, installed
    in editable mode, and the benchmark apps are not; with ``PYTHONDONTWRITEBYTECODE`` set (or
    a read-only tree) each worker would compile them from source at start. Compiling leaves
    about 2 MiB of freed heap that stays in the worker's RSS, which measures the install mode
    rather than the framework. Files whose cache is current are skipped.
    """
    for tree in SOURCE_TREES:
        if not compileall.compile_dir(tree, quiet=1):
            raise RuntimeError(f"could not byte-compile {tree}")


def script(name: str) -> str:
    """The console script *name* of this interpreter's environment."""
    path = Path(sys.executable).with_name(name)
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable}")
    return str(path)


def _granian(interface: str, blocking_threads: int = 1) -> Callable[[str, int], list[str]]:
    def command(target: str, port: int) -> list[str]:
        # One blocking (Python) thread by default: with one core, more threads only contend
        # for the GIL (granian's default allows hundreds, and warns about it). Views that wait
        # on I/O (benchmarks/shared_state.py) are also measured with more.
        return [
            script("granian"), "--interface", interface, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--runtime-threads", "1",
            "--blocking-threads", str(blocking_threads), "--http", "1", "--no-ws",
            "--log-level", "warning", target,
        ]  # fmt: skip

    return command


def granian_wsgi(blocking_threads: int) -> ServerKind:
    """granian WSGI with *blocking_threads* Python threads in its one worker."""
    if blocking_threads == 1:
        return BY_KEY["granian-wsgi"]
    return ServerKind(
        "granian-wsgi",
        f"granian (WSGI, {blocking_threads} threads)",
        "wsgi",
        _granian("wsgi", blocking_threads),
    )


def _gunicorn(target: str, port: int) -> list[str]:
    return [
        script("gunicorn"), "--worker-class", "sync", "--workers", "1",
        "--bind", f"127.0.0.1:{port}", "--backlog", "2048", "--log-level", "warning", target,
    ]  # fmt: skip


def _uvicorn(target: str, port: int) -> list[str]:
    return [
        script("uvicorn"), "--interface", "asgi3", "--host", "127.0.0.1", "--port", str(port),
        "--lifespan", "on", "--no-access-log", "--log-level", "warning", target,
    ]  # fmt: skip


@dataclass(frozen=True)
class ServerKind:
    key: str
    label: str
    #: "wsgi" or "asgi": which apps it serves.
    interface: str
    command: Callable[[str, int], list[str]]


SERVERS: tuple[ServerKind, ...] = (
    ServerKind("granian-wsgi", "granian (WSGI)", "wsgi", _granian("wsgi")),
    ServerKind("gunicorn", "gunicorn sync", "wsgi", _gunicorn),
    ServerKind("granian-asgi", "granian (ASGI)", "asgi", _granian("asgi")),
    ServerKind("uvicorn", "uvicorn", "asgi", _uvicorn),
)
BY_KEY = {server.key: server for server in SERVERS}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(port: int, request: Request, timeout: float = 10.0) -> Answer:
    """Send *request* over a fresh connection and return the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            request.method, request.target, body=request.body or None, headers=dict(request.headers)
        )
        response = conn.getresponse()
        body = response.read()
        headers = [(name.lower(), value) for name, value in response.getheaders()]
        return Answer(response.status, headers, body)
    finally:
        conn.close()


def launch(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start *command* in the repository, in its own process group (stopped by
    :func:`stop_group`), with ``ROOT`` importable, the extra *env* variables, and its output
    in the file *log*."""
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(env or {})
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process group that *proc* leads (see :func:`launch`): SIGTERM, then SIGKILL."""
    group = proc.pid  # start_new_session: the group id is the leader's pid
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(group, 0)  # anyone left in the group?
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            continue
        break
    proc.wait(timeout=STOP_TIMEOUT)


def workers_of(pid: int) -> list[psutil.Process]:
    """The worker processes of the server *pid*: its descendants that are not
    multiprocessing helpers (granian's and gunicorn's workers are its children)."""
    return [
        child
        for child in psutil.Process(pid).children(recursive=True)
        if "multiprocessing" not in " ".join(child.cmdline())
    ]


def peak_rss(process: psutil.Process) -> int:
    """The most resident memory *process* has held (Linux ``VmHWM``), in bytes."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(process.memory_info().rss)


class Server:
    """*framework*'s app served by a *kind* server pinned to core *cpu*; a context manager
    that starts it, waits until it answers, and stops its whole process group on exit.

    *wrapper* is put before the server's command (``cachesim.py`` runs it under valgrind),
    and *startup_timeout* (seconds) is how long it may take to answer its first request.
    """

    def __init__(
        self,
        kind: ServerKind,
        framework: Framework,
        cpu: int,
        log: Path,
        wrapper: tuple[str, ...] = (),
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if kind.interface != framework.interface:
            raise ValueError(f"{kind.label} does not serve {framework.interface} apps")
        self.kind = kind
        self.framework = framework
        self.port = free_port()
        self.command = [*wrapper, *kind.command(framework.target, self.port)]
        self.cpu = cpu
        self.startup_timeout = startup_timeout
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self.worker: psutil.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        ensure_bytecode()
        self._proc = launch(["taskset", "-c", str(self.cpu), *self.command], self.log)
        try:
            self._wait_until_serving()
            self.worker = self._find_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_until_serving(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.describe()} exited at startup:\n{self.log_tail()}")
            try:
                ask(self.port, Request("GET", "/"), timeout=2.0)
                return
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.describe()} did not start:\n{self.log_tail()}")
                time.sleep(0.1)

    def _find_worker(self) -> psutil.Process:
        """The process that runs the app: the server's only child that is not a
        multiprocessing helper, or the server process itself when it has none."""
        assert self._proc is not None
        workers = workers_of(self._proc.pid)
        if not workers:
            return psutil.Process(self._proc.pid)
        if len(workers) > 1:
            raise RuntimeError(f"{self.describe()} runs {len(workers)} workers, expected one")
        return workers[0]

    def rss(self) -> int:
        """The worker's resident memory now, in bytes."""
        assert self.worker is not None
        return int(self.worker.memory_info().rss)

    def peak_rss(self) -> int:
        assert self.worker is not None
        return peak_rss(self.worker)

    def describe(self) -> str:
        return f"{self.kind.label} serving {self.framework.key}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        stop_group(proc)
