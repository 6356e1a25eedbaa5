"""The rig of issue 20 (``benchmarks/rig``): hosts in network namespaces with CPU budgets behind
HAProxy, with Redis and wrk.

The first tests check the rig's parts without privileges (HAProxy's configuration and stats,
the cgroup files on a fake tree, the worker counts). The CI subset after them needs root,
``ip``, ``haproxy``, ``wrk`` and ``redis-server`` (``.ci/run`` installs the Debian packages) and
is skipped, saying which is missing, elsewhere: two hosts behind HAProxy under a short load,
then shared state across the hosts (a session, a limit, a cached value), a rolling restart
(one host stopped with SIGTERM under load, 100 WebSockets on it), a WebSocket fan-out across
two hosts, then teardown and the cleanup of a killed run. No timing is asserted; counts are.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
import typing as t
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.rig import balance, fanout, haproxy, netns, rolling, scaling  # noqa: E402
from benchmarks.rig.cgroups import CpuGroup, Hierarchy, Throttling  # noqa: E402
from benchmarks.rig.rig import (  # noqa: E402
    Measurement,
    Rig,
    RigConfig,
    cleanup,
    leftover_runs,
    missing_prerequisites,
)
from benchmarks.rig.servers import ServerSpec  # noqa: E402
from benchmarks.scenarios import Request  # noqa: E402
from benchmarks.wrk import Load  # noqa: E402

# -- without privileges ------------------------------------------------------------------------


def test_haproxy_config_balances_round_robin_and_checks_readyz(tmp_path: Path) -> None:
    text = haproxy.config(
        "10.213.9.2", [("h1", "10.213.9.11:8000"), ("h2", "10.213.9.12:8000")], tmp_path / "s"
    )
    assert "    bind 10.213.9.2:80\n" in text
    assert "    balance roundrobin\n" in text
    assert "    option httpchk GET /readyz HTTP/1.1\n" in text
    assert "    http-check expect status 200\n" in text
    assert "    server h1 10.213.9.11:8000 check\n" in text
    assert "    server h2 10.213.9.12:8000 check\n" in text
    assert f"stats socket {tmp_path / 's'} " in text
    assert "inter 250ms" in text
    assert "    timeout tunnel 3600s\n" in text  # WebSockets through it are not cut at 30 s


def test_haproxy_stats_are_read_per_server() -> None:
    csv_text = (
        "# pxname,svname,stot,status,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,\n"
        "web,FRONTEND,10,OPEN,0,9,0,1,0,0,\n"
        "app,h1,5,UP,0,4,0,1,0,0,\n"
        "app,h2,6,DOWN,0,6,0,0,0,0,\n"
        "app,BACKEND,11,UP,0,10,0,1,0,0,\n"
    )
    stats = haproxy.parse_stats(csv_text)
    assert set(stats) == {"h1", "h2"}
    assert (stats["h1"].responses_2xx, stats["h1"].responses_other, stats["h1"].up) == (4, 1, True)
    assert (stats["h2"].responses_2xx, stats["h2"].up) == (6, False)


def _fake_v1(root: Path) -> None:
    for name in ("cpu", "cpuacct"):
        (root / name).mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "cpuacct" / "cpuacct.usage").write_text("0\n")


def _prepare_group(group: CpuGroup, stat: str, usage: str | None = None) -> None:
    for path in group.dirs:
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").write_text("")
    (group.path / "cpu.stat").write_text(stat)
    if usage is not None:
        (group.dirs[-1] / "cpuacct.usage").write_text(usage)


def test_cgroup_v1_budget_usage_and_throttling(tmp_path: Path) -> None:
    _fake_v1(tmp_path)
    hierarchy = Hierarchy.detect(tmp_path)
    assert (hierarchy.version, hierarchy.cpuacct) == (1, tmp_path / "cpuacct")
    hierarchy.create_run("cbr77")
    group = hierarchy.group("cbr77", "h1")
    stat = "nr_periods 40\nnr_throttled 30\nthrottled_time 2500000000\n"
    _prepare_group(group, stat, usage="1500000000\n")
    group.create(0.15, 10_000)
    assert (group.path / "cpu.cfs_quota_us").read_text() == "1500"
    assert (group.path / "cpu.cfs_period_us").read_text() == "10000"
    assert group.budget() == 0.15
    assert group.usage_seconds() == 1.5
    assert group.throttling() == Throttling(40, 30, 2.5)
    assert group.throttling() - Throttling(10, 5, 0.5) == Throttling(30, 25, 2.0)
    group.set_budget(None)
    assert group.budget() is None
    with pytest.raises(ValueError):
        group.set_budget(0.05, 10_000)  # 500 us: under the kernel's 1 ms minimum
    hierarchy.set_shares("cbr77", 4096)
    assert (tmp_path / "cpu" / "cbr77" / "cpu.shares").read_text() == "4096"


def test_cgroup_v2_writes_cpu_max_and_enables_the_controller(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory\n")
    hierarchy = Hierarchy.detect(tmp_path)
    assert hierarchy.version == 2
    (tmp_path / "cbr5").mkdir()
    (tmp_path / "cbr5" / "cgroup.subtree_control").write_text("")
    hierarchy.create_run("cbr5")
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"
    assert (tmp_path / "cbr5" / "cgroup.subtree_control").read_text() == "+cpu"
    group = hierarchy.group("cbr5", "h2")
    stat = "usage_usec 2000000\nnr_periods 8\nnr_throttled 6\nthrottled_usec 300000\n"
    _prepare_group(group, stat)
    group.create(0.2, 100_000)
    assert (group.path / "cpu.max").read_text() == "20000 100000"
    assert group.budget() == 0.2
    assert group.usage_seconds() == 2.0
    assert group.throttling() == Throttling(8, 6, 0.3)
    group.set_budget(None)
    assert (group.path / "cpu.max").read_text() == "max 100000"
    hierarchy.set_shares("cbr5", 2048)
    assert (tmp_path / "cbr5" / "cpu.weight").read_text() == "200"


def test_no_cpu_cgroup_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no cpu cgroup"):
        Hierarchy.detect(tmp_path)


def test_wrap_puts_the_process_in_the_group_before_it_execs(tmp_path: Path) -> None:
    _fake_v1(tmp_path)
    hierarchy = Hierarchy.detect(tmp_path)
    hierarchy.create_run("cbr3")
    group = hierarchy.group("cbr3", "h1")
    _prepare_group(group, "")
    command = group.wrap(["sh", "-c", "echo $$"])
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    for procs in group.procs_files:  # the pid that ran the command, in both hierarchies
        assert procs.read_text().strip() == out


def test_names_fit_linux_interface_names() -> None:
    net = netns.Network("cbr254", 254)
    assert net.address("lb") == "10.213.254.2"
    assert net.address("h4") == "10.213.254.14"
    assert net.namespace("h4") == "cbr254-h4"
    assert len("cbr254vh200") <= 15


def test_server_commands() -> None:
    gunicorn = ServerSpec("gunicorn", workers=4, reuse_port=True).command("m:app", "carboy")
    assert gunicorn[-1] == "m:app"
    assert "--reuse-port" in gunicorn
    assert gunicorn[gunicorn.index("--workers") + 1] == "4"
    assert gunicorn[gunicorn.index("--bind") + 1] == "0.0.0.0:8000"
    uvicorn = ServerSpec("uvicorn").command("m:app", "flask")
    assert uvicorn[uvicorn.index("--interface") + 1] == "wsgi"
    granian = ServerSpec("granian", threads=8).command("m:app", "carboy")
    assert granian[granian.index("--blocking-threads") + 1] == "8"
    with pytest.raises(ValueError):
        ServerSpec("granian-asgi").command("m:app", "flask")
    with pytest.raises(ValueError):
        ServerSpec("nginx")


def test_worker_counts_from_wrk_output() -> None:
    script = balance.counting_script(Request("GET", "/"))
    assert 'headers["x-rig-worker"]' in script
    assert "function done(" in script
    out = "Requests/sec: 10\nWORKER h1/10 7\nWORKER h1/11 3\nWORKER h1/10 1\n"
    assert balance.parse_counts(out) == {"h1/10": 8, "h1/11": 3}
    assert balance.spread([30, 10, 10, 10]) == {
        "max_over_min": 3.0,
        "cv": pytest.approx(0.577, abs=0.001),
        "busiest_share": 0.5,
    }
    assert balance.spread([5, 0])["max_over_min"] == float("inf")


def _measurement(rps: float, hosts: int) -> Measurement:
    return Measurement(
        load=Load(int(rps * 4), 4.0, rps, 1.0, 2.0, 0, 0),
        seconds=4.0,
        hosts_enabled=hosts,
        connections=16 * hosts,
        haproxy_cores=0.1 * hosts,
        redis_cores=0.0,
        wrk_cores=0.05,
        host_cores={f"h{i}": 0.1 for i in range(1, hosts + 1)},
        host_budget_used={f"h{i}": 1.0 for i in range(1, hosts + 1)},
        host_throttled={f"h{i}": 0.9 for i in range(1, hosts + 1)},
        host_throttled_periods={f"h{i}": (90, 100) for i in range(1, hosts + 1)},
        served={f"h{i}": int(rps) for i in range(1, hosts + 1)},
        machine_busy_cores=0.5,
        load_average=(1.0, 1.0, 1.0),
    )


def test_scaling_ratios_per_repetition_and_of_medians() -> None:
    runs = {
        1: [_measurement(r, 1) for r in (100, 110, 90)],
        2: [_measurement(r, 2) for r in (200, 200, 200)],
        4: [_measurement(r, 4) for r in (300, 400, 380)],
    }
    summary = scaling.summarise(runs, scaling.ScalingSettings())
    assert summary["by_hosts"]["1"]["rps_summary"]["median"] == 100
    assert summary["ratios"]["2"]["of_medians"] == 2.0
    assert summary["ratios"]["2"]["met"] is True
    assert summary["ratios"]["2"]["per_repetition"] == [2.0, 200 / 110, 200 / 90]
    assert summary["ratios"]["4"]["of_medians"] == 3.8
    assert summary["ratios"]["4"]["per_repetition"][0] == 3.0
    assert summary["saturation"] == []
    text = scaling.table({"series": {"carboy/hello": summary}})
    assert "| carboy/hello | 100 (90-110) | 200 (200-200) | 380 (300-400) |" in text
    assert "3.80 ✓" in text


def test_rolling_drain_outlasts_haproxy_taking_a_host_out() -> None:
    checks = haproxy.Checks()
    # /readyz turns 503 at the SIGTERM: HAProxy needs up to one inter, then fall - 1 fastinters,
    # each check waiting at most its timeout (1 s), to mark the host DOWN
    window = (checks.inter_ms + (checks.fall - 1) * checks.fastinter_ms) / 1000 + 1.0
    assert window < rolling.DRAIN_S
    config = rolling.config("gunicorn")
    assert config.server.graceful_s > rolling.DRAIN_S + rolling.STOP_S
    assert rolling.STOP_S > rolling.EXIT_BOUND_S - rolling.DRAIN_S  # a forced exit misses the bound
    assert dict(config.env) == {"RIG_DRAIN_SECONDS": "2.5", "RIG_STOP_SECONDS": "5.0"}


# -- the CI subset: real namespaces, HAProxy, Redis and wrk -------------------------------------

MISSING = missing_prerequisites()
needs_rig = pytest.mark.skipif(bool(MISSING), reason="the rig needs: " + "; ".join(MISSING))


def _run_traces(run: str) -> list[str]:
    """What of *run* is still on the machine."""
    traces = [ns for ns in netns.namespaces() if ns.startswith(run + "-")]
    traces += [link for link in netns.links() if link == run or link.startswith(run + "v")]
    traces += [str(p) for p in Hierarchy.detect().run_dirs(run) if p.exists()]
    if netns.run_dir(run).exists():
        traces.append(str(netns.run_dir(run)))
    return traces


def _form(note: str) -> dict[str, t.Any]:
    return {
        "method": "POST",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "body": urlencode({"note": note}).encode(),
    }


@needs_rig
def test_two_hosts_behind_haproxy_share_sessions_limits_and_cache() -> None:
    limit = 7
    config = RigConfig(hosts=2, app="carboy_shared", cpus=0.5, limit=f"{limit}/minute")
    with Rig(config) as rig:
        run = rig.run
        # each host's server (master and workers) runs in its own cgroup, under its budget
        for host in rig.hosts:
            assert host.process is not None
            assert host.process.pid in host.group.pids()
            assert host.group.budget() == 0.5

        # hello: a short bounded load through HAProxy, no errors, both hosts served
        before = rig.served()
        m = rig.load(Request("GET", "/"), seconds=3, connections=16)
        assert m.load.requests > 0
        assert (m.load.non_2xx, m.load.socket_errors) == (0, 0)
        served = {name: n - before[name] for name, n in rig.served().items()}
        assert served["h1"] > 0 and served["h2"] > 0, served
        assert sum(m.host_throttled_periods[h][1] for h in ("h1", "h2")) > 0  # budget active

        # a session written through h1 is read through h2 (and through HAProxy)
        note = f"note-{uuid.uuid4().hex}"
        written = rig.ask("/rig/note", host="h1", **_form(note))
        assert written.status == 200
        cookie = written.header("set-cookie")
        assert cookie is not None
        headers = {"Cookie": cookie.split(";", 1)[0]}
        read = rig.ask("/rig/note", host="h2", headers=headers)
        assert (read.status, read.body.decode()) == (200, note)
        assert rig.ask("/rig/note", headers=headers).body.decode() == note

        # a limit of 7/minute across both hosts lets exactly 7 of 30 concurrent requests in
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            statuses = list(
                pool.map(lambda i: rig.ask("/rig/limited", host=f"h{i % 2 + 1}").status, range(30))
            )
        assert statuses.count(200) == limit, statuses
        assert statuses.count(429) == 30 - limit, statuses

        # a cached value is computed once for 40 concurrent requests across both hosts
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            bodies = list(
                pool.map(lambda i: rig.ask("/rig/cached", host=f"h{i % 2 + 1}").body, range(40))
            )
        assert set(bodies) == {b"the cached value"}
        assert rig.ask("/rig/computed", host="h1").body == b"1"
        assert rig.ask("/rig/computed", host="h2").body == b"1"

        # the cleanup command leaves a run whose owner still runs alone
        assert cleanup()[run].startswith("in use")
        assert rig.ask("/", host="h1").status == 200

    assert _run_traces(run) == []


# -- the rolling restart (issue 20: carboy.scale.health behind HAProxy) ----------------------


# CI runs granian (WSGI) and uvicorn (ASGI, with WebSockets), about 10 s each with three hosts;
# `python -m benchmarks.rig rolling --servers gunicorn,uvicorn,granian` runs all three
# (docs/scale/deploying-rig.md, "Rolling restart").
@needs_rig
@pytest.mark.parametrize("kind", ["granian", "uvicorn"])
def test_rolling_restart_loses_nothing(kind: str) -> None:
    with Rig(rolling.config(kind, hosts=3)) as rig:
        run = rig.run
        asgi = rig.config.server.interface == "asgi"
        result = rolling.restart_one(rig, websockets=rolling.WEBSOCKETS if asgi else 0)
        print("\n" + result.line())
        assert result.errors == []
        # wrk through HAProxy, across the SIGTERM: every answer 2xx, no socket error
        assert result.load.requests > 0
        assert (result.load.non_2xx, result.load.socket_errors) == (0, 0), result.line()
        # the stopped host served before the SIGTERM, the others throughout
        assert all(result.served[h] > 0 for h in ("h1", "h2", "h3")), result.served
        # the 2-second requests in flight on the stopped host completed
        assert result.slow_statuses == [200, 200, 200]
        # HAProxy took it out (/readyz 503) before it stopped; it stopped within drain + 2 s
        assert result.down_after is not None and result.exited_after is not None
        assert result.down_after < rolling.DRAIN_S < result.exited_after < rolling.EXIT_BOUND_S
        # WebSockets open on the stopped host (ASGI) were closed with 1012, service restart
        assert result.ws_closes == ([1012] * rolling.WEBSOCKETS if asgi else [])
        assert result.restarted
        stats = haproxy.stats(rig.stats_socket)
        assert all(stats[h].up for h in ("h1", "h2", "h3"))
    assert _run_traces(run) == []


# -- WebSocket fan-out across hosts (issue 20's scenario, issue 21's "across hosts") -----------


def test_fanout_settings_need_an_asgi_server_and_bound_the_run() -> None:
    with pytest.raises(ValueError, match="ASGI"):
        fanout.FanoutSettings(server="gunicorn")
    settings = fanout.FanoutSettings(hosts=(1, 2, 4), messages=1000, rate=100, settle_s=30)
    assert settings.config().hosts == 4
    assert settings.config().app == "carboy_realtime"
    assert settings.bound_s == fanout.CONNECT_TIMEOUT_S + 10 + 30 + 30
    assert fanout.FanoutSettings(server="granian-asgi").config().server.extra == ("--ws",)


# 2 hosts, 40 clients through HAProxy, 200 messages at 100/s through h1 (about 10 s in all);
# `python -m benchmarks.rig fanout` runs 1, 2 and 4 hosts with 300 clients and 1,000 messages
# (docs/scale/deploying-rig.md, "WebSocket fan-out"). Correctness only: no timing is asserted.
@needs_rig
def test_fanout_across_two_hosts_delivers_every_message_in_order() -> None:
    settings = fanout.FanoutSettings(hosts=(2,), clients=40, messages=200, rate=100, settle_s=15)
    with Rig(settings.config()) as rig:
        run = rig.run
        result = fanout.measure(rig, settings, 2, "ci")
        print("\n" + result.line())
        assert result.errors == []
        # every client connected, through HAProxy, and the clients are on both hosts
        assert result.connected == 40
        assert set(result.per_host) == {"h1", "h2"}, result.per_host
        assert sum(result.per_host.values()) == 40
        # each got all 200, in order, once
        assert (result.lost, result.out_of_order, result.duplicates) == (0, 0, 0)
        assert result.complete == 40
        assert result.deliveries == 40 * 200
        assert result.ok
        # the clients ran in the client namespace, and in its cgroup (its CPU is counted there)
        assert rig.network is not None
        assert result.sources == [rig.network.address("client")]
        assert result.cpu_s["clients"] > 0
    assert _run_traces(run) == []


def _start_up(tmp_path: Path, name: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m benchmarks.rig up`` with one host; returns it and its run name, once up."""
    out = tmp_path / f"{name}.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.rig", "up", "--hosts", "1", "--no-redis",
             "--cpus", "0.3", "--for-seconds", "120"],
            cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while "Ctrl-C" not in out.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"rig up did not come up:\n{out.read_text()}")
        time.sleep(0.1)
    run = out.read_text().split("run ", 1)[1].split(":", 1)[0]
    return proc, run


@needs_rig
def test_sigterm_tears_down_and_cleanup_removes_a_killed_run(tmp_path: Path) -> None:
    terminated, run_a = _start_up(tmp_path, "a")
    killed, run_b = _start_up(tmp_path, "b")
    try:
        assert _run_traces(run_a) and _run_traces(run_b)

        terminated.send_signal(signal.SIGTERM)
        assert terminated.wait(60) == 128 + signal.SIGTERM
        assert _run_traces(run_a) == []

        # SIGKILL: no teardown runs; the namespaces, cgroups and processes stay behind
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)
        assert run_b in leftover_runs()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.rig", "cleanup"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{run_b}: removed" in proc.stdout
        assert _run_traces(run_b) == []
    finally:
        for proc in (terminated, killed):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if _run_traces(run_b) or _run_traces(run_a):
            subprocess.run([sys.executable, "-m", "benchmarks.rig", "cleanup"], cwd=ROOT)
