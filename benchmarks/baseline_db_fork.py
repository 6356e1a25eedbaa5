"""The baseline with teeth for pools made before a fork: a SQLAlchemy engine made and used at
import, served by ``gunicorn --preload`` with 4 workers, with and without
:class:`carboy.scale.database.Database` (which gives each worker a new pool after the fork).

Run: ``python benchmarks/baseline_db_fork.py [REQUESTS]`` (needs the machine's PostgreSQL at
127.0.0.1:5432, database ``test``; about a minute, most of it the baseline's requests that hang
until the client's 10 s timeout). Prints a Markdown table; docs/scale/databases.md records one
run. The app is the suite's ``tests/served_apps/scale_db_pool_app.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from pg_servers import MACHINE_URL  # noqa: E402
from servers import Server, free_port, tool  # noqa: E402


def run(dispose: bool, requests: int, folder: Path) -> tuple[Counter[object], int, float]:
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        *("--preload", "--bind", f"127.0.0.1:{port}", "--workers", "4", "--timeout", "30"),
        "scale_db_pool_app:app",
    ]
    env = {"POOL_DB_URL": MACHINE_URL, "POOL_DISPOSE": "1" if dispose else "0"}
    statuses: Counter[object] = Counter()
    backends: set[str] = set()
    started = time.monotonic()
    with Server(cmd, port, folder / f"dispose-{dispose}.log", env) as server:
        server.wait_until_up("/q")

        def client(_: int) -> None:
            with httpx.Client(base_url=server.base_url, timeout=10) as http:
                for _ in range(requests // 8):
                    try:
                        r = http.get("/q")
                    except httpx.HTTPError as e:
                        statuses[type(e).__name__] += 1
                        continue
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        backends.add(r.text)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(client, range(8)))
    return statuses, len(backends), time.monotonic() - started


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as tmp:
        print("| engine made at import, gunicorn --preload, 4 workers | answers | backends |")
        print("|---|---|---|")
        for dispose, label in ((False, "plain SQLAlchemy"), (True, "registered with Database")):
            statuses, backends, _ = run(dispose, requests, Path(tmp))
            shown = ", ".join(f"{n} x {k}" for k, n in statuses.most_common())
            print(f"| {label} | {shown} | {backends} |")


if __name__ == "__main__":
    main()
