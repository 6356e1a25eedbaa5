"""A Flask-SQLAlchemy 3.1 app (unchanged Flask code, run under the ``flask`` alias) whose reads
are routed by :class:`carboy.scale.database.Database`; served by gunicorn in
``tests/test_scale_database.py``.

Environment: ``DB_PRIMARY_URL``, ``DB_REPLICA_URL`` and ``DB_RYW`` (``lsn``, ``time`` or
``off``: ``SQLALCHEMY_READ_YOUR_WRITES``).

* ``POST /notes``: inserts a note, commits; answers its id;
* ``GET /notes/<id>``: one query that reads the note and ``pg_is_in_recovery()`` of the server
  it ran on; 200 ``{"found": true, "replica": ...}`` or 404 ``{"found": false, ...}``;
* ``GET /ready``: :func:`carboy.scale.database.replica_health`.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from carboy.scale.database import Database, replica_health


class Base(DeclarativeBase):
    pass


app = Flask(__name__)
ryw = os.environ.get("DB_RYW", "lsn")
app.config.update(
    SECRET_KEY="scale-db-test",
    SQLALCHEMY_DATABASE_URI=os.environ["DB_PRIMARY_URL"],
    SQLALCHEMY_REPLICA_URIS=[os.environ["DB_REPLICA_URL"]],
    SQLALCHEMY_READ_YOUR_WRITES=None if ryw == "off" else ryw,
    SQLALCHEMY_REPLICA_CHECK_INTERVAL=0.25,
    SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 2, "max_overflow": 2},
    SQLALCHEMY_POOL_WORKERS=4,
)
db = SQLAlchemy(app, model_class=Base)


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.Text)


Database(app, db)


@app.post("/notes")
def create() -> dict[str, object]:
    note = Note(body=f"note of {os.getpid()}")
    db.session.add(note)
    db.session.commit()
    return {"id": note.id, "pid": os.getpid()}


@app.get("/notes/<int:note_id>")
def read(note_id: int) -> tuple[dict[str, object], int]:
    body = sa.select(Note.body).where(Note.id == note_id).scalar_subquery()
    on_replica, found = db.session.execute(sa.select(sa.func.pg_is_in_recovery(), body)).one()
    answer = {"found": found is not None, "replica": on_replica, "pid": os.getpid()}
    return answer, 200 if found is not None else 404


@app.get("/ready")
def ready() -> dict[str, object]:
    return replica_health()
