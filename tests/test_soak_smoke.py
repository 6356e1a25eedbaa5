"""A short soak: the example notes app at saturation on gunicorn and granian ASGI, no errors.

``benchmarks/soak.py`` is run as documented, only shorter (2 s of warm-up and 5 s of load
per server). It loads with wrk when wrk is installed, else with its bounded Python client,
so this runs everywhere. Memory growth over seconds says nothing, so its limit is lifted
here; the full soak (``--minutes 10``) is what checks it. No timing is asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak_answers_everything_on_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--seconds", "5", "--warmup", "2",
        "--growth-limit", "1000", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    results = {result["server"]: result for result in report["results"]}
    assert set(results) == {"gunicorn", "granian-asgi"}
    has_wrk = shutil.which("wrk") is not None and shutil.which("taskset") is not None
    for server, result in results.items():
        assert result["client"] == ("wrk" if has_wrk else "python")
        assert result["requests"] > 0, server
        assert result["non_2xx"] == 0, server
        assert result["socket_errors"] == 0, server
        assert not result["workers_restarted"], server
        assert len(result["rss_end_mb"]) == 2, server
        # A quarter of the requests create a note; 20 more were made before the load.
        assert result["notes_stored"] >= 20 + result["requests"] // 4 - 32, server
    assert report["failures"] == {"gunicorn": [], "granian-asgi": []}
