"""CSRF protection: Flask-WTF's ``CSRFProtect``, unchanged, through carboy's ``flask`` alias.

Every ``POST`` (and ``PUT``, ``PATCH``, ``DELETE``) must carry the token of the visitor's
session, or Flask-WTF refuses it with a 400 before any view runs:

* the HTML forms send it as a hidden ``csrf_token`` field (``{{ csrf_token() }}`` in each
  form of the templates);
* the JSON API sends it in the ``X-CSRFToken`` header, taken from ``GET /api/csrf``.

The JSON API is protected too, because it is authenticated by the same session cookie as the
pages, and a cookie is exactly what a cross-site request rides on: the browser attaches it to
a request that another site's page makes. (Its ``POST`` only accepts a JSON body and its
``DELETE`` is not a "simple" request, so today a browser would ask the app for CORS
permission first; but that leans on every browser's preflight rules and on the app never
accepting a form-encoded body, while a token holds whatever the request looks like.) A page
of another site cannot read ``GET /api/csrf``'s answer: the app sends no CORS headers.
"""

from __future__ import annotations

from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf

__all__ = ["CSRFError", "csrf", "generate_csrf"]

#: The app's CSRF protection (``csrf.init_app(app)`` in the factory).
csrf = CSRFProtect()
