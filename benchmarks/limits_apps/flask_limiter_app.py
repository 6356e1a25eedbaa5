"""Flask 3.1 with Flask-Limiter, as its documentation writes it: the baseline of
benchmarks/baseline_limits.py. ``LIMITS_STORAGE`` is the storage URI, ``LIMITS_LIMIT`` the
limit of ``/limited`` (one bucket for every client)."""

from __future__ import annotations

import os

from flask import Flask
from flask_limiter import Limiter

app = Flask(__name__)
app.config["RATELIMIT_HEADERS_ENABLED"] = True
limiter = Limiter(
    lambda: "everyone",
    app=app,
    storage_uri=os.environ["LIMITS_STORAGE"],
    key_prefix=os.environ.get("LIMITS_PREFIX", ""),
)


@app.route("/health")
def health() -> str:
    return "ok"


@app.route("/limited")
@limiter.limit(os.environ["LIMITS_LIMIT"])
def limited() -> str:
    return str(os.getpid())
