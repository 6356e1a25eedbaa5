"""The CSRF token of the example notes app (examples/notes), for tests that drive it over HTTP.

Every write to the app (form or JSON) must carry its session's token, or Flask-WTF answers
400: these tests ask ``GET /api/csrf`` for it and send it in the ``X-CSRFToken`` header. Ask
again after logging in: the login clears the session, and the token with it.
"""

from __future__ import annotations

import httpx


def sign_in(http: httpx.Client, username: str, password: str) -> httpx.Response:
    """Register *username* through the pages, then log in; return the login's response (a
    302). Each write carries the session's token."""
    form = {"username": username, "password": password}
    res = http.post("/register", data=form, headers=csrf(http))
    assert res.status_code == 302, res.text
    res = http.post("/login", data=form, headers=csrf(http))
    assert res.status_code == 302, res.text
    return res


def csrf(http: httpx.Client) -> dict[str, str]:
    """The ``X-CSRFToken`` header of *http*'s current session (made if it has none)."""
    res = http.get("/api/csrf")
    assert res.status_code == 200, res.text
    return {"X-CSRFToken": res.json()["csrf_token"]}
