"""The long fuzz run: every property-based test (``pytest -m fuzz``) with many more examples
than the suite's 150, and the total of examples executed.

    python benchmarks/fuzz.py                      # about 1,000,000 examples; ~1 h on 2 cores
    python benchmarks/fuzz.py --fast 300 --bulk 3000   # a short look

The router's fixed-table test costs about 2 ms an example and takes ``--bulk`` examples;
every other fuzz test (generated rule tables, app against Flask, session cookies, ASGI bodies:
10 to 100 ms an example) takes ``--fast``. The two groups run side by side, one process each.
Hypothesis prints its statistics; this script adds up the passing examples of every test and
exits 1 if any test failed. See docs/safety.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BULK = "tests/test_router_fuzz.py::test_router_agrees_with_werkzeug_on_a_fixed_table"


def _command(examples: int, selection: list[str]) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, CARBOY_FUZZ_EXAMPLES=str(examples))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "fuzz"]
    return [*cmd, "--hypothesis-show-statistics", *selection], env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bulk", type=int, default=950_000, help="router fixed-table examples")
    parser.add_argument("--fast", type=int, default=10_000, help="examples of each other test")
    args = parser.parse_args()
    started = time.monotonic()
    runs = [
        _command(args.bulk, [BULK]),
        _command(args.fast, ["tests", "--deselect", BULK]),
    ]
    processes = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for cmd, env in runs
    ]
    outputs = [p.communicate()[0] for p in processes]
    failed = any(p.returncode != 0 for p in processes)
    total = 0
    rows: list[tuple[str, int, int]] = []
    for output in outputs:
        print(output)
        test = ""
        for line in output.splitlines():
            named = re.fullmatch(r"(tests/\S+):", line.strip())
            counts = re.search(r"(\d+) passing, (\d+) failing", line)
            if named:
                test = named[1]
            elif counts and test:
                passing, failing = int(counts[1]), int(counts[2])
                rows.append((test, passing, failing))
                total += passing
    print("| test | passing examples | failing |\n|---|---:|---:|")
    for test, passing, failing in rows:
        print(f"| {test} | {passing:,} | {failing} |")
    minutes = (time.monotonic() - started) / 60
    print(f"\n{total:,} passing examples in {minutes:.1f} min; {'FAILED' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
