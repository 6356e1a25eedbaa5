"""Journal: a small private diary service built with Flask.

Each account keeps its own entries, reachable through HTML pages and a JSON API.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

from flask import Flask

from . import accounts, api, entries, storage


class DefaultSettings:
    """Values every app starts from; the instance file and the environment can override them."""

    SECRET_KEY = "journal-development-key"
    JOURNAL_TITLE_LIMIT = 120
    JOURNAL_BODY_LIMIT = 20_000


def create_app(
    test_config: t.Mapping[str, t.Any] | None = None, *, instance_path: str | None = None
) -> Flask:
    """Build the journal application.

    :param test_config: settings that replace the instance file and the ``JOURNAL_*``
        environment variables, so a test run sees nothing from the machine it runs on.
    :param instance_path: an absolute folder for the database and ``journal.cfg``; by default
        Flask's ``instance`` folder next to the package.
    """
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    app.config.from_object(DefaultSettings)
    app.config["DATABASE"] = str(Path(app.instance_path) / "journal.db")

    if test_config is None:
        app.config.from_pyfile("journal.cfg", silent=True)
        app.config.from_prefixed_env("JOURNAL")
    else:
        app.config.from_mapping(test_config)

    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    storage.register(app)
    app.register_blueprint(accounts.bp)
    app.register_blueprint(entries.bp)
    app.register_blueprint(api.bp)
    app.add_url_rule("/", endpoint="home", view_func=entries.timeline)

    @app.template_filter("words")
    def word_count(text: str) -> int:
        return len(text.split())

    return app
