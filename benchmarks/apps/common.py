"""What every benchmark app serves: the scenario data, shared so all apps answer alike.

Importing this module writes the two files the apps serve, a Jinja2 template and a 64 KiB
static file, into :data:`DATA_DIR` (under the system temp directory, never the repository).
Their content is fixed, so every process that imports this (the benchmark driver, each
server's worker) writes or finds the same bytes.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

HELLO = "Hello, World!"
SECRET_KEY = "carboy-benchmarks: not a secret"
#: The cookie every framework keeps its signed session in.
SESSION_COOKIE = "session"

#: Rendered by the template scenario: a title that needs escaping and 20 items.
TITLE = "Fish & Chips"
ITEMS = [{"name": f"Item {i}", "price": f"{i * 1.25:.2f}"} for i in range(20)]
TEMPLATE_NAME = "page.html"
TEMPLATE = """\
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }}</title></head>
<body>
  <h1>{{ title }}</h1>
  <ul>
  {%- for item in items %}
    <li class="{{ loop.cycle('odd', 'even') }}">
      {{ loop.index }}. {{ item.name }}: {{ item.price }}</li>
  {%- endfor %}
  </ul>
</body>
</html>
"""

STATIC_NAME = "blob.bin"
STATIC_SIZE = 64 * 1024
#: The static file's bytes: pseudo-random (incompressible) but the same in every process.
STATIC_BYTES = random.Random(64).randbytes(STATIC_SIZE)

#: The URL map holds 200 rules in every app: 6 for the scenarios (hello, json, form, page,
#: session, static files) and this many fillers. The 404 scenario requests a path none matches.
SCENARIO_ROUTES = 6
FILLER_ROUTES = 200 - SCENARIO_ROUTES

DATA_DIR = Path(tempfile.gettempdir()) / f"carboy-benchmarks-{os.getuid()}"
TEMPLATE_DIR = DATA_DIR / "templates"
STATIC_DIR = DATA_DIR / "static"


def filler_rule(i: int, int_arg: str, str_arg: str) -> str:
    """The *i*-th filler rule, written with the framework's syntax for an int and a str
    placeholder (``"<int:item_id>"``, ``"{item_id:int}"``...)."""
    if i % 3 == 0:
        return f"/section-{i}/items/{int_arg}"
    if i % 3 == 1:
        return f"/section-{i}/{str_arg}/edit"
    return f"/static-page-{i}"


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a worker starting meanwhile sees the old file or the new one.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)


_write_if_changed(TEMPLATE_DIR / TEMPLATE_NAME, TEMPLATE.encode())
_write_if_changed(STATIC_DIR / STATIC_NAME, STATIC_BYTES)
