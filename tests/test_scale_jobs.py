"""Jobs after commit (carboy.scale.jobs): served by gunicorn with 4 workers, run by 2 RQ worker
processes, on the machine's PostgreSQL (a table of this run's own) and Redis (db 15).

Every request inserts a row and sends a job that looks the row up. Sent after the commit, every
job finds its row; sent at once (the baseline: what a view does without the helper), some run
before the commit and miss it. A rolled-back request sends nothing.
"""

from __future__ import annotations

import subprocess
import time
import typing as t
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import scoped_session, sessionmaker

import carboy
from carboy.scale.jobs import Jobs, current_request_id, run
from redis_servers import MACHINE_URL, machine_redis_or_skip
from servers import Server, free_port, server_env, tool

DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _counted(client: redis.Redis, prefix: str) -> tuple[int, int]:
    found, missing = client.mget(f"{prefix}:found", f"{prefix}:missing")
    return int(found or 0), int(missing or 0)


@pytest.fixture
def table() -> Iterator[str]:
    engine = create_engine(DATABASE)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # any failure to reach it
        pytest.skip(f"the machine's PostgreSQL at 127.0.0.1:5432 does not answer: {e}")
    name = f"carboy_jobs_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} (id bigserial PRIMARY KEY, mode text)"))
    try:
        yield name
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()


def test_jobs_sent_after_commit_always_find_their_row(tmp_path: Path, table: str) -> None:
    client = machine_redis_or_skip()
    prefix = f"carboy-test-jobs-{uuid.uuid4().hex[:10]}"
    env = {
        "JOBS_APP_REDIS": MACHINE_URL,
        "JOBS_APP_TABLE": table,
        "JOBS_APP_PREFIX": prefix,
        "JOBS_APP_DATABASE": DATABASE,
    }
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "4", "--timeout", "30"),
        "scale_jobs_app:app",
    ]
    worker_cmd = [*tool("carboy"), "--app", "scale_jobs_app", "jobs", "worker"]
    workers: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    try:
        with Server(cmd, port, tmp_path / "gunicorn.log", env) as server:
            server.wait_until_up("/rows?probe")  # any answer: 405 on GET
            for log in logs:
                with log.open("wb") as out:
                    workers.append(
                        subprocess.Popen(
                            worker_cmd, env=server_env(env), stdout=out, stderr=subprocess.STDOUT
                        )
                    )
            with httpx.Client(base_url=server.base_url, timeout=30) as http:

                def post(mode: str, request_id: str | None = None) -> int:
                    headers = {"X-Request-ID": request_id} if request_id else {}
                    return http.post(f"/rows?mode={mode}", headers=headers).status_code

                def wait_for_jobs(total: int) -> tuple[int, int]:
                    deadline = time.monotonic() + 90
                    while sum(counted := _counted(client, prefix)) < total:
                        assert time.monotonic() < deadline, (counted, server.output())
                        assert all(w.poll() is None for w in workers), "a job worker died"
                        time.sleep(0.05)
                    return counted

                with ThreadPoolExecutor(8) as pool:
                    statuses = list(pool.map(lambda _: post("on-commit"), range(1000)))
                assert statuses == [201] * 1000
                assert wait_for_jobs(1000) == (1000, 0)  # 1000 found, 0 missing

                # Rolled back: nothing is sent.
                with ThreadPoolExecutor(8) as pool:
                    statuses = list(pool.map(lambda _: post("rollback"), range(100)))
                assert statuses == [409] * 100
                assert post("on-commit", "req-7f3a-jobs") == 201  # a marker, sent after them
                assert wait_for_jobs(1001) == (1001, 0)  # the marker ran; 100 never came
                assert client.llen(f"rq:queue:{prefix}-queue") == 0

                # The baseline: sent before the commit, jobs run into the 20 ms before it.
                with ThreadPoolExecutor(8) as pool:
                    statuses = list(pool.map(lambda _: post("early"), range(200)))
                assert statuses == [201] * 200
                _found, missing = wait_for_jobs(1201)
                assert missing > 0, "no job sent before its commit ran early: the test cannot bite"
                print(f"baseline, sent before the commit: {missing} of 200 missed their row")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for key in client.scan_iter(match=f"*{prefix}*"):
            client.delete(key)
    # The request id of the marker request is on the log line its job wrote.
    text_out = "".join(log.read_text(errors="replace") for log in logs)
    assert "[request_id=req-7f3a-jobs] scale_jobs_app: checked row" in text_out


