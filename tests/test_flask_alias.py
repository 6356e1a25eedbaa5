"""Real, unmodified Flask extensions on carboy, each test file in its own pytest process.

The files in ``tests/flask_alias/`` import ``flask`` and the extensions with the
``carboy.flask_compat`` alias installed (``pytest -p carboy.flask_compat``). This session
imports the real Flask for its differential tests, so the alias cannot be installed here:
``conftest.py`` keeps the folder out of this session and each file runs in a subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALIAS_TESTS = sorted((ROOT / "tests" / "flask_alias").glob("test_*.py"))
TIMEOUT = 300


def test_every_extension_has_its_file() -> None:
    # An empty glob would parametrize nothing and pass silently.
    expected = {
        "test_alias_active.py",
        *(f"test_ext_{name}.py" for name in ("login", "caching", "wtf", "cors")),
        *(f"test_ext_{name}.py" for name in ("limiter", "session", "migrate", "socketio")),
        # The example notes app (examples/notes) uses Flask-WTF, so its tests run here too.
        "test_example_app.py",
        "test_example_database.py",
        "test_example_live.py",
        "test_example_shared_state.py",
    }
    assert expected <= {path.name for path in ALIAS_TESTS}


@pytest.mark.parametrize("path", ALIAS_TESTS, ids=[p.stem for p in ALIAS_TESTS])
def test_under_alias(path: Path) -> None:
    cmd = [
        sys.executable,
        *("-m", "pytest", "-p", "carboy.flask_compat", "-q", "-p", "no:cacheprovider"),
        str(path.relative_to(ROOT)),
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    output = f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, output
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    passed = re.search(r"\b(\d+) passed\b", summary)
    assert passed is not None and int(passed.group(1)) >= 1, output
    assert not re.search(r"\b(failed|errors?|skipped)\b", summary), output
