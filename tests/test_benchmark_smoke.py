"""Smoke test: the in-process benchmark runs to completion and reports every scenario."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "inproc.py"
SCENARIOS = [
    "hello: GET / (text)",
    "json: GET /users/<int>",
    "404 among 100 routes",
    "form: POST urlencoded echo",
]
NUMBER = r"\s*\d+(?:\.\d+)?\s*"


def test_inproc_benchmark_quick_run_prints_a_row_per_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert (
        "| scenario | carboy µs | Flask µs | carboy/Flask ratio | carboy calls | Flask calls |"
        in lines
    )
    for name in SCENARIOS:
        row = re.compile(r"^\| " + re.escape(name) + r" \|" + (NUMBER + r"\|") * 5 + r"$")
        assert any(row.match(line) for line in lines), f"no row for {name!r} in:\n{proc.stdout}"
