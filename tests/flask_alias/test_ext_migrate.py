"""Flask-Migrate: ``flask db init / migrate / upgrade / downgrade`` create and drop tables."""

from __future__ import annotations

from pathlib import Path

import flask_migrate
import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The env.py that Flask-Migrate's template writes uses an API Flask-SQLAlchemy deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


class Book(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200), index=True)
    isbn: Mapped[str | None] = mapped_column(sa.String(13), unique=True)


def create_app(database: Path, migrations: Path) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{database}"
    db.init_app(app)
    migrate.init_app(app, db, directory=str(migrations))
    return app


def run(app: Flask, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


def test_cli_migration_creates_the_table(tmp_path: Path) -> None:
    database = tmp_path / "library.sqlite"
    migrations = tmp_path / "migrations"
    app = create_app(database, migrations)

    run(app, "db", "init")
    assert (migrations / "env.py").is_file()
    assert (migrations / "alembic.ini").is_file()

    output = run(app, "db", "migrate", "-m", "create books")
    assert "Detected added table 'books'" in output
    [script] = (migrations / "versions").glob("*_create_books.py")
    assert "op.create_table('books'" in script.read_text()
    # Autogenerate only compared: nothing was created yet.
    assert "books" not in sa.inspect(sa.create_engine(f"sqlite:///{database}")).get_table_names()

    run(app, "db", "upgrade")
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) == {"alembic_version", "books"}
        columns = {c["name"]: c for c in inspector.get_columns("books")}
        assert set(columns) == {"id", "title", "isbn"}
        assert columns["id"]["primary_key"] == 1
        assert isinstance(columns["title"]["type"], sa.String)
        assert columns["title"]["type"].length == 200
        assert [i["column_names"] for i in inspector.get_indexes("books")] == [["title"]]
        with engine.connect() as conn:
            revision = conn.execute(sa.text("select version_num from alembic_version")).scalar()
        assert script.name.startswith(revision)
    finally:
        engine.dispose()

    run(app, "db", "downgrade", "base")
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        assert "books" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_python_api_and_the_table_in_use(tmp_path: Path) -> None:
    database = tmp_path / "library.sqlite"
    migrations = tmp_path / "migrations"
    app = create_app(database, migrations)

    with app.app_context():
        flask_migrate.init(directory=str(migrations))
        flask_migrate.migrate(directory=str(migrations), message="books")
        flask_migrate.upgrade(directory=str(migrations))

        # The migrated table is the one the models use.
        db.session.add(Book(title="Dune", isbn="9780441013593"))
        db.session.commit()
        assert db.session.scalars(sa.select(Book.title)).all() == ["Dune"]
        db.engine.dispose()

    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select title, isbn from books")).all()
        assert rows == [("Dune", "9780441013593")]
    finally:
        engine.dispose()
