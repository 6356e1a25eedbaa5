"""Start real servers as subprocesses for the tests that drive carboy over the network.

Each server gets a free 127.0.0.1 port, its own log file and its own process group (so a
server's workers can be cleaned up with it); :class:`Server` stops it on exit, SIGTERM first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The apps the server tests serve; importable by module name in the servers' environment.
APPS = ROOT / "tests" / "served_apps"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> list[str]:
    """The command that runs the console script *name* of this interpreter's environment."""
    script = Path(sys.executable).with_name(name)
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", name]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS), str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CARBOY_APP", None)
    env.update(extra or {})
    return env


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll *predicate* (a callable) until it returns true, failing after *timeout* seconds.

    The timeout only bounds a hang; no test asserts how long anything took.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _exited(pid: int) -> bool:
    """Whether child *pid* has exited, without reaping it."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    return os.waitid(os.P_PID, pid, flags) is not None


class Server:
    """A server subprocess serving on 127.0.0.1:*port*; a context manager that stops it.

    :param cmd: the command line, with the port already in it.
    :param port: the port the command binds.
    :param log: the file that receives the server's stdout and stderr.
    :param env: extra environment variables for the server.
    """

    def __init__(
        self, cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = cmd[0]
        self.cmd = cmd
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self._env = server_env(env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_up(self, probe: str = "/sync") -> None:
        """Wait until an HTTP request to *probe* gets any answer."""
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if _exited(self.proc.pid):
                pytest.fail(f"server exited with {self.stop()}:\n{self.output()}")
            try:
                httpx.get(self.base_url + probe, timeout=2.0)
            except httpx.TransportError:
                time.sleep(0.1)
            else:
                return
        pytest.fail(f"server did not answer within {STARTUP_TIMEOUT}s:\n{self.output()}")

    def wait_for_exit(self, timeout: float = STARTUP_TIMEOUT) -> int:
        """Wait for the server to exit by itself; return its exit status."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not _exited(self.proc.pid):
            if time.monotonic() > deadline:
                pytest.fail(f"server did not exit within {timeout}s:\n{self.output()}")
            time.sleep(0.05)
        return self.stop()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send *sig* to the server and wait for it to exit; return its exit status.

        Whatever is left of its process group afterwards (or everything, if it does not exit
        within :data:`STOP_TIMEOUT`) is killed. The group is signalled while the server is
        still unreaped, so its id cannot belong to anything else yet.
        """
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            if not _exited(proc.pid):
                proc.send_signal(sig)
                deadline = time.monotonic() + STOP_TIMEOUT
                while not _exited(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return proc.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Server:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
