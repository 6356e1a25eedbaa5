"""Soak: the example notes app at saturation for minutes, with two workers, on a SQLite file.

    python benchmarks/soak.py --minutes 10          # 10 minutes per server, about 21 in all
    python benchmarks/soak.py --seconds 5 --warmup 2 --growth-limit 100   # a smoke run

Each server (gunicorn's sync worker, and granian over ASGI) serves ``examples.notes`` with two
worker processes on one database file. wrk (or, without wrk, a bounded Python client) sends a
mix of four requests as fast as the server answers: a JSON note created, a list of 20 notes, a
note's HTML page and a note as JSON, signed in through the app's own session cookie. Reported
per server: requests, answers outside 2xx/3xx, socket errors, worker restarts, and each
worker's RSS after the warm-up and at the end. It fails (status 1) on any error or restart,
or when a worker's RSS grew by more than ``--growth-limit`` percent (2 by default).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import typing as t
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import wrk
from benchmarks.scenarios import Answer, Request
from benchmarks.servers import (
    ask,
    ensure_bytecode,
    free_port,
    launch,
    script,
    stop_group,
    workers_of,
)

MiB = 1024 * 1024
WORKERS = 2
APP_FACTORY = "examples.notes:create_app"
PASSWORD = "soak-password"
#: Notes the reading user has: what each list request returns.
READER_NOTES = 20
#: The load runs in slices of this many seconds, with each worker's RSS read after each.
SLICE = 60.0
#: The Python client's cap on requests per second of load (used when wrk is absent), which
#: bounds it in count as well as in time.
PY_MAX_RATE = 5_000


def gunicorn(port: int) -> list[str]:
    return [
        script("gunicorn"), "--worker-class", "sync", "--workers", str(WORKERS),
        "--bind", f"127.0.0.1:{port}", "--backlog", "2048", "--timeout", "30",
        "--graceful-timeout", "30", "--log-level", "warning", f"{APP_FACTORY}()",
    ]  # fmt: skip


def granian_asgi(port: int) -> list[str]:
    return [
        script("granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(WORKERS), "--http", "1", "--no-ws", "--respawn-failed-workers",
        "--factory", "--log-level", "warning", APP_FACTORY,
    ]  # fmt: skip


#: key → (label, command line for a port).
SERVERS: dict[str, tuple[str, Callable[[int], list[str]]]] = {
    "gunicorn": (f"gunicorn sync, {WORKERS} workers", gunicorn),
    "granian-asgi": (f"granian ASGI, {WORKERS} workers", granian_asgi),
}


@dataclass(frozen=True)
class Mix:
    """The requests sent in turn, and the status each must get."""

    requests: tuple[Request, ...]
    statuses: tuple[int, ...]


def _form_post(path: str, fields: dict[str, str], signed: tuple[str, str]) -> Request:
    cookie, token = signed
    return Request(
        "POST",
        path,
        body=urllib.parse.urlencode(fields).encode(),
        headers=(
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie),
            ("X-CSRFToken", token),
        ),
    )


def _session_cookie(answer: Answer, kept: str | None = None) -> str:
    """The session cookie *answer* sets, else *kept* (the session did not change)."""
    for name, value in answer.headers:
        if name == "set-cookie" and value.startswith("session="):
            return value.split(";", 1)[0]
    if kept is None:
        raise RuntimeError(f"no session cookie in {answer.headers}")
    return kept


def _csrf(port: int, cookie: str | None) -> tuple[str, str]:
    """The session cookie and CSRF token after ``GET /api/csrf`` (the app refuses writes
    without the token of their session: Flask-WTF)."""
    headers = (("Cookie", cookie),) if cookie else ()
    answer = ask(port, Request("GET", "/api/csrf", headers=headers))
    if answer.status != 200:
        raise RuntimeError(f"GET /api/csrf answered {answer.status}: {answer.body[:300]!r}")
    return _session_cookie(answer, cookie), json.loads(answer.body)["csrf_token"]


def sign_in(port: int, username: str) -> tuple[str, str]:
    """Register *username* through the pages, log in, and return its ``session=...`` cookie
    and the session's CSRF token."""
    fields = {"username": username, "password": PASSWORD}
    cookie = None
    for path in ("/register", "/login"):
        answer = ask(port, _form_post(path, fields, _csrf(port, cookie)))
        if answer.status != 302:
            raise RuntimeError(f"POST {path} answered {answer.status}: {answer.body[:300]!r}")
        cookie = _session_cookie(answer)
    return _csrf(port, cookie)


