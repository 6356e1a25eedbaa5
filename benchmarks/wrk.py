"""Running wrk, the HTTP load generator, and reading what it prints.

wrk runs pinned to its own core (``taskset -c <cpu>``), with one thread and a fixed number of
keep-alive connections. Each request's method, headers and body come from a small Lua script
written for it; the same script can end wrk after a given number of responses (used to
measure memory after an exact number of requests).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .scenarios import Request

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class Load:
    """What one wrk run measured."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    #: Responses with a status outside 2xx/3xx.
    non_2xx: int
    #: connect + read + write + timeout errors.
    socket_errors: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def available() -> bool:
    return shutil.which("wrk") is not None and shutil.which("taskset") is not None


def _lua_string(value: str) -> str:
    if not value.isascii():
        raise ValueError(f"wrk scripts here carry ASCII only: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def lua_script(request: Request, exit_after: int | None = None) -> str:
    """A wrk script sending *request* (its target is in wrk's URL) and, with *exit_after*,
    ending wrk once that many responses have arrived (``wrk.thread:stop()`` would only stop
    sending: wrk would still wait out its duration)."""
    lines = [f"wrk.method = {_lua_string(request.method)}"]
    if request.body:
        lines.append(f"wrk.body = {_lua_string(request.body.decode('ascii'))}")
    for name, value in request.headers:
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    if exit_after is not None:
        lines += [
            "local responses = 0",
            "function response(status, headers, body)",
            "  responses = responses + 1",
            f"  if responses >= {int(exit_after)} then os.exit(0) end",
            "end",
        ]
    return "\n".join(lines) + "\n"


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"unreadable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> Load:
    """Read a ``wrk --latency`` report."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {pattern!r} in wrk output:\n{output}")
        return match

    total = find(r"^\s*(\d+) requests in ([\d.]+\w+),")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(
        requests=int(total.group(1)),
        seconds=_milliseconds(total.group(2)) / 1e3,
        rps=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_milliseconds(find(r"^\s+50%\s+(\S+)").group(1)),
        p99_ms=_milliseconds(find(r"^\s+99%\s+(\S+)").group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, errors.groups())) if errors else 0,
    )


def _wrk(
    url: str, request: Request, seconds: float, connections: int, cpu: int, exit_after: int | None
) -> str:
    return _wrk_script(
        url + request.target, lua_script(request, exit_after), seconds, connections, cpu
    )


def _wrk_script(url: str, script: str, seconds: float, connections: int, cpu: int) -> str:
    with tempfile.TemporaryDirectory(prefix="carboy-wrk-") as tmp:
        path = Path(tmp) / "request.lua"
        path.write_text(script)
        cmd = [
            "taskset", "-c", str(cpu),
            "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "10s", "-s", str(path), url,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc.stdout


def run(url: str, request: Request, seconds: float, connections: int, cpu: int) -> Load:
    """Load ``url + request.target`` for *seconds* and report what wrk measured."""
    return parse(_wrk(url, request, seconds, connections, cpu, None))


def send(url: str, request: Request, count: int, connections: int, cpu: int) -> None:
    """Send *request* until *count* responses have arrived (within ten minutes).

    :raises RuntimeError: when wrk ran out of time before that.
    """
    output = _wrk(url, request, 600, connections, cpu, count)
    if " requests in " in output:  # wrk printed its report: it ran its full duration
        raise RuntimeError(f"wrk did not reach {count} responses:\n{output}")


def run_script_output(url: str, script: str, seconds: float, connections: int, cpu: int) -> str:
    """:func:`run_script`'s wrk output as text, with anything the script wrote (for
    :func:`parse`)."""
    return _wrk_script(url, script, seconds, connections, cpu)


def run_script(url: str, script: str, seconds: float, connections: int, cpu: int) -> Load:
    """Load *url* for *seconds* with the wrk Lua *script* (which may build each request
    itself, in a ``request()`` function) and report what wrk measured."""
    return parse(_wrk_script(url, script, seconds, connections, cpu))
