"""A small multi-user notes service, written as an ordinary Flask-style app on carboy.

Run it with the development server::

    carboy --app examples.notes init-db   # optional: the schema is created on first start
    carboy --app examples.notes run

or under gunicorn::

    gunicorn 'examples.notes:create_app()'

Settings come, in increasing priority, from the built-in defaults, ``<instance>/config.py`` and
``CARBOY_*`` environment variables (``CARBOY_SECRET_KEY``, ``CARBOY_DATABASE``...). By default
the notes live in memory (SQLite's ``:memory:``) until the process ends; set ``DATABASE`` to a
file path to keep them, and do so for a server with more than one worker process, as each
process has its own memory.

Shared state: set ``REDIS_URL`` (``CARBOY_REDIS_URL=redis://127.0.0.1:6379/0``, with carboy's
``redis`` extra installed: ``pip install 'carboy[redis]'``) and the sessions, the cached
``/api/stats`` page and the login rate limit (``LOGIN_RATE_LIMIT``, 10 per minute per address)
live in Redis, shared by every worker and host::

    CARBOY_REDIS_URL=redis://127.0.0.1:6379/0 CARBOY_DATABASE=notes.sqlite \\
        gunicorn --workers 4 'examples.notes:create_app()'

Without it the app runs on the embedded defaults: signed-cookie sessions, an in-process cache
and in-memory limit counts, each per worker process (see :mod:`examples.notes.shared`). Key
prefixes are the modules' own settings (``SESSION_KEY_PREFIX``, ``CACHE_KEY_PREFIX``,
``RATELIMIT_KEY_PREFIX``), so several apps can share one Redis.
"""

from __future__ import annotations

import os
import typing as t

from carboy import Carboy

from . import api, db, errors, pages, shared

#: The secret key of the built-in defaults: accepted only in debug or testing mode.
DEV_SECRET_KEY = "dev"


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Carboy:
    """Build and return a configured notes application.

    ``test_config`` replaces the instance file and environment lookups, so tests stay hermetic.
    It may carry an ``INSTANCE_PATH`` key to move the instance folder somewhere temporary.
    """
    overrides = dict(test_config or {})
    instance_path = overrides.pop("INSTANCE_PATH", None)
    app = Carboy(__name__, instance_relative_config=True, instance_path=instance_path)

    app.config.from_mapping(
        SECRET_KEY=DEV_SECRET_KEY,
        DATABASE=db.MEMORY,  # a file path keeps the notes across restarts
        NOTE_TITLE_MAX=200,
        LOGIN_RATE_LIMIT="10/minute",  # POST /login per client address
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env("CARBOY")
    else:
        app.config.from_mapping(overrides)

    if app.config["SECRET_KEY"] == DEV_SECRET_KEY and not (app.debug or app.testing):
        raise RuntimeError(
            "The notes app refuses to run with its development secret key outside debug or"
            " testing mode: set CARBOY_SECRET_KEY (for example to the output of"
            " `python -c 'import secrets; print(secrets.token_hex())'`), or SECRET_KEY in"
            f" {os.path.join(app.instance_path, 'config.py')}, or run with --debug."
        )
    os.makedirs(app.instance_path, exist_ok=True)

    db.init_app(app)
    errors.init_app(app)
    shared.init_app(app, pages.login)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api")

    with app.app_context():
        db.ensure_schema()

    return app
