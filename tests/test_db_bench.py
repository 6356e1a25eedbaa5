"""Smoke tests of issue 22's database benchmark (``benchmarks/db.py``).

The answer checks are tested on answers made here (right ones pass, each kind of wrong one
is caught); then the benchmark itself, in a subprocess (it serves the real Flask and carboy's
``flask`` alias side by side, which must not meet in this process): every stack served by
granian and checked on every scenario, and, with wrk, a one-second load of one scenario.
No timing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import psycopg
import pytest

from pg_servers import machine_postgres_or_skip

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import db  # noqa: E402
from benchmarks.db_apps import BY_KEY, common  # noqa: E402
from benchmarks.scenarios import Answer, WrongAnswer  # noqa: E402

URL = common.DEFAULT_URL
HTML = [("content-type", "text/html; charset=utf-8")]
JSON = [("content-type", "application/json")]


class FakeTable:
    """What :class:`benchmarks.db.Table` answers, from a dict."""

    def __init__(self, numbers: dict[int, int]) -> None:
        self.stored = numbers

    def numbers(self, ids: object = None) -> dict[int, int]:
        return dict(self.stored)


def fortunes_page(rows: list[tuple[int, str]], autoescape: bool = True) -> bytes:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(common.TEMPLATE_DIR), autoescape=autoescape
    )
    page = env.get_template(common.TEMPLATE_NAME).render(
        fortunes=[{"id": i, "message": m} for i, m in rows]
    )
    return page.encode()


def test_queries_parameter_is_clamped_as_the_rules_say() -> None:
    assert [common.queries(v) for v in ("20", "1", "500")] == [20, 1, 500]
    assert [common.queries(v) for v in ("0", "-3", "501", "foo", "", None, "2.5")] == [
        1, 1, 500, 1, 1, 1, 1,
    ]  # fmt: skip


def test_fortunes_check_passes_the_right_page_and_catches_wrong_ones() -> None:
    right = sorted([*common.FORTUNES, common.ADDED_FORTUNE], key=lambda r: r[1])
    db.check_fortunes(Answer(200, HTML, fortunes_page(right)))
    wrong_pages = {
        "unescaped": fortunes_page(right, autoescape=False),
        "not sorted": fortunes_page(sorted(right)),
        "no added row": fortunes_page([r for r in right if r[0] != 0]),
        "a row changed": fortunes_page([(i, m.upper() if i == 2 else m) for i, m in right]),
    }
    for why, body in wrong_pages.items():
        with pytest.raises(WrongAnswer):
            db.check_fortunes(Answer(200, HTML, body))
            pytest.fail(f"a page with {why} passed")
    with pytest.raises(WrongAnswer, match="content type"):
        db.check_fortunes(Answer(200, [("content-type", "text/plain")], fortunes_page(right)))


def test_world_checks_compare_with_the_table() -> None:
    table = FakeTable({7: 70, 8: 80})
    one = json.dumps({"id": 7, "randomNumber": 70}).encode()
    assert db.check_worlds(Answer(200, JSON, one), None, table) == [(7, 70)]  # type: ignore[arg-type]
    two = json.dumps([{"id": 7, "randomNumber": 70}, {"id": 8, "randomNumber": 80}]).encode()
    assert len(db.check_worlds(Answer(200, JSON, two), 2, table)) == 2  # type: ignore[arg-type]
    wrong = {
        "stale number": (json.dumps({"id": 7, "randomNumber": 71}), None),
        "extra key": (json.dumps({"id": 7, "randomNumber": 70, "x": 1}), None),
        "string id": (json.dumps({"id": "7", "randomNumber": 70}), None),
        "list for one": (json.dumps([{"id": 7, "randomNumber": 70}]), None),
        "short list": (json.dumps([{"id": 7, "randomNumber": 70}]), 2),
    }
    for why, (body, count) in wrong.items():
        with pytest.raises(WrongAnswer):
            db.check_worlds(Answer(200, JSON, body.encode()), count, table)  # type: ignore[arg-type]
            pytest.fail(f"an answer with {why} passed")
    # Updates: the table must hold an answered number, and most rows must have changed.
    before = {i: 1 for i in range(1, 31)}
    after = {i: 2 for i in range(1, 31)}
    body = json.dumps([{"id": i, "randomNumber": 2} for i in range(1, 31)]).encode()
    db.check_updates(Answer(200, JSON, body), 30, FakeTable(after), before)  # type: ignore[arg-type]
    with pytest.raises(WrongAnswer, match="changed"):
        db.check_updates(Answer(200, JSON, body), 30, FakeTable(after), after)  # type: ignore[arg-type]
    with pytest.raises(WrongAnswer, match="table"):
        db.check_updates(Answer(200, JSON, body), 30, FakeTable(before), before)  # type: ignore[arg-type]


def test_every_stack_answers_every_scenario_and_the_tables_are_dropped(
    tmp_path: Path,
) -> None:
    machine_postgres_or_skip()
    out = tmp_path / "db.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "db.py"), "--json", str(out)]
    timed = shutil.which("wrk") and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    if timed:  # the checks, then one second of load per stack on one scenario
        cmd += ["--scenarios", "db", "--duration", "1", "--repeats", "1", "--warmup", "0"]
    else:  # without wrk: the checks alone
        cmd.append("--check")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert set(results["stacks"]) == set(BY_KEY)
    if timed:
        served = results["endtoend"]["db"]
        assert set(served) == set(BY_KEY)
        for key, entry in served.items():
            assert entry["errors"] == 0 and entry["requests"] > 0, (key, entry)
            assert entry["cpu_us_median"] > 0, (key, entry)  # the worker's CPU was read
        for key in ("carboy-sync", "carboy-fsa", "carboy-async"):
            assert served[key]["ratio_to_flask"] > 0 and served[key]["ratio_to_starlette"] > 0
    with psycopg.connect(URL, connect_timeout=5) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (results["schema"],)
        ).fetchone()
    assert left == (0,)
