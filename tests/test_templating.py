"""Templates: environment setup, autoescaping, context, loaders, registration and streaming."""

from __future__ import annotations

import logging
import typing as t
from pathlib import Path

import pytest
from jinja2 import TemplateNotFound, TemplatesNotFound
from markupsafe import Markup

from carboy import (
    Blueprint,
    Carboy,
    flash,
    g,
    render_template,
    render_template_string,
    request,
    stream_template,
    stream_template_string,
)
from carboy.signals import before_render_template, template_rendered
from carboy.templating import DispatchingJinjaLoader, Environment


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _write(
        tmp_path,
        {
            "templates/value.html": "{{ value }}",
            "templates/value.htm": "{{ value }}",
            "templates/value.xml": "{{ value }}",
            "templates/value.xhtml": "{{ value }}",
            "templates/value.svg": "{{ value }}",
            "templates/value.txt": "{{ value }}",
            "templates/value.js": "{{ value }}",
            "templates/shared.html": "from app",
            "templates/stream.html": "{% for i in items %}[{{ i }}]{% endfor %}",
            "admin/templates/shared.html": "from admin",
            "admin/templates/admin/page.html": "admin page {{ value }}",
        },
    )
    return tmp_path


@pytest.fixture
def app(app: Carboy, root: Path) -> Carboy:
    """conftest's app (both dispatch paths), rooted in a folder with templates."""
    app.root_path = str(root)
    return app


# -- the environment -------------------------------------------------------------------------


def test_environment_is_carboy_environment_with_dispatching_loader(app: Carboy) -> None:
    env = app.jinja_env
    assert isinstance(env, Environment)
    assert env.app is app
    assert isinstance(env.loader, DispatchingJinjaLoader)
    assert app.jinja_env is env  # cached


def test_environment_globals(app: Carboy) -> None:
    env = app.jinja_env
    for name in ("url_for", "get_flashed_messages", "config", "request", "session", "g"):
        assert name in env.globals
    assert env.globals["config"] is app.config


def test_jinja_options_are_used(app: Carboy) -> None:
    app.jinja_options = {"trim_blocks": True, "extensions": ["jinja2.ext.do"]}
    assert app.jinja_env.trim_blocks is True
    with app.app_context():
        assert render_template_string("{% do items.append(2) %}{{ items }}", items=[1]) == "[1, 2]"


@pytest.mark.parametrize(
    ("debug", "setting", "expected"),
    [(False, None, False), (True, None, True), (True, False, False), (False, True, True)],
)
def test_auto_reload(app: Carboy, debug: bool, setting: bool | None, expected: bool) -> None:
    app.config["TEMPLATES_AUTO_RELOAD"] = setting
    app.debug = debug
    assert app.jinja_env.auto_reload is expected


def test_setting_debug_later_updates_auto_reload(app: Carboy) -> None:
    env = app.jinja_env
    assert env.auto_reload is False
    app.debug = True
    assert env.auto_reload is True


def test_auto_reload_picks_up_changed_template(app: Carboy, root: Path) -> None:
    app.config["TEMPLATES_AUTO_RELOAD"] = True
    target = root / "templates" / "changing.txt"
    target.write_text("one", encoding="utf-8")
    with app.app_context():
        assert render_template("changing.txt") == "one"
        target.write_text("two!", encoding="utf-8")
        import os

        stat = target.stat()
        os.utime(target, (stat.st_atime, stat.st_mtime + 5))
        assert render_template("changing.txt") == "two!"


def test_outside_app_context_raises(app: Carboy) -> None:
    with pytest.raises(RuntimeError):
        render_template("value.html", value=1)
    with pytest.raises(RuntimeError):
        render_template_string("x")


# -- autoescaping ----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["html", "htm", "xml", "xhtml", "svg"])
def test_autoescape_markup_extensions(app: Carboy, ext: str) -> None:
    with app.app_context():
        assert render_template(f"value.{ext}", value="<b>&") == "&lt;b&gt;&amp;"


