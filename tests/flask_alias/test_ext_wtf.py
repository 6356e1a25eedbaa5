"""Flask-WTF: forms and app-wide CSRF protection."""

from __future__ import annotations

import re

import pytest
from flask import Flask, flash, redirect, render_template_string, url_for
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from wtforms import IntegerField, StringField
from wtforms.validators import DataRequired, Length, NumberRange

PAGE = """<!doctype html>
<title>New note</title>
{% for message in get_flashed_messages() %}<p class="flash">{{ message }}</p>{% endfor %}
<form method="post" action="{{ url_for('new_note') }}">
  {{ form.hidden_tag() }}
  {{ form.title.label }} {{ form.title(size=40) }}
  {% for error in form.title.errors %}<span class="error">{{ error }}</span>{% endfor %}
  {{ form.stars.label }} {{ form.stars() }}
  <button>Save</button>
</form>
"""


class NoteForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired(), Length(max=40)])
    stars = IntegerField("Stars", default=3, validators=[NumberRange(min=1, max=5)])


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "wtf-test-secret"
    csrf = CSRFProtect(app)
    notes: list[tuple[str, int]] = []
    app.extensions["notes"] = notes

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> tuple[str, int]:
        return f"csrf rejected: {error.description}", 400

    @app.route("/notes/new", methods=["GET", "POST"])
    def new_note() -> object:
        form = NoteForm()
        if form.validate_on_submit():
            notes.append((form.title.data, form.stars.data))
            flash(f"saved {form.title.data}")
            return redirect(url_for("new_note"))
        status = 422 if form.errors else 200
        return render_template_string(PAGE, form=form), status

    @app.get("/api/token")
    def token() -> dict[str, str]:
        return {"csrf_token": generate_csrf()}

    @app.post("/api/notes")
    def api_notes() -> tuple[dict[str, int], int]:
        notes.append(("api", 1))
        return {"count": len(notes)}, 201

    @app.post("/hooks/payment")
    @csrf.exempt
    def payment_hook() -> dict[str, bool]:
        # Called by another server, which has no session: exempt from CSRF checks.
        return {"received": True}

    return app


def token_from(html: str) -> str:
    match = re.search(
        r'<input id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', html
    )
    assert match, html
    return match.group(1)


@pytest.fixture
def app(client_class: type) -> Flask:
    app = create_app()
    app.test_client_class = client_class
    return app


def test_post_without_token_is_rejected(app: Flask) -> None:
    client = app.test_client()
    client.get("/notes/new")
    response = client.post("/notes/new", data={"title": "no token", "stars": "4"})
    assert response.status_code == 400
    assert response.text == "csrf rejected: The CSRF token is missing."
    assert app.extensions["notes"] == []


def test_post_with_token_from_the_form_is_accepted(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/notes/new")
    assert page.status_code == 200
    token = token_from(page.text)

    response = client.post(
        "/notes/new", data={"csrf_token": token, "title": "groceries", "stars": "4"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/notes/new"
    assert app.extensions["notes"] == [("groceries", 4)]
    assert '<p class="flash">saved groceries</p>' in client.get("/notes/new").text

    # The token stays valid for the session; validation errors still come back.
    invalid = client.post("/notes/new", data={"csrf_token": token, "title": "", "stars": "9"})
    assert invalid.status_code == 422
    assert '<span class="error">This field is required.</span>' in invalid.text
    assert app.extensions["notes"] == [("groceries", 4)]


def test_token_is_bound_to_the_session(app: Flask) -> None:
    owner = app.test_client()
    token = token_from(owner.get("/notes/new").text)
    stranger = app.test_client()
    stranger.get("/notes/new")
    response = stranger.post("/notes/new", data={"csrf_token": token, "title": "x"})
    assert response.status_code == 400
    assert response.text == "csrf rejected: The CSRF tokens do not match."

    tampered = token[:-2] + ("aa" if not token.endswith("aa") else "bb")
    response = owner.post("/notes/new", data={"csrf_token": tampered, "title": "x"})
    assert response.status_code == 400
    assert response.text == "csrf rejected: The CSRF token is invalid."
    assert app.extensions["notes"] == []


def test_ajax_header_token(app: Flask) -> None:
    client = app.test_client()
    assert client.post("/api/notes", json={}).status_code == 400
    token = client.get("/api/token").json["csrf_token"]
    response = client.post("/api/notes", json={}, headers={"X-CSRFToken": token})
    assert response.status_code == 201
    assert response.json == {"count": 1}


def test_exempt_view_needs_no_token(app: Flask) -> None:
    response = app.test_client().post("/hooks/payment", json={"paid": 10})
    assert response.status_code == 200
    assert response.json == {"received": True}
