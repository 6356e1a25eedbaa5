"""Smoke test: the in-process ASGI benchmark runs to completion and reports every scenario."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "asgi.py"
HEADER = (
    "| scenario | carboy µs | Starlette µs | Quart µs | carboy/Starlette | carboy/Quart "
    "| carboy calls | Starlette calls | Quart calls |"
)
SCENARIOS = [
    "hello: GET / (text)",
    "json: GET /users/<int>",
    "404 among 100 routes",
    "json echo: POST /echo",
    "sync hello: def view (thread pool)",
]
NUMBER = r"\s*\d+(?:\.\d+)?\*?\s*"


def test_asgi_benchmark_quick_run_prints_a_row_per_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert HEADER in lines, proc.stdout
    for name in SCENARIOS:
        row = re.compile(r"^\| " + re.escape(name) + r" \|" + (NUMBER + r"\|") * 8 + r"$")
        assert any(row.match(line) for line in lines), f"no row for {name!r} in:\n{proc.stdout}"
    assert any(line.startswith("Targets (async hello): carboy/Starlette ") for line in lines)
