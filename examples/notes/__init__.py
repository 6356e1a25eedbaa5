"""A small multi-user notes service, written as an ordinary Flask-style app on carboy.

Run it with the development server::

    carboy --app examples.notes run --debug

or under gunicorn (with threads: each open notes page holds a live stream, and so a thread)
or uvicorn::

    gunicorn --threads 16 'examples.notes:create_app()'
    uvicorn --factory examples.notes:create_app

Settings come, in increasing priority, from the built-in defaults, ``<instance>/config.py`` and
``CARBOY_*`` environment variables (``CARBOY_SECRET_KEY``, ``CARBOY_DATABASE``...). Notes are
stored through Flask-SQLAlchemy, the schema made by Alembic migrations applied at start (see
:mod:`examples.notes.db`): by default in SQLite in memory until the process ends; set
``DATABASE`` to a file path to keep them (and do so for a server with more than one worker
process, as each process has its own memory), or ``DATABASE_URL`` to a PostgreSQL URL.
A public note appears live on the other users' pages (:mod:`examples.notes.live`); each note
is indexed for search by a job sent after its commit (:mod:`examples.notes.search`).

Every form and the JSON API are CSRF-protected by Flask-WTF's ``CSRFProtect``, unchanged (see
:mod:`examples.notes.csrf`); the extensions import ``flask``, which the ``carboy.flask_compat``
alias makes carboy (importing this package installs it, and refuses to load if the real Flask
was imported first).

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

try:
    # Flask-WTF (and the other Flask extensions the app uses) import ``flask``: the alias makes
    # that import give carboy's modules. ``carboy --app examples.notes ...`` and
    # ``pytest -p carboy.flask_compat`` install it before the app is imported; importing it
    # here installs it for any other server (``gunicorn 'examples.notes:create_app()'``).
    import carboy.flask_compat  # noqa: F401
except RuntimeError as exc:  # the real Flask was imported first in this process
    raise RuntimeError(
        "examples.notes runs its Flask extensions (Flask-WTF) on carboy through the"
        " carboy.flask_compat alias, but the real Flask was imported first in this process."
        " Serve it with `carboy --app examples.notes run`, import carboy.flask_compat before"
        " anything imports flask, or test it with `pytest -p carboy.flask_compat`."
    ) from exc

from carboy import Carboy

from . import api, db, errors, live, pages, search, shared
from .csrf import csrf

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
        DATABASE_URL=None,  # any SQLAlchemy URL instead, e.g. postgresql+psycopg://...
        DATABASE_REPLICA_URLS=None,  # PostgreSQL replicas for the reads of GET requests
        AUTO_MIGRATE=True,  # apply the migrations at start (once, under a lock)
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
    search.init_app(app)
    csrf.init_app(app)
    errors.init_app(app)
    shared.init_app(app, pages.login)
    live.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp, url_prefix="/api")

    if app.config["AUTO_MIGRATE"]:
        with app.app_context():
            db.upgrade_schema()

    return app
