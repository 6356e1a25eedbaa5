"""A plain SQLAlchemy engine made, and used, at import: served by ``gunicorn --preload`` in
``tests/test_scale_database_pools.py``, so the arbiter's pool holds a live connection when it
forks the workers.

Environment: ``POOL_DB_URL``; ``POOL_DISPOSE`` (``"1"``, the default: the engine is registered
with :class:`carboy.scale.database.Database`, which gives each worker a new pool; ``"0"``: not,
the baseline whose workers share the arbiter's connection).

* ``GET /q``: one query on a pooled connection; answers the server's backend pid.
"""

from __future__ import annotations

import os

import sqlalchemy as sa

import carboy
from carboy.scale.database import Database

engine = sa.create_engine(os.environ["POOL_DB_URL"], pool_size=2, max_overflow=0)
with engine.connect() as conn:  # the pool now keeps one connection, made before the fork
    conn.execute(sa.text("SELECT 1"))

app = carboy.Carboy(__name__)
app.config.update(SQLALCHEMY_POOL_WORKERS=4)
if os.environ.get("POOL_DISPOSE", "1") == "1":
    Database(app).register(engine)


@app.get("/q")
def query() -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
