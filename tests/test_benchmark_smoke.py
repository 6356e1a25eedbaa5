"""Smoke tests: each in-process benchmark runs to completion and reports every scenario.

No timing is asserted; the point is that the scripts keep working.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"\s*\d+(?:\.\d+)?\*?\s*"

BENCHMARKS = {
    "inproc.py": (
        "| scenario | carboy µs | Flask µs | carboy/Flask ratio | carboy calls | Flask calls |",
        5,
        [
            "hello: GET / (text)",
            "json: GET /users/<int>",
            "404 among 100 routes",
            "form: POST urlencoded echo",
        ],
        "",
    ),
    "asgi.py": (
        "| scenario | carboy µs | Starlette µs | Quart µs | carboy/Starlette | carboy/Quart "
        "| carboy calls | Starlette calls | Quart calls |",
        8,
        [
            "hello: GET / (text)",
            "json: GET /users/<int>",
            "404 among 100 routes",
            "json echo: POST /echo",
            "sync hello: def view (thread pool)",
        ],
        "Targets (async hello): carboy/Starlette ",
    ),
}


@pytest.mark.parametrize("script", sorted(BENCHMARKS))
def test_quick_run_prints_a_row_per_scenario(script: str) -> None:
    header, columns, scenarios, summary = BENCHMARKS[script]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert header in lines, proc.stdout
    for name in scenarios:
        row = re.compile(r"^\| " + re.escape(name) + r" \|" + (NUMBER + r"\|") * columns + r"$")
        assert any(row.match(line) for line in lines), f"no row for {name!r} in:\n{proc.stdout}"
    assert summary in proc.stdout
