"""README's headline table of ratios, generated from ``docs/benchmarks/results.json``.

    python benchmarks/readme_table.py           # rewrite the table in README.md
    python benchmarks/readme_table.py --check   # exit 1 if README.md's table is not current

The table sits between two marker comments in README.md; everything else in README is left
as it is. ``benchmarks/run.py`` calls :func:`update` after writing ``docs/benchmarks/``, and
``tests/test_docs.py`` checks that README's table is what this script makes from the current
results, so no figure in it is typed by hand. The documentation's benchmarks page shows the
same table (``docs/_ext/carboy_docs.py`` calls :func:`headline`).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks" / "results.json"
README = ROOT / "README.md"
START = "<!-- benchmark-headline:start (benchmarks/readme_table.py writes this table) -->"
END = "<!-- benchmark-headline:end -->"

Results = dict[str, t.Any]

#: (row label, where, scenario or server, carboy's key, the other's key, the other's label)
#: where: "us" (in process, µs per request), "rps" (hello end to end), "rss" (worker memory).
ROWS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("hello, in process (WSGI)", "us", "hello", "carboy-wsgi", "flask", "Flask"),
    ("hello, in process (WSGI)", "us", "hello", "carboy-wsgi", "falcon", "Falcon"),
    ("JSON, in process (WSGI)", "us", "json", "carboy-wsgi", "flask", "Flask"),
    ("JSON, in process (WSGI)", "us", "json", "carboy-wsgi", "falcon", "Falcon"),
    ("hello, in process (ASGI)", "us", "hello", "carboy-asgi", "starlette", "Starlette"),
    ("hello on granian WSGI", "rps", "granian-wsgi", "carboy-wsgi", "flask", "Flask"),
    ("hello on granian WSGI", "rps", "granian-wsgi", "carboy-wsgi", "raw-wsgi", "raw WSGI app"),
    ("hello on granian ASGI", "rps", "granian-asgi", "carboy-asgi", "starlette", "Starlette"),
    ("hello on granian ASGI", "rps", "granian-asgi", "carboy-asgi", "raw-asgi", "raw ASGI app"),
    ("worker RSS after 10,000 requests", "rss", "", "carboy-wsgi", "flask", "Flask"),
)


def _figure(results: Results, where: str, place: str, key: str) -> float | None:
    try:
        if where == "us":
            return float(results["inprocess"][place][key]["us"])
        if where == "rps":
            return float(results["endtoend"][place][key]["scenarios"]["hello"]["rps"])
        return float(results["memory"][key]["points"][0]["rss_mb"])
    except (KeyError, IndexError, TypeError):
        return None


def _shown(value: float, where: str) -> str:
    if where == "us":
        return f"{value:.1f} µs" if value < 100 else f"{value:,.0f} µs"
    if where == "rps":
        return f"{value:,.0f} req/s"
    return f"{value:.1f} MiB"


def headline(results: Results) -> str:
    """The table (Markdown) and the line that says which run it comes from."""
    meta = results["meta"]
    machine = meta["machine"]
    mode = {"full": "full run", "quick": "quick run (noisy)"}.get(meta["mode"], "custom run")
    lines = [
        f"From the latest {mode} of `benchmarks/run.py` ({meta['started'][:10]}, "
        f"{meta['seconds'] / 60:.1f} min; {machine['cores']}-core {machine['cpu']}, "
        f"Python {machine['python'].split()[0]}, carboy at {machine['carboy_commit']}). Each "
        "ratio is carboy ÷ the other, measured in the same run: below 1 is better for µs and "
        "MiB, above 1 for req/s.",
        "",
        "| | carboy | other | carboy ÷ other |",
        "|---|---:|---:|---:|",
    ]
    for label, where, place, mine, other, other_label in ROWS:
        a, b = _figure(results, where, place, mine), _figure(results, where, place, other)
        if a is None or b is None or b == 0:
            continue
        row = f"| {label}, vs {other_label} | {_shown(a, where)} | {_shown(b, where)} | "
        lines.append(row + f"{a / b:.2f} |")
    return "\n".join(lines)


def render(readme: str, results: Results) -> str:
    """*readme* with the text between the markers replaced by :func:`headline`.

    :raises ValueError: the markers are missing or out of order.
    """
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs the markers {START!r} and {END!r}, in that order.")
    return readme[: start + len(START)] + "\n" + headline(results) + "\n" + readme[end:]


def load(path: Path = RESULTS) -> Results:
    return t.cast(Results, json.loads(path.read_text(encoding="utf-8")))


def update(readme: Path = README, results: Path = RESULTS) -> bool:
    """Rewrite *readme*'s table from *results*; ``True`` if the file changed."""
    old = readme.read_text(encoding="utf-8")
    new = render(old, load(results))
    if new != old:
        readme.write_text(new, encoding="utf-8")
    return new != old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README is not current")
    args = parser.parse_args(argv)
    if args.check:
        text = README.read_text(encoding="utf-8")
        if render(text, load()) != text:
            print("README.md's benchmark table is not current: run benchmarks/readme_table.py")
            return 1
        return 0
    print("rewrote README.md" if update() else "README.md was current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
