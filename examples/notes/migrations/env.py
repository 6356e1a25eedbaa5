"""Alembic's entry point for the notes app: migrate the app's own database.

Flask-Migrate runs this inside an app context of ``examples.notes``; the database is the one
Flask-SQLAlchemy is configured with (``DATABASE_URL`` or ``DATABASE``), and the models'
metadata is the target of ``carboy --app examples.notes db migrate`` (autogenerate).
"""

from __future__ import annotations

import typing as t

from alembic import context
from flask import current_app

config = context.config
extension = current_app.extensions["migrate"]
engine = extension.db.engine
metadata = extension.db.metadata


def skip_empty_autogenerate(ctx: t.Any, revision: t.Any, directives: list[t.Any]) -> None:
    """Write no revision file when autogenerate finds nothing to change."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []


def offline() -> None:
    """``--sql``: print the migration's SQL instead of running it."""
    context.configure(
        url=engine.url.render_as_string(hide_password=False),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def online() -> None:
    options = dict(extension.configure_args)
    options.setdefault("process_revision_directives", skip_empty_autogenerate)
    options.setdefault("render_as_batch", engine.dialect.name == "sqlite")  # SQLite's ALTER
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, **options)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    offline()
else:
    online()