def _json_post(path: str, signed: tuple[str, str], payload: dict[str, str]) -> Request:
    cookie, token = signed
    body = json.dumps(payload).encode()
    headers = (("Cookie", cookie), ("X-CSRFToken", token), ("Content-Type", "application/json"))
    return Request("POST", path, body=body, headers=headers)


def prepare(port: int) -> Mix:
    """Make a writer and a reader with :data:`READER_NOTES` notes; return the request mix.

    Notes are only ever added to the writer, whose notes are never listed, so the cost of
    each request stays the same however long the soak runs.
    """
    writer = sign_in(port, "writer")
    reader = sign_in(port, "reader")
    first = None
    for number in range(READER_NOTES):
        note = _json_post("/api/notes", reader, {"title": f"note {number}", "body": "x" * 200})
        answer = ask(port, note)
        if answer.status != 201:
            raise RuntimeError(f"creating a note answered {answer.status}: {answer.body[:300]!r}")
        first = first or json.loads(answer.body)["id"]
    as_reader = (("Cookie", reader[0]),)
    requests = (
        _json_post("/api/notes", writer, {"title": "soak", "body": "written under load"}),
        Request("GET", "/api/notes", headers=as_reader),
        Request("GET", f"/notes/{first}", headers=as_reader),
        Request("GET", f"/api/notes/{first}", headers=as_reader),
    )
    mix = Mix(requests, (201, 200, 200, 200))
    for request, status in zip(mix.requests, mix.statuses, strict=True):
        answer = ask(port, request)
        if answer.status != status:
            raise RuntimeError(
                f"{request.method} {request.path} answered {answer.status}, expected {status}:"
                f" {answer.body[:300]!r}"
            )
    return mix


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII text is a valid Lua string


def lua_script(mix: Mix) -> str:
    """A wrk script that sends the mix's requests in turn."""
    lines = ["local requests = {}", "function init(args)"]
    for request in mix.requests:
        headers = ", ".join(f"[{_lua(name)}] = {_lua(value)}" for name, value in request.headers)
        body = _lua(request.body.decode("ascii")) if request.body else "nil"
        lines.append(
            f"  table.insert(requests, wrk.format({_lua(request.method)}, {_lua(request.target)},"
            f" {{{headers}}}, {body}))"
        )
    lines += [
        "end",
        "local turn = 0",
        "function request()",
        "  turn = turn % #requests + 1",
        "  return requests[turn]",
        "end",
        # Each answer outside 2xx/3xx is written out with the start of its body, so a failure
        # can be told apart (wrk itself only counts them).
        "function response(status, headers, body)",
        "  if status < 200 or status >= 400 then",
        "    local start = string.gsub(string.sub(body, 1, 300), '%c', ' ')",
        f"    io.write(string.format('{BAD_MARK} %d %s\\n', status, start))",
        "  end",
        "end",
    ]
    return "\n".join(lines) + "\n"


def python_load(port: int, mix: Mix, seconds: float, connections: int) -> wrk.Load:
    """What wrk would measure, from *connections* threads of ``http.client`` sending the mix
    in turn for *seconds* (and at most :data:`PY_MAX_RATE` requests a second in all)."""
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"non_2xx": 0, "socket_errors": 0, "sent": 0}
    limit = int(PY_MAX_RATE * seconds)
    start = time.monotonic()
    deadline = start + seconds

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
        turn = offset
        try:
            while time.monotonic() < deadline:
                with lock:
                    if counts["sent"] >= limit:
                        return
                    counts["sent"] += 1
                request = mix.requests[turn % len(mix.requests)]
                turn += 1
                began = time.perf_counter()
                try:
                    conn.request(
                        request.method, request.target, request.body or None, dict(request.headers)
                    )
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    with lock:
                        counts["socket_errors"] += 1
                    continue
                took = (time.perf_counter() - began) * 1e3
                with lock:
                    latencies.append(took)
                    if not 200 <= response.status < 400:
                        counts["non_2xx"] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a load thread did not finish")
    elapsed = time.monotonic() - start
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    return wrk.Load(
        requests=len(latencies) + counts["socket_errors"],
        seconds=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=percentile(0.5),
        p99_ms=percentile(0.99),
        non_2xx=counts["non_2xx"],
        socket_errors=counts["socket_errors"],
    )


