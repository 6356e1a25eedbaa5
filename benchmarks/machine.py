"""What the numbers were measured on: CPU, OS, Python, package versions, carboy's commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import typing as t
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = (
    "carboy", "flask", "werkzeug", "jinja2", "itsdangerous", "quart", "falcon", "bottle",
    "starlette", "python-multipart", "granian", "gunicorn", "uvicorn", "h11", "httptools",
    "uvloop", "matplotlib", "psutil",
)  # fmt: skip


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run(*cmd: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout or proc.stderr).strip()


def _carboy_commit() -> str:
    commit = _run("git", "rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    dirty = _run("git", "status", "--porcelain", "--", "src/carboy")
    return f"{commit} + uncommitted changes in src/carboy" if dirty else commit


def describe() -> dict[str, t.Any]:
    wrk = _run("wrk", "--version").splitlines()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "python_executable": sys.executable,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "wrk": wrk[0] if wrk else "not installed",
        "carboy_commit": _carboy_commit(),
        "versions": {name: _version(name) for name in DISTRIBUTIONS},
    }
