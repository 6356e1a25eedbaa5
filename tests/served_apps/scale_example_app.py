"""The example notes app as tests/test_example_shared_state.py serves it: unchanged, configured
from ``CARBOY_*`` variables, plus an ``X-Worker-Pid`` header so the test can see which worker
process answered each request."""

from __future__ import annotations

import os
import typing as t

from examples.notes import create_app

app = create_app()


@app.after_request
def tell_worker(response: t.Any) -> t.Any:
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response
