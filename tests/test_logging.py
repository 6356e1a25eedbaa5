"""The app logger: error stream proxy, level-handler detection and logger creation."""

from __future__ import annotations

import io
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from carboy.globals import _cv_request
from carboy.logging import create_logger, default_handler, has_level_handler, wsgi_errors_stream


class FakeApp:
    def __init__(self, name: str, debug: bool = False) -> None:
        self.name = name
        self.debug = debug


@pytest.fixture
def make_logger_name() -> Iterator[Callable[[], str]]:
    """Return a factory for fresh logger names under a non-propagating parent.

    The parent keeps records (and handler detection) away from the root logger, where pytest
    installs its capture handlers. Call the factory in the test body: pytest also attaches its
    handlers to non-propagating loggers that exist when a test phase starts.
    """
    created: list[logging.Logger] = []

    def make() -> str:
        base = logging.getLogger(f"carboy_test_{uuid.uuid4().hex}")
        base.propagate = False
        child = logging.getLogger(f"{base.name}.app")
        created.extend((base, child))
        return child.name

    yield make
    for logger in created:
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)


@pytest.fixture
def errors_stream() -> Iterator[io.StringIO]:
    """Act as if a request with its own ``wsgi.errors`` stream were active."""
    stream = io.StringIO()
    token = _cv_request.set(SimpleNamespace(environ={"wsgi.errors": stream}))  # type: ignore[arg-type]
    try:
        yield stream
    finally:
        _cv_request.reset(token)


def test_errors_stream_outside_request_is_stderr() -> None:
    assert _cv_request.get(None) is None
    assert wsgi_errors_stream._get_current_object() is sys.stderr  # type: ignore[attr-defined]


def test_errors_stream_follows_stderr_replacement(monkeypatch: pytest.MonkeyPatch) -> None:
    replacement = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replacement)
    wsgi_errors_stream.write("to stderr")
    assert replacement.getvalue() == "to stderr"


def test_errors_stream_in_request(errors_stream: io.StringIO) -> None:
    assert wsgi_errors_stream._get_current_object() is errors_stream  # type: ignore[attr-defined]
    wsgi_errors_stream.write("hello")
    assert errors_stream.getvalue() == "hello"


def test_default_handler_format_and_stream(
    errors_stream: io.StringIO, make_logger_name: Callable[[], str]
) -> None:
    logger_name = make_logger_name()
    logger = logging.getLogger(logger_name)
    logger.propagate = False
    logger.addHandler(default_handler)
    logger.error("boom %d", 42)
    output = errors_stream.getvalue()
    assert output.startswith("[")
    assert output.endswith("] ERROR in test_logging: boom 42\n")
    assert default_handler.level == logging.NOTSET


def test_has_level_handler(make_logger_name: Callable[[], str]) -> None:
    logger_name = make_logger_name()
    logger = logging.getLogger(logger_name)
    assert not has_level_handler(logger)

    handler = logging.StreamHandler(io.StringIO())
    handler.setLevel(logging.ERROR)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    # The handler only takes ERROR and above; WARNING records would be dropped.
    assert not has_level_handler(logger)
    logger.setLevel(logging.ERROR)
    assert has_level_handler(logger)


def test_has_level_handler_checks_parents(make_logger_name: Callable[[], str]) -> None:
    logger_name = make_logger_name()
    parent = logging.getLogger(logger_name)
    child = logging.getLogger(f"{logger_name}.child")
    parent.addHandler(logging.NullHandler())
    assert has_level_handler(child)
    child.propagate = False
    try:
        assert not has_level_handler(child)
    finally:
        child.propagate = True


def test_create_logger_adds_default_handler(make_logger_name: Callable[[], str]) -> None:
    logger_name = make_logger_name()
    logger = create_logger(FakeApp(logger_name))  # type: ignore[arg-type]
    assert logger is logging.getLogger(logger_name)
    assert logger.handlers == [default_handler]
    assert logger.level == logging.NOTSET
    # A second call finds the handler and does not add it again.
    create_logger(FakeApp(logger_name))  # type: ignore[arg-type]
    assert logger.handlers == [default_handler]


def test_create_logger_debug_level(make_logger_name: Callable[[], str]) -> None:
    logger_name = make_logger_name()
    logger = create_logger(FakeApp(logger_name, debug=True))  # type: ignore[arg-type]
    assert logger.level == logging.DEBUG


def test_create_logger_keeps_explicit_level(make_logger_name: Callable[[], str]) -> None:
    logger_name = make_logger_name()
    logging.getLogger(logger_name).setLevel(logging.ERROR)
    logger = create_logger(FakeApp(logger_name, debug=True))  # type: ignore[arg-type]
    assert logger.level == logging.ERROR


def test_create_logger_respects_existing_handler(make_logger_name: Callable[[], str]) -> None:
    logger_name = make_logger_name()
    parent = logging.getLogger(logger_name.rpartition(".")[0])
    parent.addHandler(logging.NullHandler())
    logger = create_logger(FakeApp(logger_name))  # type: ignore[arg-type]
    assert default_handler not in logger.handlers


def test_created_logger_writes_to_request_stream(
    make_logger_name: Callable[[], str], errors_stream: io.StringIO
) -> None:
    logger_name = make_logger_name()
    logger = create_logger(FakeApp(logger_name, debug=True))  # type: ignore[arg-type]
    logger.debug("details")
    assert errors_stream.getvalue().endswith("DEBUG in test_logging: details\n")
