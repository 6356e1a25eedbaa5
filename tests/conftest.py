from __future__ import annotations

import os
import sys
import typing as t

import pytest
from hypothesis import HealthCheck, settings

import carboy
from carboy.globals import _cv_app, _cv_request
from carboy.testing import ASGIClient

collect_ignore = ["flask_alias"]

# Property-based tests run a bounded number of examples in the suite; the long fuzz run
# (docs/fuzzing.md) raises it with CARBOY_FUZZ_EXAMPLES.
settings.register_profile(
    "carboy",
    max_examples=int(os.environ.get("CARBOY_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("carboy")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class ChainApp(carboy.Carboy):
    """Overrides a dispatch step, so requests take Flask's plain method chain instead of
    carboy's short path. Tests run on both to prove the two behave alike."""

    def dispatch_request(self) -> t.Any:
        return super().dispatch_request()


@pytest.fixture(params=["short-path", "method-chain", "asgi"])
def app(request: pytest.FixtureRequest) -> carboy.Carboy:
    """The app every app-level test runs on, three ways: WSGI on carboy's short path, WSGI on
    Flask's plain method chain, and ASGI (the test client drives ``await app(scope, receive,
    send)``, so the same assertions hold for the ASGI adapter)."""
    cls = ChainApp if request.param == "method-chain" else carboy.Carboy
    app = cls("test_app", root_path=os.path.dirname(__file__))
    app.config.update(TESTING=True, SECRET_KEY="test key")
    if request.param == "asgi":
        app.test_client_class = ASGIClient
    return app


@pytest.fixture
def client(app: carboy.Carboy) -> t.Any:
    return app.test_client()


@pytest.fixture(autouse=True)
def _no_context_left_pushed() -> t.Iterator[None]:
    yield
    leaked = []
    if _cv_request.get(None) is not None:
        leaked.append(f"request context {_cv_request.get()!r}")
    if _cv_app.get(None) is not None:
        leaked.append(f"app context for {_cv_app.get().app!r}")
    assert not leaked, "a test left a context pushed: " + ", ".join(leaked)
