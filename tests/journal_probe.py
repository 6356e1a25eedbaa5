"""A pytest plugin for tests/test_flask_journal.py: it reports which framework the journal
example's own test suite really ran on.

Loaded with ``-p journal_probe`` into the example's pytest run, it records the class of every
``app`` fixture value and, at the end, prints one ``journal-probe:`` line per class, plus
whether carboy was imported at all.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Generator
from typing import Any

import pytest

_app_classes: Counter[str] = Counter()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Generator[None, Any, Any]:
    value = yield
    if fixturedef.argname == "app":
        cls = type(value)
        _app_classes[f"{cls.__module__}.{cls.__qualname__}"] += 1
    return value


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, count in sorted(_app_classes.items()):
        terminalreporter.write_line(f"journal-probe: app class {name} x{count}")
    terminalreporter.write_line(f"journal-probe: carboy imported {'carboy' in sys.modules}")
