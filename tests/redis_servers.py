"""Redis servers a test starts, stops and restarts itself (the machine's ``redis-server``).

Tests that only need Redis use the machine's server at 127.0.0.1:6379; tests that must stop,
kill or restart Redis start their own here, on a free loopback port, and stop it afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from types import TracebackType

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from servers import free_port

#: The machine's server, shared by the tests that do not stop it (database 15 by default).
MACHINE_URL = "redis://127.0.0.1:6379/15"


def machine_redis_or_skip() -> redis.Redis:
    """A client of the machine's Redis; the test is skipped, saying why, if none answers."""
    client = redis.Redis.from_url(MACHINE_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.skip(f"the machine's Redis at 127.0.0.1:6379 does not answer: {e}")
    return client


class RedisServer:
    """A ``redis-server`` on a free 127.0.0.1 port, without persistence.

    Use as a context manager. :meth:`stop` and :meth:`start` stop and start it again on the
    same port (an outage); :attr:`url` names database 0.

    :param args: extra ``redis-server`` arguments, such as ``["--timeout", "5"]``.
    """

    def __init__(self, args: list[str] | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.port = free_port()
        self.args = list(args or [])
        self.dir = tempfile.mkdtemp(prefix="carboy-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client of this server that retries a failed command once, at once.

        Not redis-py's default of three retries with up to seconds of backoff: :meth:`start`
        polls with it, and a ``PING`` refused while the server is starting would then return
        seconds after the server accepts, so a test timing a recovery from :meth:`start`'s
        return would start its clock late.
        """
        return redis.Redis(
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 1),
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as probe:
                    if probe.ping():
                        return
            except redis.RedisError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
