"""The alias is in force in this process: ``flask`` and the extensions' view of it are carboy."""

from __future__ import annotations

import sys

import flask
import flask.app
import flask.sessions
import flask_caching
import flask_login.utils
import flask_sqlalchemy.extension
import flask_wtf.csrf

import carboy
import carboy.app
import carboy.sessions


def test_flask_is_carboy() -> None:
    assert flask.Flask is carboy.Carboy
    assert flask.app is carboy.app
    assert flask.sessions is carboy.sessions
    assert sys.modules["flask"] is flask
    # No module of the real distribution was loaded behind the alias.
    assert not getattr(flask, "__file__", None)
    real = [
        name
        for name, module in sys.modules.items()
        if (name == "flask" or name.startswith("flask."))
        and "site-packages" in (getattr(module, "__file__", None) or "")
    ]
    assert real == []


def test_extensions_bound_carboy_objects() -> None:
    # Names the extensions imported from flask at import time are carboy's objects.
    assert flask_caching.Flask is carboy.Carboy
    assert flask_caching.request is carboy.request
    assert flask_login.utils.current_app is carboy.current_app
    assert flask_wtf.csrf.session is carboy.session
    assert flask_sqlalchemy.extension.Flask is carboy.Carboy
