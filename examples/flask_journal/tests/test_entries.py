from __future__ import annotations

import pytest
from journal.storage import connection


def entry_row(app, entry_id):
    with app.app_context():
        return connection().execute("SELECT * FROM entry WHERE id = ?", (entry_id,)).fetchone()


def test_timeline_lists_only_my_entries(wren):
    page = wren.get("/")
    assert page.status_code == 200
    assert "Wren&#39;s first day" in page.text
    assert "Otter" not in page.text
    assert "6 words" in page.text  # the "words" template filter


def test_empty_timeline(app, wren, people):
    with app.app_context():
        conn = connection()
        conn.execute("DELETE FROM entry")
        conn.commit()
    assert "Nothing written yet." in wren.get("/").text


def test_write_an_entry(app, wren, people):
    assert wren.get("/entries/new").status_code == 200
    res = wren.post("/entries/new", data={"title": "  Rain  ", "body": "It rained all day."})
    assert res.status_code == 302
    entry_id = int(res.headers["Location"].rsplit("/", 1)[1])
    row = entry_row(app, entry_id)
    assert row["owner_id"] == people["wren"]["id"]
    assert (row["title"], row["body"], row["revised_at"]) == ("Rain", "It rained all day.", None)

    page = wren.get(res.headers["Location"])
    assert "Saved “Rain”." in page.text
    assert "<h1>Rain</h1>" in page.text
    assert "It rained all day." in page.text
    assert "Rain" in wren.get("/").text


@pytest.mark.parametrize(
    ("title", "message"),
    [("", "Every entry needs a title."), ("x" * 121, "Keep the title under 120 characters.")],
)
def test_write_rejects_bad_titles(app, wren, title, message):
    res = wren.post("/entries/new", data={"title": title, "body": "kept in the form"})
    assert res.status_code == 400
    assert message in res.text
    assert "kept in the form" in res.text
    with app.app_context():
        assert connection().execute("SELECT COUNT(*) FROM entry").fetchone()[0] == 2


def test_body_limit_comes_from_config(app, wren):
    app.config["JOURNAL_BODY_LIMIT"] = 10
    res = wren.post("/entries/new", data={"title": "Long", "body": "eleven char"})
    assert res.status_code == 400
    assert "Keep the text under 10 characters." in res.text


def test_read_my_entry(wren, people):
    page = wren.get(f"/entries/{people['wren']['entry']}")
    assert page.status_code == 200
    assert "wren wrote this by the river." in page.text


def test_revise_my_entry(app, wren, people):
    entry_id = people["wren"]["entry"]
    form = wren.get(f"/entries/{entry_id}/edit")
    assert form.status_code == 200
    assert 'value="Wren&#39;s first day"' in form.text

    res = wren.post(
        f"/entries/{entry_id}/edit",
        data={"title": "Second thoughts", "body": "Revised."},
        follow_redirects=True,
    )
    assert res.request.path == f"/entries/{entry_id}"
    assert "Your changes are saved." in res.text
    row = entry_row(app, entry_id)
    assert (row["title"], row["body"]) == ("Second thoughts", "Revised.")
    assert row["revised_at"] is not None


def test_revise_rejects_an_empty_title(app, wren, people):
    entry_id = people["wren"]["entry"]
    res = wren.post(f"/entries/{entry_id}/edit", data={"title": "", "body": "x"})
    assert res.status_code == 400
    assert "Every entry needs a title." in res.text
    assert entry_row(app, entry_id)["title"] == "Wren's first day"


def test_delete_my_entry(app, wren, people):
    entry_id = people["wren"]["entry"]
    res = wren.post(f"/entries/{entry_id}/delete", follow_redirects=True)
    assert res.request.path == "/"
    assert "Deleted “Wren&#39;s first day”." in res.text
    assert entry_row(app, entry_id) is None
    assert wren.get(f"/entries/{entry_id}").status_code == 404


def test_delete_needs_post(wren, people):
    assert wren.get(f"/entries/{people['wren']['entry']}/delete").status_code == 405


@pytest.mark.parametrize(
    ("method", "suffix", "data"),
    [
        ("get", "", None),
        ("get", "/edit", None),
        ("post", "/edit", {"title": "Mine now", "body": ""}),
        ("post", "/delete", None),
    ],
)
def test_someone_elses_entry_is_forbidden(app, wren, people, method, suffix, data):
    entry_id = people["otter"]["entry"]
    res = getattr(wren, method)(f"/entries/{entry_id}{suffix}", data=data)
    assert res.status_code == 403
    assert "That entry belongs to someone else." in res.text
    row = entry_row(app, entry_id)
    assert row["title"] == "Otter's first day"


@pytest.mark.parametrize(
    ("method", "suffix"), [("get", ""), ("get", "/edit"), ("post", "/edit"), ("post", "/delete")]
)
def test_missing_entry_is_not_found(wren, method, suffix):
    res = getattr(wren, method)(f"/entries/9999{suffix}", data={"title": "x"})
    assert res.status_code == 404
    assert "There is no entry 9999." in res.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/"),
        ("get", "/entries/1"),
        ("post", "/entries/1/edit"),
        ("post", "/entries/1/delete"),
    ],
)
def test_entries_need_a_signed_in_user(app, client, people, method, path):
    res = getattr(client, method)(path)
    assert res.status_code == 302
    assert res.headers["Location"].startswith("/auth/login?next=")
    assert entry_row(app, 1)["title"] == "Wren's first day"
