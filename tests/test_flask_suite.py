"""Flask 3.1's own test suite, run against carboy through ``carboy.flask_compat``.

The source distribution of Flask 3.1.x is downloaded from the package registry (with pip, so
the machine's configured index is used) into a temporary folder; none of its files are kept in
this repository. Its ``tests/`` folder then runs in a subprocess under
``pytest -p carboy.flask_compat``, with Flask's own pytest settings (every warning an error).

Two checks: at least 95% of Flask's tests pass, and the tests that fail are exactly those listed
in ``docs/flask-conformance.md``, each with its reason there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAILURES_DOC = ROOT / "docs" / "flask-conformance.md"
REQUIRED_PASS_RATE = 0.95


def _download_sdist(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(dest),
            "flask>=3.1,<3.2",
        ],
        check=True,
        timeout=300,
    )
    (sdist,) = dest.glob("flask-*.tar.gz")
    return sdist


def _extract_tests(sdist: Path, dest: Path) -> Path:
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        wanted = [
            member
            for member in archive.getmembers()
            if member.name.startswith((f"{top}/tests/", f"{top}/pyproject.toml"))
        ]
        archive.extractall(dest, members=wanted, filter="data")
    return dest / top


class SuiteResult:
    """Counts from pytest's final line; failing node ids from its ``-rA`` summary."""

    def __init__(self, version: str, output: str) -> None:
        self.version = version
        self.output = output
        lines = output.splitlines()
        counts = dict.fromkeys(("passed", "failed", "errors", "skipped"), 0)
        for number, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", lines[-1]):
            counts["errors" if word.startswith("error") else word] = int(number)
        self.passed = counts["passed"]
        self.skipped = counts["skipped"]
        self.failed = {
            match.group(1)
            for match in map(re.compile(r"(?:FAILED|ERROR) (tests/.+?)(?: - .*)?$").match, lines)
            if match
        }
        self.failed_count = counts["failed"] + counts["errors"]

    @property
    def total(self) -> int:
        return self.passed + self.failed_count + self.skipped


@pytest.fixture(scope="module")
def flask_suite(tmp_path_factory: pytest.TempPathFactory) -> SuiteResult:
    work = tmp_path_factory.mktemp("flask-suite")
    project = _extract_tests(_download_sdist(work / "sdist"), work / "src")
    version = project.name.removeprefix("flask-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CARBOY_"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "carboy.flask_compat",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rA",
            "--tb=no",
            "tests",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = SuiteResult(version, proc.stdout + proc.stderr)
    # Shown with -rA or on failure: the headline figure the README publishes.
    print(
        f"Flask {version} suite on carboy: {result.passed} passed, "
        f"{result.failed_count} failed, {result.skipped} skipped of {result.total}"
    )
    return result


def listed_failures() -> dict[str, str]:
    """The ``| `node id` | reason |`` rows of docs/flask-conformance.md."""
    rows: dict[str, str] = {}
    for line in FAILURES_DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`(tests/[^`]+)`\s*\|\s*([^|]+?)\s*\|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_runs_a_3_1_release(flask_suite: SuiteResult) -> None:
    assert re.fullmatch(r"3\.1\.\d+", flask_suite.version)
    assert flask_suite.total > 400, flask_suite.output[-3000:]
    # Every failure in the count has its node id in the summary.
    assert len(flask_suite.failed) == flask_suite.failed_count, flask_suite.output[-3000:]


def test_at_least_95_percent_of_flasks_tests_pass(flask_suite: SuiteResult) -> None:
    rate = flask_suite.passed / flask_suite.total
    assert rate >= REQUIRED_PASS_RATE, (
        f"{flask_suite.passed}/{flask_suite.total} passed ({rate:.1%}); failures:\n"
        + "\n".join(sorted(flask_suite.failed))
    )


def test_every_failure_is_listed_with_a_reason(flask_suite: SuiteResult) -> None:
    listed = listed_failures()
    assert all(reason.strip() for reason in listed.values())
    unlisted = flask_suite.failed - listed.keys()
    assert not unlisted, f"failing but not listed in {FAILURES_DOC.name}:\n" + "\n".join(
        sorted(unlisted)
    )


def test_no_listed_failure_passes_now(flask_suite: SuiteResult) -> None:
    # Keeps the list honest: a test fixed since it was listed must leave the list.
    stale = listed_failures().keys() - flask_suite.failed
    assert not stale, f"listed in {FAILURES_DOC.name} but not failing:\n" + "\n".join(sorted(stale))
