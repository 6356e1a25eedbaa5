"""Issue 22's proof "Pools": engines made before a fork, and the connection budget.

``served_apps/scale_db_pool_app.py`` makes a plain SQLAlchemy engine at import and uses it
there, so under ``gunicorn --preload`` the arbiter's pool holds a live connection when the 4
workers fork. Registered with :class:`~carboy.scale.database.Database`, each worker gets a new
pool: 10,000 requests, each one query, give no error (the baseline without it, recorded in
docs/scale/databases.md, shares one connection between the workers and fails). The budget check
runs in process against the machine's PostgreSQL.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

import carboy
from carboy.scale.database import Database, PoolBudgetError, pgbouncer_engine_options
from carboy.scale.database_pools import check_pool_budget, pool_capacity
from pg_servers import MACHINE_URL, machine_postgres_or_skip
from servers import Server, free_port, tool

REQUESTS = 10_000
CLIENTS = 8


def test_preloaded_engine_is_not_shared_by_workers(tmp_path: Path) -> None:
    machine_postgres_or_skip()
    port = free_port()
    cmd = [
        *tool("gunicorn"),
        *("--preload", "--bind", f"127.0.0.1:{port}", "--workers", "4", "--timeout", "30"),
        "scale_db_pool_app:app",
    ]
    env = {"POOL_DB_URL": MACHINE_URL, "POOL_DISPOSE": "1"}
    statuses: Counter[object] = Counter()
    backends: Counter[str] = Counter()
    with Server(cmd, port, tmp_path / "gunicorn.log", env) as server:
        server.wait_until_up("/q")

        def client(_: int) -> None:
            with httpx.Client(base_url=server.base_url, timeout=15) as http:
                for _ in range(REQUESTS // CLIENTS):
                    try:
                        r = http.get("/q")
                    except httpx.HTTPError as e:
                        statuses[type(e).__name__] += 1
                        continue
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        backends[r.text] += 1

        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, range(CLIENTS)))
        log = server.output()
    print(f"\npools: {dict(statuses)} from {len(backends)} server backends")
    assert statuses == Counter({200: REQUESTS})
    assert len(backends) >= 4  # one connection per worker at least, none shared
    assert "Traceback" not in log


@pytest.fixture
def engine() -> sa.Engine:
    machine_postgres_or_skip()
    return sa.create_engine(MACHINE_URL, pool_size=5, max_overflow=10)


def test_budget_warns_then_refuses(engine: sa.Engine, caplog: pytest.LogCaptureFixture) -> None:
    probe = sa.create_engine(MACHINE_URL, poolclass=sa.NullPool)
    with probe.connect() as conn:
        max_connections = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
        reserved = int(conn.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
    assert pool_capacity(engine) == 15
    fits = check_pool_budget([engine], hosts=1, workers=2)
    assert [b.ok for b in fits] == [True] and fits[0].total == 30
    assert fits[0].available == max_connections - reserved

    app = carboy.Carboy(__name__)
    app.config.update(SQLALCHEMY_POOL_HOSTS=3, SQLALCHEMY_POOL_WORKERS=4)  # 3 x 4 x 15 = 180
    with caplog.at_level(logging.WARNING, logger="carboy.scale.database"):
        Database(app).register(engine)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "exceed" in warning and "= 180" in warning

    strict = carboy.Carboy(__name__)
    strict.config.update(
        SQLALCHEMY_POOL_HOSTS=3, SQLALCHEMY_POOL_WORKERS=4, SQLALCHEMY_POOL_BUDGET="strict"
    )
    with pytest.raises(PoolBudgetError, match="180"):
        Database(strict).register(engine)
    engine.dispose()


def test_budget_of_an_unreachable_server_does_not_fail_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    with caplog.at_level(logging.WARNING, logger="carboy.scale.database"):
        [budget] = check_pool_budget([dead], workers=1000, mode="strict")
    assert budget.max_connections is None and budget.ok
    assert "Could not check" in caplog.text


def test_pgbouncer_profile_prepares_nothing() -> None:
    machine_postgres_or_skip()
    engine = sa.create_engine(MACHINE_URL, **pgbouncer_engine_options())
    with engine.connect() as conn:
        for _ in range(10):  # psycopg would prepare it server-side from the 5th run
            conn.execute(sa.text("SELECT 1 WHERE 1 = :x"), {"x": 1})
        prepared = conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar()
    engine.dispose()
    assert prepared == 0
    with pytest.raises(ValueError):
        pgbouncer_engine_options("pg8000")