#: The warm-up's opening burst: this many times the connections, for at most BURST_SECONDS.
BURST = 4
BURST_SECONDS = 20.0


@dataclass
class Settings:
    seconds: float
    warmup: float
    connections: int
    client: str  # "wrk" or "python"
    client_cpu: int
    growth_limit: float


def _load(
    port: int, mix: Mix, seconds: float, settings: Settings, connections: int | None = None
) -> wrk.Load:
    connections = connections or settings.connections
    if settings.client == "wrk":
        url = f"http://127.0.0.1:{port}"
        output = wrk.run_script_output(
            url, lua_script(mix), seconds, connections, settings.client_cpu
        )
        BAD_ANSWERS.extend(
            line[len(BAD_MARK) + 1 :] for line in output.splitlines() if line.startswith(BAD_MARK)
        )
        return wrk.parse(output)
    return python_load(port, mix, seconds, connections)


#: The prefix of the lines the wrk script writes for an answer outside 2xx/3xx.
BAD_MARK = "carboy-bad-answer"
#: Those answers (status and the start of the body), for the report.
BAD_ANSWERS: list[str] = []


def _rss(workers: Sequence[psutil.Process]) -> list[float]:
    return [worker.memory_info().rss / MiB for worker in workers]


def _threads(workers: Sequence[psutil.Process]) -> list[int]:
    return [worker.num_threads() for worker in workers]


def _log_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"carboy-benchmarks-{os.getuid()}" / "logs"


def _wait_for_workers(pid: int, port: int, log: Path) -> list[psutil.Process]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ask(port, Request("GET", "/login"), timeout=2.0)
            workers = workers_of(pid)
            if len(workers) == WORKERS:
                return sorted(workers, key=lambda worker: worker.pid)
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not start {WORKERS} workers:\n{log.read_text()[-3000:]}")


def soak(key: str, settings: Settings, say: Callable[[str], None]) -> dict[str, t.Any]:
    """Serve the notes app with server *key*, load it, and return what was measured."""
    label, command = SERVERS[key]
    BAD_ANSWERS.clear()
    ensure_bytecode()
    port = free_port()
    log = _log_dir() / f"soak-{key}.log"
    with tempfile.TemporaryDirectory(prefix="carboy-soak-") as data:
        database = Path(data) / "notes.sqlite"
        env = {"CARBOY_DATABASE": str(database), "CARBOY_SECRET_KEY": "soak-secret"}
        proc = launch(command(port), log, env)
        try:
            workers = _wait_for_workers(proc.pid, port, log)
            mix = prepare(port)
            # The warm-up opens with a burst at BURST times the connections, so that each
            # worker's pools (carboy's sync-view threads under ASGI: a thread is added only
            # when all are busy, up to MAX_SYNC_THREADS) reach the size a load peak gives
            # them before memory is first read; what grows after that grows per request.
            burst = min(BURST_SECONDS, settings.warmup / 3)
            say(f"{label}: warm-up {settings.warmup:g} s ({burst:g} s at {BURST}x connections)")
            loads = [
                _load(port, mix, burst, settings, settings.connections * BURST),
                _load(port, mix, settings.warmup - burst, settings),
            ]
            time.sleep(0.5)  # let the workers settle before reading their memory
            warm = _rss(workers)
            timeline = [warm]
            threads = [_threads(workers)]
            left = settings.seconds
            while left > 0:
                run = min(SLICE, left)
                loads.append(_load(port, mix, run, settings))
                left -= run
                time.sleep(0.5)
                timeline.append(_rss(workers))
                threads.append(_threads(workers))
                say(
                    f"{label}: {settings.seconds - left:g}/{settings.seconds:g} s,"
                    f" {loads[-1].rps:.0f} req/s, RSS "
                    + ", ".join(f"{mb:.2f}" for mb in timeline[-1])
                    + " MiB, threads "
                    + ", ".join(map(str, threads[-1]))
                )
            restarted = sorted(w.pid for w in workers) != sorted(
                w.pid for w in workers_of(proc.pid)
            )
            notes = _count_notes(database)
        finally:
            stop_group(proc)
    soaked = loads[2:]
    end = timeline[-1]
    return {
        "server": key,
        "label": label,
        "command": command(0)[1:],
        "client": settings.client,
        "seconds": sum(load.seconds for load in soaked),
        "requests": sum(load.requests for load in soaked),
        "rps": sum(load.requests for load in soaked) / sum(load.seconds for load in soaked),
        "non_2xx": sum(load.non_2xx for load in loads),
        "bad_answers": list(BAD_ANSWERS),
        "socket_errors": sum(load.socket_errors for load in loads),
        "warmup_requests": loads[0].requests + loads[1].requests,
        "workers_restarted": restarted,
        "notes_stored": notes,
        "rss_warm_mb": warm,
        "rss_end_mb": end,
        "rss_timeline_mb": timeline,
        # each worker's thread count, read with each RSS reading
        "threads_timeline": threads,
        "growth_pct": [(e - w) / w * 100 for w, e in zip(warm, end, strict=True)],
        "log": str(log),
    }


