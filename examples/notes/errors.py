"""Application-wide error pages (JSON under ``/api``, HTML everywhere else)."""

from __future__ import annotations

import typing as t

from werkzeug.exceptions import HTTPException, InternalServerError

from carboy import render_template, request

from .csrf import CSRFError

if t.TYPE_CHECKING:
    from carboy import Carboy


def _wants_json() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def not_found(exc: HTTPException) -> t.Any:
    if _wants_json():
        return {"error": {"status": 404, "message": "No such API endpoint."}}, 404
    return render_template("errors/404.html", path=request.path), 404


def too_many_requests(exc: HTTPException) -> t.Any:
    """A rate limit's 429 (the login limit), keeping its ``Retry-After``."""
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "retry-after"}
    retry_after = headers.get("Retry-After")
    if _wants_json():
        message = f"{exc.description} Try again later."
        return {"error": {"status": 429, "message": message}}, 429, headers
    page = render_template("errors/429.html", message=exc.description, retry_after=retry_after)
    return page, 429, headers


def csrf_failed(exc: CSRFError) -> t.Any:
    """Flask-WTF's 400 for a write without a valid CSRF token: JSON under ``/api``, else a page
    that says what to do (the form was probably open for too long, or its session ended)."""
    if _wants_json():
        return {"error": {"status": 400, "message": exc.description}}, 400
    return render_template("errors/csrf.html", reason=exc.description), 400


def server_error(exc: InternalServerError) -> t.Any:
    if _wants_json():
        return {"error": {"status": 500, "message": "Internal server error."}}, 500
    return render_template("errors/500.html"), 500


def api_error(exc: HTTPException) -> t.Any:
    """Any other HTTP error under ``/api`` as JSON, with its own headers (``Allow`` on a 405).

    Routing errors (404, 405) are raised before any blueprint is chosen, so the API
    blueprint's own handler never sees them; this app-wide one does. Elsewhere the error's
    own page is kept.
    """
    if not _wants_json():
        return exc
    status = exc.code or 500
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return {"error": {"status": status, "message": exc.description or exc.name}}, status, headers


def init_app(app: Carboy) -> None:
    app.errorhandler(HTTPException)(api_error)
    app.errorhandler(404)(not_found)
    app.errorhandler(429)(too_many_requests)
    app.errorhandler(CSRFError)(csrf_failed)
    app.errorhandler(500)(server_error)
