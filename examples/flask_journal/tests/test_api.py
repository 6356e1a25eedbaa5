from __future__ import annotations

import pytest


def test_anonymous_requests_get_401_json(client, people):
    for res in (
        client.get("/api/entries"),
        client.post("/api/entries", json={"title": "sneaky"}),
        client.get(f"/api/entries/{people['wren']['entry']}"),
    ):
        assert res.status_code == 401
        assert res.is_json
        assert res.get_json() == {"error": "Sign in to use the API.", "status": 401}


def test_list_my_entries(wren, people):
    res = wren.get("/api/entries")
    assert res.status_code == 200
    assert res.mimetype == "application/json"
    body = res.get_json()
    assert body["user"] == "wren"
    assert body["count"] == 1
    [entry] = body["entries"]
    assert entry["id"] == people["wren"]["entry"]
    assert entry["title"] == "Wren's first day"
    assert entry["url"] == f"/api/entries/{entry['id']}"


def test_create_then_read_back(wren):
    res = wren.post("/api/entries", json={"title": " Tide tables ", "body": "Low at six."})
    assert res.status_code == 201
    created = res.get_json()
    assert created["title"] == "Tide tables"
    assert created["body"] == "Low at six."
    assert created["revised_at"] is None
    assert res.headers["Location"] == created["url"]

    assert wren.get(created["url"]).get_json() == created
    listing = wren.get("/api/entries").get_json()
    assert listing["count"] == 2
    assert listing["entries"][0] == created  # newest first
    assert "Tide tables" in wren.get("/").text


def test_body_is_optional(wren):
    res = wren.post("/api/entries", json={"title": "Just a title"})
    assert res.status_code == 201
    assert res.get_json()["body"] == ""


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "'title' must be a string, and 'body' too if given."),
        ({"title": 7}, "'title' must be a string, and 'body' too if given."),
        ({"title": "ok", "body": ["no"]}, "'title' must be a string, and 'body' too if given."),
        ({"title": "   "}, "Every entry needs a title."),
        ({"title": "t" * 121}, "Keep the title under 120 characters."),
        (["title", "body"], "Send a JSON object."),
        ("just a string", "Send a JSON object."),
    ],
)
def test_create_validation(wren, payload, message):
    res = wren.post("/api/entries", json=payload)
    assert res.status_code == 400
    assert res.get_json() == {"error": message, "status": 400}
    assert wren.get("/api/entries").get_json()["count"] == 1


def test_malformed_json_is_a_json_400(wren):
    res = wren.post("/api/entries", data='{"title": "unterminated', content_type="application/json")
    assert res.status_code == 400
    assert res.is_json
    assert res.get_json()["status"] == 400


def test_form_data_is_a_json_415(wren):
    res = wren.post("/api/entries", data={"title": "a form"})
    assert res.status_code == 415
    assert res.get_json()["status"] == 415


def test_other_peoples_entries(wren, people):
    res = wren.get(f"/api/entries/{people['otter']['entry']}")
    assert res.status_code == 403
    assert res.get_json() == {"error": "That entry belongs to someone else.", "status": 403}


def test_missing_entry(wren):
    res = wren.get("/api/entries/424242")
    assert res.status_code == 404
    assert res.get_json() == {"error": "There is no entry 424242.", "status": 404}


def test_unknown_method_is_405(wren):
    res = wren.delete("/api/entries")
    assert res.status_code == 405
    assert "Allow" in res.headers


def test_html_errors_stay_html(wren):
    res = wren.get("/entries/424242")
    assert res.status_code == 404
    assert res.mimetype == "text/html"
