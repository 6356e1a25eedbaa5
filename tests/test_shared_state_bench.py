"""Smoke tests of issue 19's shared-state benchmark (``benchmarks/shared_state.py``).

The round-trip counter is checked against the machine's Redis in this process; every stack's
answers and round trips are checked by the benchmark's own ``--check`` in a subprocess (it
imports the real Flask, which must not meet the ``flask`` alias other tests install); a tiny
timed run needs wrk. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import redis.asyncio

from redis_servers import machine_redis_or_skip

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.shared_state import RoundTrips, parse_commands  # noqa: E402

URL = "redis://127.0.0.1:6379/14"


def run_bench(tmp_path: Path, *args: str, timeout: float = 120) -> dict[str, object]:
    out = tmp_path / "shared.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "shared_state.py"), "--json", str(out)]
    proc = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results: dict[str, object] = json.loads(out.read_text())
    return results


def test_parse_commands_reads_what_redis_py_packs() -> None:
    conn = redis.connection.Connection()
    one = b"".join(conn.pack_command("GET", "k"))
    many = b"".join(conn.pack_commands([("SET", "k", "v\r\n"), ("PTTL", "k")]))
    assert parse_commands(one) == [[b"GET", b"k"]]
    assert parse_commands(many) == [[b"SET", b"k", b"v\r\n"], [b"PTTL", b"k"]]
    with pytest.raises(ValueError):
        parse_commands(b"GET k\r\n")


def test_round_trip_counter_counts_trips_not_commands() -> None:
    machine_redis_or_skip()
    client = redis.Redis.from_url(URL)
    key = f"ssbench-test-{os.getpid()}"
    script = client.register_script("return redis.call('GET', KEYS[1])")
    try:
        client.ping()  # connect (and its handshake) before counting
        script([key])  # loads the script once (EVALSHA, NOSCRIPT, EVAL)
        with RoundTrips() as counter:
            client.get(key)
            pipe = client.pipeline(transaction=False)
            pipe.set(key, "1").pttl(key).get(key)
            pipe.execute()
            script([key])
        assert counter.trips == ["GET", "SET+PTTL+GET", f"EVALSHA {script.sha[:10]}"]
        assert counter.per_request(3)["round_trips"] == 1.0

        async def asynchronous() -> list[str]:
            aclient = redis.asyncio.Redis.from_url(URL)
            try:
                await aclient.ping()
                with RoundTrips() as acounter:
                    await aclient.get(key)
                    await aclient.pttl(key)
                return acounter.trips
            finally:
                await aclient.aclose()

        assert asyncio.run(asynchronous()) == ["GET", "PTTL"]
        # Outside the block nothing is counted any more.
        client.get(key)
        assert len(counter.trips) == 3
    finally:
        client.delete(key)
        client.close()


def test_every_stack_answers_the_scenario_and_its_round_trips_are_named(
    tmp_path: Path,
) -> None:
    machine_redis_or_skip()
    results = run_bench(tmp_path, "--check", "--requests", "20", "--profiled", "20")
    inproc = results["inprocess"]
    assert isinstance(inproc, dict)
    assert set(inproc) == {"carboy-wsgi", "flask", "carboy-async", "carboy-sync"}
    for key, entry in inproc.items():
        assert entry["fragment_computed"] == 1, key  # computed once, then hits
        trips = entry["round_trips"]
        assert trips == int(trips) and trips > 0, (key, trips)
        assert sum(entry["by_trip"].values()) == trips, key
        assert entry["calls"] > 0 and entry["us_wall"] > 0, key
    # Flask-Session writes the whole session back on every request (SESSION_REFRESH_EACH_
    # REQUEST); carboy's read-only request writes nothing and reads each store once.
    assert inproc["flask"]["by_trip"].get("SET") == 1.0
    for key in ("carboy-wsgi", "carboy-async", "carboy-sync"):
        names = inproc[key]["by_trip"]
        assert not any(name.startswith(("SET", "HSET")) for name in names), (key, names)
        assert inproc[key]["round_trips"] < inproc["flask"]["round_trips"], key
    # Issue 19: at most 2 round trips (the limiter's trip loads the session), with sync hooks
    # and with async ones (on the asyncio client).
    for key in ("carboy-wsgi", "carboy-sync", "carboy-async"):
        assert inproc[key]["by_trip"] == {
            "EVALSHA check_limits+EVALSHA session_load": 1.0,
            "GET": 1.0,
        }, key
    # Only the run's own keys were made, and they are gone.
    client = machine_redis_or_skip()
    store = redis.Redis.from_url(URL)
    try:
        for prefix in results["prefixes"]:  # type: ignore[union-attr]
            assert not list(store.scan_iter(match=f"*{prefix}*", count=1000)), prefix
    finally:
        store.close()
        client.close()


@pytest.mark.skipif(
    shutil.which("wrk") is None or shutil.which("taskset") is None,
    reason="the timed part needs wrk and taskset on PATH (Debian packages wrk, util-linux)",
)
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores (server and wrk)")
def test_tiny_timed_run_serves_every_stack_without_errors(tmp_path: Path) -> None:
    machine_redis_or_skip()
    results = run_bench(
        tmp_path,
        "--requests", "5", "--profiled", "0", "--duration", "1", "--repeats", "1",
        "--warmup", "0", "--threads", "1,4",
    )  # fmt: skip
    by_threads = results["endtoend"]
    assert isinstance(by_threads, dict)
    assert set(by_threads) == {"1", "4"}
    served = by_threads["1"]
    assert set(served) == {"carboy-wsgi", "flask", "carboy-async", "carboy-sync"}
    # More granian WSGI threads: the WSGI pair again (granian ASGI runs one Python thread).
    assert set(by_threads["4"]) == {"carboy-wsgi", "flask"}
    for threads, stacks in by_threads.items():
        for key, entry in stacks.items():
            assert entry["errors"] == 0 and entry["requests"] > 0, (threads, key, entry)
            wsgi = entry["server"] == "granian-wsgi"
            assert entry["threads"] == (int(threads) if wsgi else 1), (threads, key)
        assert stacks["carboy-wsgi"]["ratio_to"] == "flask"
    assert served["carboy-async"]["ratio_to"] == "carboy-sync"
