"""An app whose requests insert a row and send a job that reads it (tests/test_scale_jobs.py).

``POST /rows?mode=...``: ``on-commit`` sends the job with ``Jobs.enqueue_on_commit`` (after the
commit); ``early`` sends it at once, before the commit (the race the helper removes);
``rollback`` sends it on commit, then rolls the transaction back. Each request waits 20 ms
between sending and committing, as a view doing more work would. The job counts whether it
found its row, in Redis.
"""

from __future__ import annotations

import logging
import os
import time

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

import carboy
from carboy import request
from carboy.scale import jobs as jobs_module
from carboy.scale.jobs import Jobs

REDIS_URL = os.environ["JOBS_APP_REDIS"]
TABLE = os.environ["JOBS_APP_TABLE"]
PREFIX = os.environ["JOBS_APP_PREFIX"]
engine = create_engine(os.environ["JOBS_APP_DATABASE"], pool_size=2, max_overflow=2)
Session = sessionmaker(engine)

app = carboy.Carboy(__name__)
app.config.update(REDIS_URL=REDIS_URL, JOBS_QUEUE=f"{PREFIX}-queue")
jobs = Jobs(app)
counts = redis.Redis.from_url(REDIS_URL)


class Undo(Exception):
    pass


@app.post("/rows")
def create() -> tuple[str, int]:
    mode = request.args.get("mode", "on-commit")
    try:
        with Session() as session, session.begin():
            row = session.execute(
                text(f"INSERT INTO {TABLE} (mode) VALUES (:mode) RETURNING id"), {"mode": mode}
            ).scalar_one()
            if mode == "early":
                jobs.queue().enqueue(jobs_module.run, f"{__name__}:check_row", None, (row,), {})
            else:
                jobs.enqueue_on_commit(session, check_row, row)
            time.sleep(0.02)
            if mode == "rollback":
                raise Undo
    except Undo:
        return "rolled back", 409
    return str(row), 201


def check_row(row: int) -> None:
    with Session() as session:
        found = session.execute(text(f"SELECT 1 FROM {TABLE} WHERE id = :id"), {"id": row}).first()
    counts.incr(f"{PREFIX}:{'found' if found else 'missing'}")
    logging.getLogger("scale_jobs_app").warning("checked row %s: found=%s", row, bool(found))
