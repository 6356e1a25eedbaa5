"""The Flask + Flask-SQLAlchemy app of :mod:`.flask_app`, unchanged, served by carboy: the
``flask`` import names carboy here (``carboy.flask_compat``), so Flask-SQLAlchemy 3.1 runs on
carboy. Against :mod:`.flask_app` it measures the framework alone, with the same models,
session and statements. Built on first access of :data:`wsgi`.
"""

from __future__ import annotations

import typing as t

import carboy.flask_compat

carboy.flask_compat.install()  # before anything imports flask or flask_sqlalchemy


def __getattr__(name: str) -> t.Any:
    """``wsgi``, built on first access."""
    if name != "wsgi":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import flask_app

    app = flask_app.create_app()
    if not isinstance(app, carboy.Carboy):
        raise RuntimeError("the real Flask was imported before carboy.flask_compat")
    globals()[name] = app
    return app
