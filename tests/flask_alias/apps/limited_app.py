"""A rate-limited app for Flask-Limiter with Redis storage, served by gunicorn with 2 workers.

An unmodified Flask app: ``CARBOY_APP='.../limited_app.py:create_app()' gunicorn
carboy.flask_compat:app`` serves it on carboy. ``LIMITED_APP_PREFIX`` names the Redis key
prefix, so each test run has its own counters.
"""

from __future__ import annotations

import os

import redis
from flask import Flask, abort, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

REDIS_URL = "redis://127.0.0.1:6379"
LIMIT = "5 per hour"


def create_app() -> Flask:
    prefix = os.environ["LIMITED_APP_PREFIX"]
    app = Flask(__name__)
    app.config["RATELIMIT_HEADERS_ENABLED"] = True
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=REDIS_URL,
        key_prefix=prefix,
        strategy="fixed-window",
    )
    client = redis.Redis.from_url(REDIS_URL)

    def meet(name: str, parties: int = 2) -> None:
        """Return once *parties* requests have called ``meet(name)`` together.

        gunicorn's sync worker serves one request at a time, so requests that are in flight
        together are being served by different workers.
        """
        arrived = client.incr(f"{prefix}:meet:{name}")
        if arrived == parties:
            client.rpush(f"{prefix}:go:{name}", *["go"] * parties)
        if client.blpop([f"{prefix}:go:{name}"], timeout=20) is None:
            abort(504, f"only {arrived} of {parties} requests arrived")

    @app.get("/pid")
    @limiter.limit(LIMIT)
    def pid() -> str:
        if "meet" in request.args:
            meet(request.args["meet"])
        return str(os.getpid())

    @app.errorhandler(429)
    def too_many(error: Exception) -> tuple[str, int]:
        return f"limited by {os.getpid()}: {error}", 429

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app
