"""benchmarks/sync_hop.py (the figures docs/serving.md quotes) runs, and its three stacks
answer every scenario right: the suite's checks run before anything is timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sync_hop_in_process_smoke(tmp_path: Path) -> None:
    out = tmp_path / "hop.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    command = ["benchmarks/sync_hop.py", "--quick", "--only", "inprocess", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert set(results["inprocess"]) == {"hello", "json", "template"}
    for row in results["inprocess"].values():
        assert set(row) == {"carboy-wsgi", "carboy-asgi", "carboy-asgi-def"}
    assert "| hello |" in done.stdout and "hop: def - async" in done.stdout
