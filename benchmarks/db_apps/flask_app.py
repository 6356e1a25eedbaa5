"""The database scenarios on Flask 3.1 with Flask-SQLAlchemy 3.1 (the real Flask), written as
Flask-SQLAlchemy's documentation writes apps: models on ``db.Model``, ``db.session`` for the
request (removed at the end of the app context), ``db.session.get`` by primary key, and a
commit that flushes the changed objects. The engine's pool holds
:func:`~benchmarks.db_apps.common.pool_size` connections, no overflow. Built on first access
of :data:`wsgi`.
"""

from __future__ import annotations

import typing as t

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from . import common


def create_app() -> t.Any:
    from flask import Flask, render_template, request
    from flask_sqlalchemy import SQLAlchemy

    class Base(DeclarativeBase):
        pass

    app = Flask("dbbench_flask", template_folder=str(common.TEMPLATE_DIR))
    app.config["SQLALCHEMY_DATABASE_URI"] = common.sqlalchemy_url()
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        "pool_size": common.pool_size(),
        "max_overflow": 0,
    }
    db = SQLAlchemy(app, model_class=Base)
    schema = common.schema()

    class World(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "world"
        __table_args__ = {"schema": schema}
        id: Mapped[int] = mapped_column(primary_key=True)
        randomnumber: Mapped[int]

        def as_dict(self) -> dict[str, int]:
            return {"id": self.id, "randomNumber": self.randomnumber}

    class Fortune(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "fortune"
        __table_args__ = {"schema": schema}
        id: Mapped[int] = mapped_column(primary_key=True)
        message: Mapped[str]

    @app.get("/db")
    def single() -> dict[str, int]:
        return db.session.get(World, common.random_id()).as_dict()  # type: ignore[no-any-return]

    @app.get("/queries")
    def queries() -> list[dict[str, int]]:
        ids = common.random_ids(common.queries(request.args.get("queries")))
        return [db.session.get(World, i).as_dict() for i in ids]

    @app.get("/fortunes")
    def fortunes() -> str:
        rows = list(db.session.execute(db.select(Fortune)).scalars())
        rows.append(Fortune(id=common.ADDED_FORTUNE[0], message=common.ADDED_FORTUNE[1]))
        rows.sort(key=lambda f: f.message)
        return render_template(common.TEMPLATE_NAME, fortunes=rows)

    @app.get("/updates")
    def updates() -> list[dict[str, int]]:
        ids = common.random_ids(common.queries(request.args.get("queries")))
        worlds = [db.session.get(World, i) for i in ids]
        for world in worlds:
            world.randomnumber = common.random_number()
        answer = [w.as_dict() for w in worlds]  # before the commit expires the objects
        # The flush sorts the UPDATEs by primary key, and sends them as one executemany.
        db.session.commit()
        return answer

    return app


def __getattr__(name: str) -> t.Any:
    """``wsgi``, built on first access."""
    if name != "wsgi":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = create_app()
    globals()[name] = app
    return app
