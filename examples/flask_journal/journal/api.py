"""A JSON API over the same entries: ``/api/entries`` and ``/api/entries/<id>``.

Every error inside this blueprint, including the ones Flask raises for malformed JSON, is
answered as ``{"error": ..., "status": ...}`` rather than an HTML page.
"""

from __future__ import annotations

import sqlite3
import typing as t

from flask import Blueprint, abort, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from .entries import add_entry, check_entry, entries_of, owned_entry

bp = Blueprint("api", __name__, url_prefix="/api")


def as_json(row: sqlite3.Row) -> dict[str, t.Any]:
    return {
        "id": row["id"],
        "title": row["title"],
        "body": row["body"],
        "written_at": row["written_at"],
        "revised_at": row["revised_at"],
        "url": url_for("api.one_entry", entry_id=row["id"]),
    }


@bp.errorhandler(HTTPException)
def error_as_json(exc: HTTPException) -> t.Any:
    return jsonify(error=exc.description, status=exc.code), exc.code


@bp.before_request
def require_user() -> None:
    if g.user is None:
        abort(401, description="Sign in to use the API.")


@bp.get("/entries")
def list_entries() -> t.Any:
    found = [as_json(row) for row in entries_of(g.user["id"])]
    return jsonify(entries=found, count=len(found), user=g.user["username"])


@bp.post("/entries")
def create_entry() -> t.Any:
    payload = request.get_json()
    if not isinstance(payload, dict):
        abort(400, description="Send a JSON object.")
    title, body = payload.get("title"), payload.get("body", "")
    if not isinstance(title, str) or not isinstance(body, str):
        abort(400, description="'title' must be a string, and 'body' too if given.")
    title = title.strip()
    problem = check_entry(title, body)
    if problem is not None:
        abort(400, description=problem)
    entry_id = add_entry(g.user["id"], title, body)
    created = as_json(owned_entry(entry_id))
    return jsonify(created), 201, {"Location": created["url"]}


@bp.get("/entries/<int:entry_id>")
def one_entry(entry_id: int) -> t.Any:
    return jsonify(as_json(owned_entry(entry_id)))
