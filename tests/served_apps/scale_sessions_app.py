"""carboy's Redis sessions served by real servers (tests/test_scale_sessions.py).

Configured from the environment: ``SCALE_SESSIONS_REDIS_URL`` (the Redis) and
``SCALE_SESSIONS_PREFIX`` (the key prefix of this run).
"""

from __future__ import annotations

import os

import carboy
from carboy import session
from carboy.scale.sessions import Session, session_lock

app = carboy.Carboy(__name__)
app.config.update(
    SECRET_KEY="scale-sessions-test",
    SESSION_TYPE="redis",
    REDIS_URL=os.environ.get("SCALE_SESSIONS_REDIS_URL", "redis://127.0.0.1:6379/15"),
    SESSION_KEY_PREFIX=os.environ.get("SCALE_SESSIONS_PREFIX", "scale-sessions:"),
    SESSION_LOCK_WAIT=20.0,
)
Session(app)


@app.get("/ping")
def ping() -> str:
    return "pong"


@app.post("/start")
def start() -> str:
    session["started"] = True
    return "started"


@app.post("/set/<key>")
def set_key(key: str) -> str:
    session[key] = 1
    return "set"


@app.get("/keys")
def keys() -> dict[str, object]:
    return {"keys": sorted(session)}


@app.get("/get/<key>")
def get_key(key: str) -> dict[str, object]:
    return {key: session.get(key)}


@app.post("/incr")
def incr() -> str:
    return str(session.increment("n"))


@app.post("/rmw")
@session_lock
def rmw() -> str:
    session["m"] = session.get("m", 0) + 1
    return str(session["m"])


@app.get("/async/keys")
async def async_keys() -> dict[str, object]:
    return {"keys": sorted(session)}
