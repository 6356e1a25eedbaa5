"""Flask-SocketIO with a Redis message queue, on two gunicorn workers (websocket transport).

The app (``apps/socketio_app.py``) is an unmodified Flask-SocketIO app served on carboy as
``carboy.flask_compat:app`` by gunicorn's threaded workers (simple-websocket takes the socket
from ``gunicorn.socket``). Clients use the websocket transport only, so no sticky sessions are
needed; a broadcast from a client on one worker reaches clients on the other only through the
Redis message queue.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from servers import Server, free_port, tool

socketio = pytest.importorskip("socketio", reason="python-socketio is in the test extra")

APPS = Path(__file__).resolve().parent / "apps"


def connect(url: str) -> tuple[object, int, list[dict[str, object]], threading.Event]:
    """A connected client, the pid of the worker holding it, and what it receives."""
    client = socketio.Client(reconnection=False)
    got: list[dict[str, object]] = []
    arrived = threading.Event()

    @client.on("said")
    def said(data: dict[str, object]) -> None:
        got.append(data)
        arrived.set()

    client.connect(url, transports=["websocket"], wait_timeout=10)
    pid = client.call("whoami", timeout=10)
    return client, int(pid), got, arrived


def test_broadcast_reaches_clients_on_the_other_worker(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    port = free_port()
    channel = f"carboy-test-socketio-{uuid.uuid4().hex}"
    cmd = [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread"),
        *("--threads", "20", "--timeout", "30"),
        "carboy.flask_compat:app",
    ]
    env = {
        "CARBOY_APP": f"{APPS / 'socketio_app.py'}:create_app()",
        "SOCKETIO_APP_CHANNEL": channel,
    }
    with Server(cmd, port, tmp_path / "gunicorn.log", env) as server:
        server.wait_until_up("/health")
        clients: dict[int, tuple[object, list[dict[str, object]], threading.Event]] = {}
        extra = []
        try:
            # Connect until two workers each hold a client (bounded: the kernel spreads
            # accepted connections between the two workers' listening threads).
            deadline = time.monotonic() + 30
            while len(clients) < 2 and time.monotonic() < deadline:
                client, pid, got, arrived = connect(server.base_url)
                if pid in clients:
                    extra.append(client)
                else:
                    clients[pid] = (client, got, arrived)
            assert len(clients) == 2, f"every client landed on one worker\n{server.output()}"
            (pid_a, (a, got_a, arrived_a)), (pid_b, (b, got_b, arrived_b)) = clients.items()
            # Each worker's message-queue listener subscribes in a background thread started
            # with its first client; Redis pub/sub delivers only to channels already
            # subscribed (at most once), so wait until both workers listen.
            deadline = time.monotonic() + 10
            while redis_client.pubsub_numsub(channel)[0][1] < 2:
                assert time.monotonic() < deadline, f"not both workers subscribed to {channel}"
                time.sleep(0.02)
            a.emit("say", {"text": "hello from a"})  # type: ignore[attr-defined]
            assert arrived_b.wait(10), f"the other worker's client got nothing\n{server.output()}"
            assert arrived_a.wait(10)
            assert got_b == got_a
            assert got_b[0]["text"] == "hello from a" and got_b[0]["by"] == pid_a
            b.emit("say", {"text": "and back from b"})  # type: ignore[attr-defined]
            deadline = time.monotonic() + 10
            while len(got_a) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert [m["text"] for m in got_a] == ["hello from a", "and back from b"]
            assert got_a[1]["by"] == pid_b
        finally:
            for client, *_ in clients.values():
                client.disconnect()  # type: ignore[attr-defined]
            for client in extra:
                client.disconnect()  # type: ignore[attr-defined]
