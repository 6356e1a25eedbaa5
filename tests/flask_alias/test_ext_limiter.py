"""Flask-Limiter with Redis storage, enforced across two gunicorn worker processes.

The app (``apps/limited_app.py``) is an unmodified Flask app served on carboy as
``carboy.flask_compat:app``; its ``/pid`` view is limited to 5 requests an hour and answers
with the worker's process id.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis

from servers import Server, free_port, tool

APPS = Path(__file__).resolve().parent / "apps"


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def test_limit_is_shared_by_two_gunicorn_workers(
    tmp_path: Path, redis_client: redis.Redis, redis_prefix: str
) -> None:
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "2", "--timeout", "30"),
        "carboy.flask_compat:app",
    ]
    env = {
        "CARBOY_APP": f"{APPS / 'limited_app.py'}:create_app()",
        "LIMITED_APP_PREFIX": redis_prefix,
    }
    with Server(cmd, port, tmp_path / "gunicorn.log", env) as server:
        server.wait_until_up("/health")
        assert server.proc is not None
        url = server.base_url + "/pid"
        try:
            # Two requests in flight together: served by different workers.
            with ThreadPoolExecutor(2) as pool:
                together = list(pool.map(lambda _: httpx.get(url + "?meet=1", timeout=30), "ab"))
            sequential = [httpx.get(url, timeout=30) for _ in range(3)]
            limited = httpx.get(url, timeout=30)
        except httpx.HTTPError as e:
            raise AssertionError(f"{e!r}\n{server.output()}") from e

        served = together + sequential
        assert [r.status_code for r in served] == [200] * 5, server.output()
        pids = {int(r.text) for r in served}
        assert len(pids) == 2
        # Both are gunicorn workers: children of the master process.
        assert {parent_of(pid) for pid in pids} == {server.proc.pid}
        assert [r.headers["X-RateLimit-Remaining"] for r in sequential] == ["2", "1", "0"]
        assert all(r.headers["X-RateLimit-Limit"] == "5" for r in served)

        # The sixth request is refused, whichever worker gets it. Each worker served fewer
        # than 5 of the allowed requests, so only the shared Redis counter can refuse it.
        assert limited.status_code == 429, limited.text
        assert limited.text.startswith("limited by ")
        assert int(limited.text.split()[2].rstrip(":")) in pids
        assert "5 per 1 hour" in limited.text
        assert "Retry-After" in limited.headers
        assert limited.headers["X-RateLimit-Remaining"] == "0"

        # The counter lives in Redis under this run's prefix.
        limiter_keys = [
            key
            for key in redis_client.scan_iter(match=f"*{redis_prefix}*")
            if b":meet:" not in key and b":go:" not in key
        ]
        assert limiter_keys, list(redis_client.scan_iter(match=f"*{redis_prefix}*"))
        assert any(int(redis_client.get(key) or 0) >= 5 for key in limiter_keys)
