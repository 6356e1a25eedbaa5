"""A worker killed with SIGKILL in the middle of a write load loses no acknowledged write.

The example notes app runs on a real server with two worker processes and one SQLite file.
Client threads send 2,000 numbered notes (``POST /api/notes``, each number sent once, never
retried), and one worker is killed with SIGKILL while they do. Afterwards the database must
hold every number that was answered 201, and no number twice; a write whose connection broke
is counted as unknown (it may or may not have been stored) and is not retried, as a retry
could store it twice. The server must then have started a new worker and keep answering.

Deadlines here only bound a hang: nothing asserts how long anything took.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from notes_http import csrf, sign_in
from servers import Server, free_port, tool, wait_for

WRITES = 2_000
CLIENTS = 8
WORKERS = 2
#: The worker is killed once this many writes have been acknowledged.
KILL_AFTER = WRITES // 3
#: Bounds the whole load, in seconds; it normally takes a few.
LOAD_DEADLINE = 40.0
PASSWORD = "kill-test-password"


def notes_env(database: Path) -> dict[str, str]:
    return {"CARBOY_DATABASE": str(database), "CARBOY_SECRET_KEY": "worker-kill-test-secret"}


def gunicorn(port: int, *options: str) -> list[str]:
    return [
        *tool("gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
        "--timeout", "30", "--graceful-timeout", "10", *options, "examples.notes:create_app()",
    ]  # fmt: skip


def granian(port: int, *options: str) -> list[str]:
    return [
        *tool("granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(WORKERS), "--factory", "--log-level", "warning", *options,
        "examples.notes:create_app",
    ]  # fmt: skip


#: name → command line for a port; each serves the notes app with two worker processes.
SERVERS: dict[str, Callable[[int], list[str]]] = {
    "gunicorn-sync": lambda port: gunicorn(port, "--worker-class", "sync"),
    "gunicorn-gthread": lambda port: gunicorn(port, "--worker-class", "gthread", "--threads", "4"),
    "granian-wsgi": lambda port: granian(
        port, "--respawn-failed-workers", "--respawn-interval", "0.5"
    ),
}


def workers(server: Server) -> list[psutil.Process]:
    """The server's worker processes: its children, leaving out multiprocessing helpers."""
    assert server.proc is not None
    try:
        children = psutil.Process(server.proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            alive = child.is_running() and child.status() != psutil.STATUS_ZOMBIE
            if alive and "multiprocessing" not in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def pids_answering(server: Server) -> set[str]:
    """The worker pids that answered a few requests, each on a new connection."""
    found = set()
    for _ in range(4):
        res = httpx.get(server.base_url + "/api/stats", timeout=5.0)
        found.add(res.headers["X-Worker-Pid"])
    return found


def worker_pids(server: Server) -> set[int]:
    return {proc.pid for proc in workers(server)}


def log_in(base_url: str, username: str) -> tuple[httpx.Cookies, dict[str, str]]:
    """Register *username* through the pages; return the signed-in session cookie and the
    session's CSRF header (the app refuses writes without it)."""
    with httpx.Client(base_url=base_url, timeout=10.0) as http:
        sign_in(http, username, PASSWORD)
        token = csrf(http)
        assert "session" in http.cookies
        return http.cookies, token


@dataclass
class Outcomes:
    """What the clients saw, per note number."""

    #: number → the note id the server answered with 201.
    acked: dict[int, int] = field(default_factory=dict)
    #: number → status of an answer that was not 201.
    refused: dict[int, int] = field(default_factory=dict)
    #: number → the transport error that left its outcome unknown.
    unknown: dict[int, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def send_notes(
    base_url: str, signed_in: tuple[httpx.Cookies, dict[str, str]], outcomes: Outcomes
) -> None:
    """Send the numbered notes from :data:`CLIENTS` threads, each number once."""
    numbers = itertools.count()
    take = threading.Lock()
    deadline = time.monotonic() + LOAD_DEADLINE

    def client() -> None:
        # No retries anywhere: httpx's transport does not retry a request it has sent.
        cookies, token = signed_in
        with httpx.Client(base_url=base_url, cookies=cookies, headers=token, timeout=10.0) as http:
            while time.monotonic() < deadline:
                with take:
                    number = next(numbers)
                if number >= WRITES:
                    return
                try:
                    res = http.post(
                        "/api/notes", json={"title": f"note {number}", "body": str(number)}
                    )
                except httpx.TransportError as exc:
                    with outcomes.lock:
                        outcomes.unknown[number] = type(exc).__name__
                    continue
                with outcomes.lock:
                    if res.status_code == 201:
                        outcomes.acked[number] = res.json()["id"]
                    else:
                        outcomes.refused[number] = res.status_code

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=LOAD_DEADLINE + 15)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"


def stored_notes(database: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(database, timeout=10.0)
    try:
        return [(row[0], row[1]) for row in conn.execute("SELECT id, body FROM note")]
    finally:
        conn.close()


@pytest.mark.parametrize("name", list(SERVERS))
def test_sigkill_of_a_worker_loses_no_acknowledged_write(name: str, tmp_path: Path) -> None:
    database = tmp_path / "notes.sqlite"
    port = free_port()
    server = Server(SERVERS[name](port), port, tmp_path / "server.log", notes_env(database))
    with server.start():
        server.wait_until_up("/login")
        wait_for(lambda: len(worker_pids(server)) == WORKERS, f"{WORKERS} workers")
        signed_in = log_in(server.base_url, "writer")
        outcomes = Outcomes()
        killed: list[int] = []

        def kill_one_worker_mid_load() -> None:
            deadline = time.monotonic() + LOAD_DEADLINE
            while len(outcomes.acked) < KILL_AFTER and time.monotonic() < deadline:
                time.sleep(0.001)
            victim = min(worker_pids(server))
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

        killer = threading.Thread(target=kill_one_worker_mid_load, daemon=True)
        killer.start()
        send_notes(server.base_url, signed_in, outcomes)
        killer.join(timeout=5)
        assert killed, "the worker was not killed"
        assert len(outcomes.acked) > KILL_AFTER, "the kill came after the load"

        # The server replaces the dead worker and keeps answering, with both workers.
        wait_for(
            lambda: len(worker_pids(server)) == WORKERS and killed[0] not in worker_pids(server),
            "a new worker in place of the killed one",
        )
        cookies, token = signed_in
        with httpx.Client(
            base_url=server.base_url, cookies=cookies, headers=token, timeout=10.0
        ) as http:
            after = [
                http.post("/api/notes", json={"title": f"after {i}", "body": f"after {i}"})
                for i in range(20)
            ]
        assert [res.status_code for res in after] == [201] * len(after), after[-1].text
        assert server.proc is not None and server.proc.poll() is None

    stored = stored_notes(database)
    counts = Counter(body for _, body in stored)
    numbers = {int(body) for body in counts if body.isdigit()}
    summary = (
        f"{name}: acked {len(outcomes.acked)}, refused {len(outcomes.refused)}, "
        f"unknown {len(outcomes.unknown)} ({sorted(Counter(outcomes.unknown.values()).items())},"
        f" of which stored {len(numbers & set(outcomes.unknown))}), stored {len(numbers)}"
    )
    print(summary)
    assert not outcomes.refused, f"answers other than 201: {outcomes.refused}; {summary}"
    assert len(outcomes.acked) + len(outcomes.unknown) == WRITES, summary
    assert set(outcomes.acked) <= numbers, f"acknowledged but lost: {summary}"
    assert [body for body, n in counts.items() if n > 1] == [], f"stored twice: {summary}"
    assert numbers <= set(range(WRITES)), summary
    by_id = dict(stored)
    assert all(by_id[note_id] == str(n) for n, note_id in outcomes.acked.items()), summary
    assert set(counts) - {str(n) for n in numbers} == {f"after {i}" for i in range(20)}


def test_granian_without_respawn_shuts_down_when_a_worker_dies(tmp_path: Path) -> None:
    """Why the granian command above has ``--respawn-failed-workers``: without it, granian
    stops the whole server, the other worker too, as soon as one worker dies."""
    port = free_port()
    # The same app, with an X-Worker-Pid header (tests/served_apps/scale_example_app.py).
    command = [arg for arg in granian(port) if arg != "--factory"]
    command[-1] = "scale_example_app:app"
    server = Server(command, port, tmp_path / "server.log", notes_env(tmp_path / "notes.sqlite"))
    with server.start():
        server.wait_until_up("/login")
        wait_for(lambda: len(worker_pids(server)) == WORKERS, f"{WORKERS} workers")
        # Both workers serve: a worker still loading the app when the other dies misses
        # granian's stop signal, and the server never exits (seen 2 times in 15 when the
        # kill came as soon as both processes existed; granian's race, not this test's point).
        answered: set[str] = set()
        wait_for(
            lambda: answered.update(pids_answering(server)) or len(answered) == WORKERS,
            "both workers answering",
        )
        os.kill(min(worker_pids(server)), signal.SIGKILL)
        server.wait_for_exit()
        assert "Unexpected exit from worker" in server.output()
        with pytest.raises(httpx.TransportError):
            httpx.get(server.base_url + "/login", timeout=2.0)
