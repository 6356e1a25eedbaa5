"""The outage proofs' Redis helper: tests/redis_servers.py's RedisServer."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
import redis

from redis_servers import RedisServer


def test_the_recovery_clock_starts_when_redis_answers() -> None:
    """:meth:`RedisServer.start` polls with :meth:`RedisServer.client`, which retries a failed
    command once, at once. With redis-py's default (three retries, with up to seconds of
    backoff), a PING refused while Redis started made :meth:`start` return seconds after Redis
    accepted, and recovery bounds timed from its return started their clock late."""
    server = RedisServer()  # never started: its port is this listener's, which hangs up
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server.port = listener.getsockname()[1]
        listener.settimeout(0.1)

        def hang_up() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return  # the listener is closed
                accepted.append(conn)
                conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        try:
            with server.client() as client, pytest.raises(redis.ConnectionError):
                client.ping()
        finally:
            listener.close()
            thread.join()
            shutil.rmtree(server.dir, ignore_errors=True)
    assert len(accepted) == 2  # the PING and its one retry (the default made four)
