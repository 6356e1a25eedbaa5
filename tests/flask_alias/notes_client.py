"""A test client for the example notes app (examples/notes) that sends the session's CSRF
token with every write, as the app's own forms and scripts do.

The app is CSRF-protected by Flask-WTF (``examples/notes/csrf.py``): a ``POST``, ``PUT``,
``PATCH`` or ``DELETE`` without the session's token is refused with a 400. This client asks
``GET /api/csrf`` for the current token before each write and sends it in the ``X-CSRFToken``
header (which Flask-WTF reads for forms and JSON alike), unless the call passes
``csrf=False``. The token is fetched again each time because logging in clears the session,
and the token with it.
"""

from __future__ import annotations

import typing as t

from carboy.testing import CarboyClient

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class CsrfClient(CarboyClient):
    def csrf_token(self) -> str:
        res = super().open("/api/csrf", method="GET")
        assert res.status_code == 200, res.data
        return t.cast(str, res.get_json()["csrf_token"])

    def open(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        send_token = kwargs.pop("csrf", True)
        if send_token and str(kwargs.get("method", "GET")).upper() in UNSAFE:
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("X-CSRFToken", self.csrf_token())
            kwargs["headers"] = headers
        return super().open(*args, **kwargs)


def with_csrf_client(app: t.Any) -> t.Any:
    """*app*, whose ``test_client()`` is now a :class:`CsrfClient`."""
    app.test_client_class = CsrfClient
    return app
