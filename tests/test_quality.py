"""ruff (lint + format) and mypy --strict are part of the test command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The Python the checks cover (the docs' Sphinx config and extensions, not their Markdown).
PYTHON = ["src", "tests", "benchmarks", "examples", "docs/conf.py", "docs/_ext"]


def _tool(name: str) -> str:
    local = os.path.join(os.path.dirname(sys.executable), name)
    found = local if os.path.exists(local) else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the 'test' extra")
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["ruff", "check", *PYTHON],
        ["ruff", "format", "--check", *PYTHON],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_static_checks(args: list[str]) -> None:
    proc = subprocess.run(
        [_tool(args[0]), *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