def test_in_process_on_commit_rollback_savepoint_and_no_transaction() -> None:
    """The helper on a plain SQLAlchemy session (SQLite in memory), jobs caught in process."""
    app = carboy.Carboy(__name__)
    app.config.update(REDIS_URL=MACHINE_URL, JOBS_QUEUE=f"carboy-test-{uuid.uuid4().hex[:8]}")
    jobs = Jobs(app)
    sent: list[tuple[object, ...]] = []
    queue = jobs.queue(app)
    engine = create_engine("sqlite://")
    make = sessionmaker(engine)
    machine_redis_or_skip()
    try:
        with app.test_request_context(headers={"X-Request-ID": "abc"}):
            with make() as session, session.begin():
                session.execute(text("SELECT 1"))
                jobs.enqueue_on_commit(session, record, 1)
                assert queue.count == 0  # held until the commit
            assert queue.count == 1
            with pytest.raises(ZeroDivisionError), make() as session, session.begin():
                session.execute(text("SELECT 1"))
                jobs.enqueue_on_commit(session, record, 2)
                1 / 0  # noqa: B018
            assert queue.count == 1  # the rolled-back job was dropped
            with make() as session:  # no transaction: nothing to wait for
                jobs.enqueue_on_commit(session, record, 3)
            assert queue.count == 2
            scoped = scoped_session(make)  # as Flask-SQLAlchemy's db.session is
            scoped.execute(text("SELECT 1"))
            jobs.enqueue_on_commit(scoped, record, 4)
            assert queue.count == 2
            scoped.commit()
            assert queue.count == 3
            scoped.remove()
            with pytest.raises(TypeError, match="module-level function"):
                jobs.enqueue_on_commit(make(), lambda: None)
        # What the worker runs: each job in an app context, its request id set.
        from carboy.scale import jobs as jobs_module

        jobs_module._worker_app = app
        for job in queue.jobs:
            run(*job.args)
        sent.extend(RECORDED)
        assert sent == [(1, "abc", True), (3, "abc", True), (4, "abc", True)]
    finally:
        queue.delete(delete_jobs=True)
        RECORDED.clear()


def test_inline_jobs_run_after_commit_in_process_without_redis(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """JOBS_INLINE: no REDIS_URL needed; each job runs right after its commit, in this process,
    in a new app context with the request id; a rollback drops it; a failing job is logged and
    the commit stands."""
    app = carboy.Carboy(__name__)
    app.config.update(JOBS_INLINE=True)
    jobs = Jobs(app)
    assert "carboy.redis" not in app.extensions  # no connection layer was made
    engine = create_engine("sqlite://")
    make = sessionmaker(engine)
    try:
        with app.test_request_context(headers={"X-Request-ID": "inline"}):
            with make() as session, session.begin():
                session.execute(text("CREATE TABLE t (n INTEGER)"))
                session.execute(text("INSERT INTO t VALUES (1)"))
                jobs.enqueue_on_commit(session, record, 1)
                assert RECORDED == []  # held until the commit
            assert RECORDED == [(1, "inline", True)]
            with pytest.raises(ZeroDivisionError), make() as session, session.begin():
                session.execute(text("INSERT INTO t VALUES (2)"))
                jobs.enqueue_on_commit(session, record, 2)
                1 / 0  # noqa: B018
            with make() as session:  # no transaction: run at once
                jobs.enqueue_on_commit(session, record, 3)
            assert RECORDED == [(1, "inline", True), (3, "inline", True)]
            with caplog.at_level("ERROR", "carboy.scale.jobs"), make() as session:
                with session.begin():
                    session.execute(text("INSERT INTO t VALUES (4)"))
                    jobs.enqueue_on_commit(session, fail, 4)
                assert session.execute(text("SELECT COUNT(*) FROM t")).scalar_one() == 2
            assert f"Inline job {__name__}:fail failed." in caplog.text
            assert "ValueError: job 4" in caplog.text
        result = app.test_cli_runner().invoke(args=["jobs", "worker", "--burst"])
        assert result.exit_code != 0 and "JOBS_INLINE" in result.output
        # A job that reads with a session of its own runs once the committed transaction has
        # given its connection back: on a pool of one connection, it does not wait for it.
        small = create_engine(
            f"sqlite:///{tmp_path / 'one.sqlite'}", pool_size=1, max_overflow=0, pool_timeout=2
        )
        POOLS.append(small)
        with app.app_context(), sessionmaker(small)() as session, session.begin():
            session.execute(text("CREATE TABLE t (n INTEGER)"))
            session.execute(text("INSERT INTO t VALUES (7)"))
            jobs.enqueue_on_commit(session, read_rows, 0)
        assert RECORDED[-1] == (7, "-", True)
    finally:
        RECORDED.clear()
        POOLS.clear()


def fail(n: int) -> None:
    raise ValueError(f"job {n}")


POOLS: list[t.Any] = []


def read_rows(index: int) -> None:
    with sessionmaker(POOLS[index])() as session:
        value = session.execute(text("SELECT n FROM t")).scalar_one()
    RECORDED.append((value, current_request_id() or "-", carboy.current_app.name == __name__))


RECORDED: list[tuple[object, ...]] = []


def record(n: int) -> None:
    RECORDED.append((n, current_request_id(), carboy.current_app.name == __name__))
