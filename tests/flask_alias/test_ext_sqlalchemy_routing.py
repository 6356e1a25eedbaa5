"""Flask-SQLAlchemy 3.1 keeps working, unchanged, with carboy.scale.database's Database on it:
its session class gains routing, bind keys still pick their engines, and an app without
replicas (SQLite here) behaves as before. Routing to real replicas is proven in
tests/test_scale_database.py (a PostgreSQL primary and replica, under gunicorn)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from carboy.scale.database import Database, RoutingSession, use_replica
from carboy.scale.database_routing import RoutingMixin


class Base(DeclarativeBase):
    pass


def test_flask_sqlalchemy_session_routes_and_still_works(tmp_path: Path) -> None:
    db = SQLAlchemy(model_class=Base)

    class Book(db.Model):  # type: ignore[name-defined,misc]
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(sa.String(80))

    class Tag(db.Model):  # type: ignore[name-defined,misc]
        __bind_key__ = "tags"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(sa.String(80))

    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'main.db'}",
        SQLALCHEMY_BINDS={"tags": f"sqlite:///{tmp_path / 'tags.db'}"},
    )
    db.init_app(app)
    Database(app, db)

    @app.post("/books/<title>")
    def add(title: str) -> dict[str, int]:
        book = Book(title=title)
        db.session.add_all([book, Tag(name=title)])
        db.session.commit()
        return {"id": book.id}

    @app.get("/books")
    def books() -> dict[str, list[str]]:
        with use_replica():  # no replicas: the primary answers
            titles = db.session.scalars(sa.select(Book.title).order_by(Book.id)).all()
        return {"titles": list(titles), "tags": [t.name for t in Tag.query.all()]}

    with app.app_context():
        db.create_all()
        assert isinstance(db.session(), RoutingMixin)
        assert db.session.get_bind(mapper=Tag).url.database.endswith("tags.db")
    client = app.test_client()
    assert client.post("/books/dune").json == {"id": 1}
    assert client.post("/books/emma").status_code == 200
    answer = client.get("/books")
    assert answer.json == {"titles": ["dune", "emma"], "tags": ["dune", "emma"]}
    assert "carboy_ryw" not in answer.headers.get("Set-Cookie", "")
    assert issubclass(RoutingSession, RoutingMixin)
