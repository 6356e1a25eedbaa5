"""A Flask-SQLAlchemy app with Flask-Migrate (both unchanged, under the ``flask`` alias) and
:class:`carboy.scale.database.Database`, whose CLI ``tests/test_scale_database_migrate.py``
runs from several processes at once: ``carboy --app scale_db_migrate_app locked-upgrade`` and
the plain ``... db upgrade``.

Environment: ``MIGRATE_DB_URL`` (the database) and ``MIGRATE_DIR`` (the migrations folder).
"""

from __future__ import annotations

import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from carboy.scale.database import Database

app = Flask(__name__)
app.config.update(
    SQLALCHEMY_DATABASE_URI=os.environ["MIGRATE_DB_URL"],
    SQLALCHEMY_POOL_BUDGET=None,
)
db = SQLAlchemy(app)
Migrate(app, db, directory=os.environ["MIGRATE_DIR"])
Database(app, db)
