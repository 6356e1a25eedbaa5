"""benchmarks/realtime_socketio.py (the figures docs/scale/realtime.md quotes) runs both sides,
carboy's broadcast and python-socketio's Redis manager, and on each every client gets every
message, in order; a tiny run, no timing asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redis_servers import machine_redis_or_skip

pytest.importorskip("socketio", reason="python-socketio is in the test extra")

ROOT = Path(__file__).resolve().parent.parent


def test_socketio_comparison_smoke(tmp_path: Path) -> None:
    client = machine_redis_or_skip()
    client.close()
    out = tmp_path / "compare.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    command = [
        "benchmarks/realtime_socketio.py",
        *("--clients", "20", "--messages", "20", "--rate", "50", "--rounds", "1"),
        *("--workers", "2", "--pause", "0", "--drain", "20"),
        *("--log-dir", str(tmp_path), "--json", str(out)),
    ]
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
    rounds = results["rounds"]
    assert [r["side"] for r in rounds] == ["carboy", "socketio"]
    for r in rounds:
        assert (r["clients"], r["messages"]) == (20, 20)
        assert r["complete"] == 20, r  # every client got all 20, in order, once
        assert (r["missing"], r["disordered"]) == (0, 0), r
        assert sum(r["per_worker"]) == 20
    lines = done.stdout.splitlines()
    assert any(line.startswith("carboy: carboy Broadcast (streams): 20/20") for line in lines)
    assert any(
        line.startswith("socketio: python-socketio AsyncRedisManager: 20/20") for line in lines
    )
    assert any(line.startswith("carboy/socketio: deliveries/s ") for line in lines)
    assert set(results["summary"]) == {"carboy", "socketio"}