@pytest.mark.parametrize("ext", ["txt", "js"])
def test_no_autoescape_for_other_extensions(app: Carboy, ext: str) -> None:
    with app.app_context():
        assert render_template(f"value.{ext}", value="<b>&") == "<b>&"


def test_render_template_string_always_autoescapes(app: Carboy) -> None:
    with app.app_context():
        assert render_template_string("{{ v }}", v="<i>") == "&lt;i&gt;"
        assert render_template_string("{{ v }}", v=Markup("<i>")) == "<i>"
        assert render_template_string("{{ v|safe }}", v="<i>") == "<i>"
        text = "{% autoescape false %}{{ v }}{% endautoescape %}"
        assert render_template_string(text, v="<i>") == "<i>"


def test_select_jinja_autoescape(app: Carboy) -> None:
    assert app.select_jinja_autoescape(None) is True
    assert app.select_jinja_autoescape("a.html") is True
    assert app.select_jinja_autoescape("a.txt") is False


def test_tojson_filter_is_html_safe(app: Carboy) -> None:
    with app.app_context():
        text = render_template_string("{{ data|tojson }}", data={"b": "</script>", "a": 1})
    assert "</script>" not in text
    assert "\\u003c/script\\u003e" in text
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert app.jinja_env.policies["json.dumps_function"] == app.json.dumps


# -- template lookup -------------------------------------------------------------------------


def test_template_not_found(app: Carboy) -> None:
    with app.app_context(), pytest.raises(TemplateNotFound):
        render_template("missing.html")


def test_template_list_selects_first_existing(app: Carboy) -> None:
    with app.app_context():
        assert render_template(["missing.html", "value.txt"], value="x") == "x"
        with pytest.raises(TemplatesNotFound):
            render_template(["missing.html", "gone.html"])


def test_template_object_is_rendered(app: Carboy) -> None:
    with app.app_context():
        template = app.jinja_env.from_string("hi {{ name }}")
        assert render_template(template, name="you") == "hi you"


def test_blueprint_template_folder(app: Carboy, root: Path) -> None:
    bp = Blueprint("admin", __name__, root_path=str(root / "admin"), template_folder="templates")

    @bp.route("/page")
    def page() -> str:
        return render_template("admin/page.html", value="<x>")

    @bp.route("/shared")
    def shared() -> str:
        return render_template("shared.html")

    app.register_blueprint(bp, url_prefix="/admin")
    client = app.test_client()
    assert client.get("/admin/page").text == "admin page &lt;x&gt;"
    # The app's folder is searched first, so it shadows a blueprint template of the same name.
    assert client.get("/admin/shared").text == "from app"
    names = app.jinja_env.list_templates()
    assert "admin/page.html" in names
    assert "value.html" in names
    assert names.count("shared.html") == 1


def test_blueprint_without_app_template_folder(root: Path) -> None:
    app = Carboy(__name__, root_path=str(root), template_folder=None)
    bp = Blueprint("admin", __name__, root_path=str(root / "admin"), template_folder="templates")
    app.register_blueprint(bp)
    with app.app_context():
        assert render_template("shared.html") == "from admin"


