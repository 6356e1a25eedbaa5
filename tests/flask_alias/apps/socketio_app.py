"""A Flask-SocketIO chat app with a Redis message queue, served by gunicorn with 2 workers.

An unmodified Flask-SocketIO app: ``CARBOY_APP='.../socketio_app.py:create_app()' gunicorn
--worker-class gthread carboy.flask_compat:app`` serves it on carboy. ``SOCKETIO_APP_CHANNEL``
names the Redis pub/sub channel, so each test run has its own.
"""

from __future__ import annotations

import os

from flask import Flask, request
from flask_socketio import SocketIO, emit

REDIS_URL = "redis://127.0.0.1:6379"


def create_app() -> Flask:
    app = Flask(__name__)
    socketio = SocketIO(
        app,
        message_queue=REDIS_URL,
        channel=os.environ["SOCKETIO_APP_CHANNEL"],
        async_mode="threading",
    )

    @app.get("/health")
    def health() -> str:
        return "ok"

    @socketio.on("whoami")
    def whoami() -> int:
        return os.getpid()  # the acknowledgement: which worker holds this connection

    @socketio.on("say")
    def say(data: dict[str, str]) -> None:
        emit("said", {"text": data["text"], "by": os.getpid(), "sid": request.sid}, broadcast=True)

    return app
