"""The benchmark app on Flask: :data:`wsgi` (the views are in :mod:`.flask_style`)."""

from __future__ import annotations

import flask

from .flask_style import build

wsgi = build(flask.Flask, flask)
