"""The Python samples of the documentation, found and run as the reader would run them.

A page's ```` ```python ```` blocks (in list items too) run in order, in one namespace, in a
fresh interpreter whose working directory is an empty temporary folder, so one page's samples
cannot lean on another's or on the test process (the Flask alias, for one, changes
``sys.modules`` for good). A failing sample's traceback names the page and its line.

Run a page by hand: ``python tests/docs_samples.py docs/quickstart.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(first line of the code, 1-based; code)`` for each ```` ```python ```` fence."""
    tokens = MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8"))
    return [
        (token.map[0] + 2, token.content)
        for token in tokens
        if token.type == "fence" and token.info.strip() == "python" and token.map
    ]


_RUNNER = """
import json, sys
blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "docs_sample"}
for filename, line, code in blocks:
    # Blank lines before the code keep the traceback's line numbers the page's.
    exec(compile("\\n" * (line - 1) + code, filename, "exec"), namespace)
print("samples ran:", len(blocks))
"""


def run_page(page: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run every Python sample of *page* in a fresh interpreter (see the module docs)."""
    blocks = [(str(page), line, code) for line, code in python_blocks(page)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="carboy-docs-") as cwd:
        return subprocess.run(
            [sys.executable, "-c", _RUNNER],
            input=json.dumps(blocks),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


if __name__ == "__main__":
    for name in sys.argv[1:]:
        done = run_page(Path(name).resolve())
        sys.stdout.write(done.stdout + done.stderr)
        if done.returncode:
            sys.exit(done.returncode)
