"""Fixtures for the extension tests, which run with ``-p carboy.flask_compat``.

These tests import ``flask`` and real Flask extensions; under the alias every ``flask`` import
gives carboy's modules. The main test session never collects this folder (it imports the real
Flask for its differential tests); ``tests/test_flask_alias.py`` runs each file here in its own
pytest process instead.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
import redis

import carboy
from carboy.testing import ASGIClient, CarboyClient

_flask = sys.modules.get("flask")
if _flask is None or getattr(_flask, "Flask", None) is not carboy.Carboy:
    raise pytest.UsageError(
        "tests/flask_alias must run with the alias installed first: "
        "pytest -p carboy.flask_compat tests/flask_alias/..."
    )

REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix no other run uses; every key containing it is deleted afterwards."""
    prefix = f"carboy-test-{uuid.uuid4().hex}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"*{prefix}*"))
    if keys:
        redis_client.delete(*keys)
    assert not list(redis_client.scan_iter(match=f"*{prefix}*"))


@pytest.fixture(params=["wsgi", "asgi"])
def client_class(request: pytest.FixtureRequest) -> type[CarboyClient]:
    """The test client class for ``app.test_client_class``: requests through carboy's WSGI
    interface, or through its ASGI one (``await app(scope, receive, send)``, where ``async
    def`` views run on the event loop)."""
    return ASGIClient if request.param == "asgi" else CarboyClient
