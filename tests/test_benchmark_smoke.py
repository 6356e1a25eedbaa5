"""Smoke tests: the benchmark suite and the focused in-process scripts keep working.

No timing is asserted. The suite (``benchmarks/run.py``) is checked three ways: every
framework answers every scenario right (``--check``); a tiny in-process run writes its report
and chart; and, where wrk and a second core are available, a tiny end-to-end run does too.
Everything runs in subprocesses: the suite imports the real Flask, which must not meet the
``flask`` alias some other tests install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, str(ROOT / "benchmarks" / "run.py")]
FRAMEWORKS = [
    "carboy-wsgi", "flask", "falcon", "bottle", "raw-wsgi",
    "carboy-asgi", "quart", "starlette", "falcon-asgi", "raw-asgi",
]  # fmt: skip
SCENARIOS = ["hello", "json", "form", "template", "404", "session", "static"]


def run_suite(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*RUN, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_suite_every_framework_answers_every_scenario_right() -> None:
    proc = run_suite("--check")
    lines = proc.stdout.splitlines()
    assert lines[0] == "| scenario | " + " | ".join(FRAMEWORKS) + " |", proc.stdout
    grid = {}
    for line in lines[1 : 1 + len(SCENARIOS)]:
        name, *verdicts = [cell.strip() for cell in line.strip("|").split("|")]
        grid[name] = dict(zip(FRAMEWORKS, verdicts, strict=True))
    assert list(grid) == SCENARIOS
    for scenario, row in grid.items():
        for framework, verdict in row.items():
            if framework.startswith("raw"):
                expected = {"ok"} if scenario == "hello" else {"n/a"}
            elif framework == "starlette" and scenario == "form":
                expected = {"ok", "n/a"}  # n/a without python-multipart
            else:
                expected = {"ok"}
            assert verdict in expected, f"{framework} {scenario}: {verdict}"
    assert lines[-1] == "all answers right"


def test_suite_tiny_in_process_run_writes_report(tmp_path: Path) -> None:
    run_suite(
        "--only", "inprocess", "--scenarios", "hello,json",
        "--frameworks", "carboy-wsgi,falcon,carboy-asgi,starlette",
        "--target-time", "0.002", "--repeats", "2", "--out", str(tmp_path),
    )  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    for scenario in ("hello", "json"):
        for framework in ("carboy-wsgi", "falcon", "carboy-asgi", "starlette"):
            figures = results["inprocess"][scenario][framework]
            assert figures["us"] > 0 and figures["calls"] > 0
    hello_vs_falcon = results["targets"][0]
    assert hello_vs_falcon["measured"] is not None and hello_vs_falcon["met"] in (True, False)
    report = (tmp_path / "results.md").read_text()
    assert "| scenario | carboy | Falcon | carboy ÷ Falcon |" in report
    assert (tmp_path / "inprocess.png").stat().st_size > 0
    (tmp_path / "results.md").unlink()
    run_suite("--rewrite", "--out", str(tmp_path))  # the report again, from results.json
    assert (tmp_path / "results.md").read_text() == report


def test_suite_without_wrk_keeps_the_in_process_half_and_says_why(tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # a PATH with this interpreter's tools but no wrk or taskset
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    proc = subprocess.run(
        [*RUN, "--scenarios", "hello", "--frameworks", "carboy-wsgi,falcon",
         "--target-time", "0.002", "--repeats", "1", "--no-memory", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "end to end: skipped: wrk and taskset are not on PATH" in proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["inprocess"]["hello"]["carboy-wsgi"]["us"] > 0
    assert "endtoend" not in results
    assert results["meta"]["skipped"] == {
        "endtoend": "wrk and taskset are not on PATH (Debian packages wrk and util-linux)"
    }
    assert "End to end: skipped, because wrk and taskset" in (tmp_path / "results.md").read_text()
    # Asked for the end-to-end half alone, it refuses at once, saying why.
    proc = subprocess.run(
        [*RUN, "--only", "endtoend", "--out", str(tmp_path / "e2e")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "end to end: cannot run: wrk and taskset are not on PATH" in proc.stderr


def _second_core() -> bool:
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return {0, 1} <= affinity


@pytest.mark.skipif(
    not (shutil.which("wrk") and shutil.which("taskset") and _second_core()),
    reason="end-to-end runs need wrk, taskset and CPUs 0 and 1",
)
def test_suite_tiny_end_to_end_run_writes_report(tmp_path: Path) -> None:
    run_suite(
        "--only", "endtoend", "--servers", "granian-wsgi", "--scenarios", "hello",
        "--frameworks", "carboy-wsgi,raw-wsgi", "--duration", "1", "--rounds", "1",
        "--warmup", "0", "--rss-counts", "300,600", "--out", str(tmp_path),
    )  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    served = results["endtoend"]["granian-wsgi"]
    for framework in ("carboy-wsgi", "raw-wsgi"):
        hello = served[framework]["scenarios"]["hello"]
        assert hello["rps"] > 0 and hello["errors"] == 0
        assert served[framework]["peak_rss_mb"] > 0
    memory = results["memory"]["carboy-wsgi"]
    assert [point["requests"] for point in memory["points"]] == [300, 600]
    report = (tmp_path / "results.md").read_text()
    assert "### granian (WSGI): requests per second" in report
    assert (tmp_path / "endtoend.png").stat().st_size > 0


def test_cachesim_reads_a_callgrind_dumps_totals() -> None:
    """``benchmarks/cachesim.py`` needs valgrind and wrk to run; its reading of a dump and
    its estimate are checked here on a dump written the way callgrind writes one."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.cachesim import Cost, read_totals
    finally:
        sys.path.remove(str(ROOT))
    dump = "\n".join(
        [
            "version: 1",
            "creator: callgrind-3.19.0",
            "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw",
            "summary: 1000 300 200 40 20 10 1",  # trailing zero counts left out
            "",
            "fn=(1) main",
            "16 1000",
            "totals: 5 5 5",  # a later totals line does not replace the summary
        ]
    )
    totals = read_totals(dump)
    assert totals == {
        "Ir": 1000, "Dr": 300, "Dw": 200, "I1mr": 40, "D1mr": 20, "D1mw": 10,
        "ILmr": 1, "DLmr": 0, "DLmw": 0,
    }  # fmt: skip
    cost = Cost(2, {name: count / 2 for name, count in totals.items()})
    assert cost.estimate == (1000 + 10 * (40 + 20 + 10) + 100 * 1) / 2
    with pytest.raises(ValueError, match="not a callgrind dump"):
        read_totals("events: Ir\n")
