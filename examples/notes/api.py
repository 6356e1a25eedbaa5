"""JSON API mounted under ``/api``; it shares the cookie session with the pages.

Its writes (``POST``, ``DELETE``) carry the session's CSRF token in an ``X-CSRFToken`` header,
from ``GET /api/csrf``: Flask-WTF answers 400 (as JSON here) without it.
"""

from __future__ import annotations

import datetime
import functools
import typing as t

from werkzeug.exceptions import HTTPException

from carboy import Blueprint, current_app, g, jsonify, request, url_for

from . import live, queries, search, shared
from .csrf import generate_csrf

bp = Blueprint("api", __name__)

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def error_body(status: int, message: str) -> tuple[dict[str, t.Any], int]:
    return {"error": {"status": status, "message": message}}, status


def api_login_required(view: F) -> F:
    """Answer 401 with a JSON body instead of redirecting to the login page."""

    @functools.wraps(view)
    def guarded(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if g.user is None:
            return error_body(401, "Log in to use the notes API.")
        return view(*args, **kwargs)

    return t.cast(F, guarded)


@bp.errorhandler(HTTPException)
def http_error_as_json(exc: HTTPException) -> t.Any:
    status = exc.code or 500
    body, status = error_body(status, exc.description or exc.name)
    # The error's own headers (Allow on a 405, Retry-After on a 429 or 503), not its type.
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return body, status, headers


@bp.get("/csrf")
def csrf_token() -> t.Any:
    """The CSRF token of this session, for the ``X-CSRFToken`` header of the API's writes
    (Flask-WTF checks it; see :mod:`examples.notes.csrf`). Another site's page cannot read it:
    the app sends no CORS headers."""
    return {"csrf_token": generate_csrf()}, 200, {"Cache-Control": "no-store"}


@bp.get("/stats")
@shared.cache.cached(timeout=shared.STATS_SECONDS, key_prefix=shared.STATS_KEY)
def stats() -> t.Any:
    """Public totals, computed at most once per :data:`~examples.notes.shared.STATS_SECONDS`
    for all workers (sooner after a write): nothing in them depends on who asks."""
    totals = queries.site_totals()
    as_of = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    return jsonify(accounts=totals["accounts"], notes=totals["notes"], as_of=as_of)


@bp.get("/notes")
@api_login_required
def list_notes() -> t.Any:
    rows = queries.notes_for(g.user.id)
    return jsonify(notes=[queries.note_as_dict(r) for r in rows], count=len(rows))


@bp.post("/notes")
@api_login_required
def create_note() -> t.Any:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        return error_body(400, "Send a JSON object with 'title' and optional 'body'.")
    title = payload.get("title")
    body = payload.get("body", "")
    public = payload.get("public", False)
    max_title = current_app.config["NOTE_TITLE_MAX"]
    problem = queries.check_note_fields(title, body, max_title, public)
    if problem is not None:
        return error_body(400, problem)
    assert isinstance(title, str) and isinstance(body, str)
    note_id = queries.add_note(g.user.id, title.strip(), body, public=bool(public))
    row = queries.note_for(g.user.id, note_id)
    assert row is not None
    location = url_for("api.get_note", note_id=note_id)
    return queries.note_as_dict(row), 201, {"Location": location}


@bp.get("/search")
@api_login_required
def search_notes() -> t.Any:
    """The signed-in user's notes holding every word of ``q`` (indexed after each commit)."""
    query = request.args.get("q", "")
    if len(query) > 1000:
        return error_body(400, "The query is limited to 1000 characters.")
    notes = search.search(g.user.id, query)
    return jsonify(notes=[queries.note_as_dict(n) for n in notes], count=len(notes), q=query)


@bp.get("/live")
@api_login_required
def live_notes() -> t.Any:
    """The live feed of public notes as Server-Sent Events (see :mod:`examples.notes.live`):
    one ``{"id", "title", "author", "created_at"}`` JSON event per note shared from now on
    (or since ``Last-Event-ID``)."""
    return live.broadcast.sse(live.CHANNEL)


@bp.get(f"/notes/<int(max={queries.MAX_ID}):note_id>")
@api_login_required
def get_note(note_id: int) -> t.Any:
    row = queries.note_for(g.user.id, note_id)
    if row is None:
        return error_body(404, f"No note {note_id}.")
    return queries.note_as_dict(row)


@bp.delete(f"/notes/<int(max={queries.MAX_ID}):note_id>")
@api_login_required
def delete_note(note_id: int) -> t.Any:
    if not queries.remove_note(g.user.id, note_id):
        return error_body(404, f"No note {note_id}.")
    return "", 204