def _count_notes(database: Path) -> int:
    conn = sqlite3.connect(database, timeout=30.0)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM note").fetchone()[0])
    finally:
        conn.close()


def failures(result: dict[str, t.Any], growth_limit: float) -> list[str]:
    found = []
    if result["non_2xx"]:
        found.append(
            f"{result['non_2xx']} answers outside 2xx/3xx: "
            + "; ".join(result.get("bad_answers", [])[:5])
        )
    if result["socket_errors"]:
        found.append(f"{result['socket_errors']} socket errors")
    if result["workers_restarted"]:
        found.append("a worker was restarted")
    for index, growth in enumerate(result["growth_pct"]):
        if growth >= growth_limit:
            found.append(f"worker {index + 1} RSS grew {growth:.2f}% (limit {growth_limit:g}%)")
    return found


def table(results: list[dict[str, t.Any]]) -> str:
    rows = [
        "| server | client | seconds | requests | req/s | non-2xx/3xx | socket errors"
        " | worker RSS after warm-up (MiB) | at the end (MiB) | growth |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['label']} | {r['client']} | {r['seconds']:.0f} | {r['requests']:,} "
            f"| {r['rps']:.0f} | {r['non_2xx']} | {r['socket_errors']} "
            f"| {' / '.join(f'{mb:.2f}' for mb in r['rss_warm_mb'])} "
            f"| {' / '.join(f'{mb:.2f}' for mb in r['rss_end_mb'])} "
            f"| {' / '.join(f'{g:+.2f}%' for g in r['growth_pct'])} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="load per server, after the warm-up")
    length.add_argument("--seconds", type=float, help="the same, in seconds")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma-separated: {', '.join(SERVERS)}"
    )
    parser.add_argument(
        "--client", choices=("auto", "wrk", "python"), default="auto",
        help="auto: wrk when it and taskset are installed, else the Python client",
    )  # fmt: skip
    parser.add_argument("--growth-limit", type=float, default=2.0, help="percent (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (args.minutes or 10.0) * 60
    if seconds <= 0 or args.warmup <= 0 or args.connections < 1:
        parser.error("durations and --connections must be positive")
    keys = [key.strip() for key in args.servers.split(",") if key.strip()]
    unknown = [key for key in keys if key not in SERVERS]
    if unknown or not keys:
        parser.error(f"unknown servers: {unknown} (known: {', '.join(SERVERS)})")
    client = args.client
    if client == "auto":
        client = "wrk" if wrk.available() else "python"
    elif client == "wrk" and not wrk.available():
        parser.error("wrk and taskset must be on PATH for --client wrk")
    cpus = os.cpu_count() or 1
    settings = Settings(seconds, args.warmup, args.connections, client, cpus - 1, args.growth_limit)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = [soak(key, settings, say) for key in keys]
    print(table(results))
    bad = {r["server"]: failures(r, args.growth_limit) for r in results}
    for server, problems in bad.items():
        for problem in problems:
            print(f"FAIL {server}: {problem}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "failures": bad}, indent=2) + "\n")
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
