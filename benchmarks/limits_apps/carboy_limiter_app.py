"""The same app as flask_limiter_app.py on carboy with carboy.scale.limiter (one import line
differs), plus ``LIMITS_OUTAGE``, the storage-outage policy."""

from __future__ import annotations

import os

from carboy import Carboy
from carboy.scale.limiter import Limiter

app = Carboy(__name__)
app.config["RATELIMIT_HEADERS_ENABLED"] = True
limiter = Limiter(
    lambda: "everyone",
    app=app,
    storage_uri=os.environ["LIMITS_STORAGE"],
    key_prefix=os.environ.get("LIMITS_PREFIX", ""),
    storage_outage=os.environ.get("LIMITS_OUTAGE", "local"),
)


@app.route("/health")
def health() -> str:
    return "ok"


@app.route("/limited")
@limiter.limit(os.environ["LIMITS_LIMIT"])
def limited() -> str:
    return str(os.getpid())
