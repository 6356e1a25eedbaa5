from __future__ import annotations

from pathlib import Path

from journal import DefaultSettings, create_app


def test_defaults_without_test_config(tmp_path):
    instance = tmp_path / "inst"
    app = create_app(instance_path=str(instance))
    assert not app.testing
    assert app.config["SECRET_KEY"] == DefaultSettings.SECRET_KEY
    assert app.config["JOURNAL_TITLE_LIMIT"] == 120
    assert Path(app.instance_path) == instance
    assert instance.is_dir()
    assert app.config["DATABASE"] == str(instance / "journal.db")


def test_test_config_replaces_the_defaults(app, tmp_path):
    assert app.testing
    assert app.config["SECRET_KEY"] == "only-for-tests"
    assert app.config["DATABASE"] == str(tmp_path / "test.db")


def test_instance_file_is_read(tmp_path):
    instance = tmp_path / "inst"
    instance.mkdir()
    (instance / "journal.cfg").write_text(
        'SECRET_KEY = "from-the-file"\nJOURNAL_TITLE_LIMIT = 40\n'
    )
    app = create_app(instance_path=str(instance))
    assert app.config["SECRET_KEY"] == "from-the-file"
    assert app.config["JOURNAL_TITLE_LIMIT"] == 40


def test_environment_overrides_the_instance_file(tmp_path, monkeypatch):
    instance = tmp_path / "inst"
    instance.mkdir()
    (instance / "journal.cfg").write_text('SECRET_KEY = "from-the-file"\n')
    monkeypatch.setenv("JOURNAL_SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("JOURNAL_JOURNAL_BODY_LIMIT", "500")
    app = create_app(instance_path=str(instance))
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert app.config["JOURNAL_BODY_LIMIT"] == 500


def test_test_config_ignores_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNAL_SECRET_KEY", "from-the-environment")
    app = create_app({"SECRET_KEY": "given"}, instance_path=str(tmp_path))
    assert app.config["SECRET_KEY"] == "given"


def test_blueprints_and_routes(app):
    assert set(app.blueprints) == {"auth", "entries", "api"}
    rules = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    assert rules["/"] == "home"
    assert rules["/auth/login"] == "auth.login"
    assert rules["/entries/<int:entry_id>/edit"] == "entries.revise"
    assert rules["/api/entries"] in {"api.list_entries", "api.create_entry"}


def test_stylesheet_is_served(client):
    res = client.get("/static/journal.css")
    assert res.status_code == 200
    assert res.mimetype == "text/css"
    assert b".masthead" in res.data
    res.close()