def test_explain_template_loading_logs(
    app: Carboy, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bp = Blueprint("admin", __name__, root_path=str(root / "admin"), template_folder="templates")
    app.register_blueprint(bp)
    app.config["EXPLAIN_TEMPLATE_LOADING"] = True
    caplog.set_level(logging.INFO, logger=app.logger.name)
    with app.app_context():
        assert render_template("shared.html") == "from app"
        with pytest.raises(TemplateNotFound):
            render_template("nowhere.html")
    text = caplog.text
    assert "shared.html" in text
    assert "nowhere.html" in text


# -- context ---------------------------------------------------------------------------------


def test_request_session_g_config_and_url_for_in_templates(app: Carboy) -> None:
    app.config["GREETING"] = "hello"

    @app.route("/target/<int:n>")
    def target(n: int) -> str:
        return str(n)

    @app.route("/")
    def index() -> str:
        g.user = "ann"
        from carboy import session

        session["k"] = "v"
        return render_template_string(
            "{{ config.GREETING }}|{{ request.args.q }}|{{ session.k }}|{{ g.user }}"
            "|{{ url_for('target', n=3) }}|{{ url_for('target', n=4, _external=True) }}"
        )

    assert app.test_client().get("/?q=query").text == (
        "hello|query|v|ann|/target/3|http://localhost/target/4"
    )


def test_g_available_in_app_context_only(app: Carboy) -> None:
    with app.app_context():
        g.thing = "gee"
        assert render_template_string("{{ g.thing }}") == "gee"


def test_flashed_messages_in_template(app: Carboy) -> None:
    @app.route("/")
    def index() -> str:
        flash("first")
        flash("second", "error")
        return render_template_string(
            "{{ get_flashed_messages() }}|{{ get_flashed_messages(with_categories=true) }}"
        )

    text = app.test_client().get("/").text
    assert text == (
        "[&#39;first&#39;, &#39;second&#39;]|"
        "[(&#39;message&#39;, &#39;first&#39;), (&#39;error&#39;, &#39;second&#39;)]"
    )


def test_app_context_processor(app: Carboy) -> None:
    @app.context_processor
    def inject() -> dict[str, t.Any]:
        return {"who": "world", "shadowed": "processor"}

    with app.app_context():
        assert render_template_string("{{ who }}") == "world"
        # Values passed to render_template win over context processor values.
        assert render_template_string("{{ shadowed }}", shadowed="explicit") == "explicit"


def test_context_processor_can_provide_functions(app: Carboy) -> None:
    @app.context_processor
    def utilities() -> dict[str, t.Any]:
        return {"double": lambda x: x * 2}

    with app.app_context():
        assert render_template_string("{{ double(21) }}") == "42"


def test_blueprint_context_processors(app: Carboy) -> None:
    bp = Blueprint("bp", __name__)

    @bp.context_processor
    def only_bp() -> dict[str, t.Any]:
        return {"scope": "blueprint"}

    @bp.app_context_processor
    def everywhere() -> dict[str, t.Any]:
        return {"everywhere": "yes"}

    template = "{{ scope|default('none') }}/{{ everywhere }}"

    @bp.route("/in")
    def inside() -> str:
        return render_template_string(template)

    @app.route("/out")
    def outside() -> str:
        return render_template_string(template)

    app.register_blueprint(bp)
    client = app.test_client()
    assert client.get("/in").text == "blueprint/yes"
    assert client.get("/out").text == "none/yes"


def test_nested_blueprint_context_processors(app: Carboy) -> None:
    parent = Blueprint("parent", __name__)
    child = Blueprint("child", __name__)

    @parent.context_processor
    def parent_values() -> dict[str, t.Any]:
        return {"a": "parent", "b": "parent"}

    @child.context_processor
    def child_values() -> dict[str, t.Any]:
        return {"b": "child"}

    @child.route("/c")
    def view() -> str:
        return render_template_string("{{ a }}-{{ b }}")

    parent.register_blueprint(child, url_prefix="/child")
    app.register_blueprint(parent, url_prefix="/parent")
    assert app.test_client().get("/parent/child/c").text == "parent-child"


# -- filters, globals and tests ----------------------------------------------------------------


def test_template_filter_registration(app: Carboy) -> None:
    @app.template_filter()
    def reverse(s: str) -> str:
        return s[::-1]

    @app.template_filter("shout")
    def make_loud(s: str) -> str:
        return s.upper() + "!"

    def twice(s: str) -> str:
        return s * 2

    app.add_template_filter(twice)
    app.add_template_filter(twice, "double")

    assert app.jinja_env.filters["reverse"] is reverse
    with app.app_context():
        assert render_template_string("{{ 'abc'|reverse }}") == "cba"
        assert render_template_string("{{ 'hey'|shout }}") == "HEY!"
        assert render_template_string("{{ 'ab'|twice }}|{{ 'cd'|double }}") == "abab|cdcd"


def test_template_global_registration(app: Carboy) -> None:
    @app.template_global()
    def answer() -> int:
        return 42

    @app.template_global("site_name")
    def name() -> str:
        return "carboy"

    app.add_template_global(lambda: "added", "added")
    with app.app_context():
        assert render_template_string("{{ answer() }} {{ site_name() }} {{ added() }}") == (
            "42 carboy added"
        )


def test_template_test_registration(app: Carboy) -> None:
    @app.template_test()
    def boolean(value: object) -> bool:
        return isinstance(value, bool)

    @app.template_test("even_length")
    def has_even_length(value: str) -> bool:
        return len(value) % 2 == 0

    with app.app_context():
        text = "{{ true is boolean }} {{ 1 is boolean }} {{ 'ab' is even_length }}"
        assert render_template_string(text) == "True False True"


def test_blueprint_app_template_registration(app: Carboy) -> None:
    bp = Blueprint("bp", __name__)

    @bp.app_template_filter()
    def bracket(s: str) -> str:
        return f"[{s}]"

    @bp.app_template_global()
    def bp_global() -> str:
        return "bp"

    @bp.app_template_test()
    def empty(s: str) -> bool:
        return not s

    app.register_blueprint(bp)
    with app.app_context():
        assert render_template_string("{{ 'x'|bracket }}{{ bp_global() }}{{ '' is empty }}") == (
            "[x]bpTrue"
        )


# -- signals ---------------------------------------------------------------------------------


def test_render_signals(app: Carboy) -> None:
    events: list[tuple[str, t.Any, dict[str, t.Any]]] = []

    def before(sender: t.Any, template: t.Any, context: dict[str, t.Any]) -> None:
        events.append(("before", template, dict(context)))
        context["added"] = "by signal"

    def after(sender: t.Any, template: t.Any, context: dict[str, t.Any]) -> None:
        assert sender is app
        events.append(("after", template, dict(context)))

    with (
        before_render_template.connected_to(before, app),
        template_rendered.connected_to(after, app),
        app.app_context(),
    ):
        assert render_template("value.txt", value="v") == "v"
        assert render_template_string("{{ added }}") == "by signal"

    assert [e[0] for e in events] == ["before", "after", "before", "after"]
    assert events[0][1].name == "value.txt"
    assert events[0][2]["value"] == "v"
    assert "g" in events[0][2]


# -- streaming -------------------------------------------------------------------------------


def test_stream_template_in_view(app: Carboy) -> None:
    @app.route("/")
    def index() -> t.Any:
        return stream_template("stream.html", items=[1, 2, 3])

    response = app.test_client().get("/")
    assert response.status_code == 200
    assert response.text == "[1][2][3]"


def test_stream_template_string_keeps_request_context(app: Carboy) -> None:
    @app.route("/")
    def index() -> t.Any:
        # The template reads ``request`` while the response is being iterated, after the view
        # has returned.
        return app.response_class(
            stream_template_string("{% for c in 'ab' %}{{ c }}{{ request.args.x }}{% endfor %}")
        )

    assert app.test_client().get("/?x=<>").text == "a&lt;&gt;b&lt;&gt;"


def test_stream_signals_after_consumption(app: Carboy) -> None:
    seen: list[str] = []

    def after(sender: t.Any, template: t.Any, context: dict[str, t.Any]) -> None:
        seen.append("rendered")

    with template_rendered.connected_to(after, app), app.app_context():
        chunks = stream_template("stream.html", items=["a"])
        assert seen == []
        assert "".join(chunks) == "[a]"
        assert seen == ["rendered"]


def test_stream_outside_request_in_app_context(app: Carboy) -> None:
    with app.app_context():
        chunks = stream_template_string("{{ v }}!", v="<b>")
        assert not isinstance(chunks, str)
        assert "".join(chunks) == "&lt;b&gt;!"


def test_request_value_in_template_during_request(app: Carboy) -> None:
    with app.test_request_context("/path?a=1"):
        assert render_template_string("{{ request.path }} {{ request.args.a }}") == "/path 1"
        assert request.path == "/path"
