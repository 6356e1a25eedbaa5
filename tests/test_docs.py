"""The documentation site: it builds offline with every warning an error, its samples run, and
its generated parts (the config reference, the API reference, README's benchmark table) match
the code and the latest results.

The build runs ``sphinx-build -W --keep-going -n`` once per session, in a subprocess whose
sockets refuse every connection (no intersphinx, nothing fetched), into a temporary folder.
"""

from __future__ import annotations

import ast
import asyncio
import html
import re
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest

import carboy
from carboy import Carboy
from carboy.config import Config
from docs_samples import python_blocks, run_page

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import carboy_config  # noqa: E402
import carboy_docs  # noqa: E402
from benchmarks import readme_table  # noqa: E402

#: Runs Sphinx with the network switched off: any connection attempt fails the build.
_OFFLINE_SPHINX = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("the docs build must not use the network")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from sphinx.cmd.build import main
sys.exit(main(sys.argv[1:]))
"""


#: Warnings are errors, every reference must resolve (-n), a fresh environment (-E).
SPHINX_OPTIONS = ("-W", "--keep-going", "-n", "-q", "-E")


def sphinx(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _OFFLINE_SPHINX, *SPHINX_OPTIONS, *extra, str(source), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


class Built(t.NamedTuple):
    out: Path
    result: subprocess.CompletedProcess[str]
    seconds: float

    def text(self, page: str) -> str:
        """The visible text of a built page, whitespace collapsed."""
        raw = (self.out / page).read_text(encoding="utf-8")
        raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S)
        return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", raw)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("docs-html")
    start = time.monotonic()
    result = sphinx(DOCS, out)
    return Built(out, result, time.monotonic() - start)


def test_the_site_builds_offline_with_warnings_as_errors(built: Built) -> None:
    assert built.result.returncode == 0, built.result.stdout + built.result.stderr
    assert "WARNING" not in built.result.stderr, built.result.stderr
    for page in ("index", "quickstart", "migrating", "serving", "asgi", "config", "api"):
        assert (built.out / f"{page}.html").is_file()
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert "sphinx.ext.intersphinx" not in conf
    print(f"docs build: {built.seconds:.1f} s")


def test_a_broken_reference_fails_the_build(tmp_path: Path) -> None:
    """The site's own configuration, on a page with broken references: the build fails and
    names each one."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "index.md").write_text(
        "# Broken\n\nSee {py:func}`carboy.no_such_function` and [a page](no-such-page.md).\n",
        encoding="utf-8",
    )
    result = sphinx(source, tmp_path / "out", "-c", str(DOCS))
    assert result.returncode != 0
    assert "carboy.no_such_function" in result.stderr
    assert "no-such-page.md" in result.stderr


def test_every_page_under_docs_scale_is_in_the_site(built: Built) -> None:
    """Pages other work adds to docs/scale/ are picked up without an edit (a glob toctree)."""
    index = (built.out / "index.html").read_text(encoding="utf-8")
    pages = sorted((DOCS / "scale").glob("*.md"))
    assert pages
    for page in pages:
        assert (built.out / "scale" / f"{page.stem}.html").is_file()
        assert f'href="scale/{page.stem}.html"' in index, page.name


# -- code samples -----------------------------------------------------------------------------

GUIDES = [p for p in sorted(DOCS.glob("*.md")) if python_blocks(p)] + [ROOT / "README.md"]


def test_the_guides_have_samples() -> None:
    names = {p.name for p in GUIDES}
    for page in ("quickstart.md", "migrating.md", "serving.md", "asgi.md", "config.md"):
        assert page in names, f"docs/{page} has no Python sample"


@pytest.mark.parametrize("page", GUIDES, ids=lambda p: str(p.relative_to(ROOT)))
def test_guide_samples_run(page: Path) -> None:
    done = run_page(page)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"samples ran: {len(python_blocks(page))}" in done.stdout


def test_samples_on_the_scale_pages_compile() -> None:
    """docs/scale/ pages show one-line moves from the Flask extensions (fragments that assume
    an app); they are compiled, so a syntax slip fails, but not run."""
    count = 0
    for page in sorted((DOCS / "scale").glob("*.md")):
        for line, code in python_blocks(page):
            compile("\n" * (line - 1) + code, str(page), "exec")
            count += 1
    assert count


# -- the configuration reference --------------------------------------------------------------


def test_the_config_scan_resolves_every_read() -> None:
    assert carboy_config.unresolved(ROOT / "src") == []


def test_the_config_reference_lists_every_key_with_its_default(built: Built) -> None:
    keys = carboy_config.scan(ROOT / "src")
    page = built.text("config.html")
    for name in keys:
        assert re.search(rf"\b{name}\b", page), name
    # A few defaults, as the code has them.
    assert "MAX_FORM_PARTS 1_000" in page
    assert "MAX_SYNC_THREADS 40" in page
    assert "RATELIMIT_HEADER_RESET 'X-RateLimit-Reset'" in page
    assert "SESSION_LOCK_WAIT 5.0" in page
    assert "REDIS_CONNECT_TIMEOUT 0.5" in page


def test_the_scan_knows_the_defaults_dicts() -> None:
    from carboy.config import DEFAULT_CONFIG
    from carboy.scale import caching, connection, sessions

    keys = carboy_config.scan(ROOT / "src")
    for defaults in (DEFAULT_CONFIG, connection._DEFAULTS, sessions._DEFAULTS, caching._DEFAULTS):
        for name in defaults:
            assert name in keys and keys[name].default_from == "dict", name


def _recording_config() -> type[Config]:
    reads: set[str] = set()

    class RecordingConfig(Config):
        """Notes every key read, however it is read."""

        def __getitem__(self, key: str) -> t.Any:
            reads.add(key)
            return super().__getitem__(key)

        def get(self, key: str, default: t.Any = None) -> t.Any:
            reads.add(key)
            return super().get(key, default)

        def setdefault(self, key: str, default: t.Any = None) -> t.Any:
            reads.add(key)
            return super().setdefault(key, default)

        def __contains__(self, key: object) -> bool:
            if isinstance(key, str):
                reads.add(key)
            return super().__contains__(key)

        def pop(self, key: str, *default: t.Any) -> t.Any:
            reads.add(key)
            return super().pop(key, *default)

    RecordingConfig.reads = reads  # type: ignore[attr-defined]
    return RecordingConfig


def test_every_key_a_running_app_reads_is_in_the_reference(tmp_path: Path) -> None:
    """Independent of the scan: record the keys an app and each scale extension read while
    they set up and serve requests (WSGI and ASGI), and find each in the reference."""
    from carboy.scale.caching import Cache
    from carboy.scale.connection import RedisConnection
    from carboy.scale.limiter import Limiter, get_remote_address
    from carboy.scale.sessions import Session
    from carboy.testing import ASGIClient

    recording = _recording_config()

    class App(Carboy):
        config_class = recording

    static = tmp_path / "static"
    static.mkdir()
    (static / "a.txt").write_text("static file")
    app = App(__name__, static_folder=str(static))
    app.config.update(SECRET_KEY="s", SERVER_NAME="example.test")
    app.config["RATELIMIT_DEFAULT"] = "100/minute"
    app.config["RATELIMIT_APPLICATION"] = "1000/minute"
    app.config["RATELIMIT_STORAGE_URI"] = "memory://"
    app.config["CACHE_TYPE"] = "simple"
    app.config["REDIS_URL"] = "redis://127.0.0.1:6379/15"
    RedisConnection(app)
    Cache(app)
    limiter = Limiter(get_remote_address, app=app)
    sessions_app = App("sessions")
    sessions_app.config.update(SESSION_TYPE="redis", REDIS_URL="redis://127.0.0.1:6379/15")
    Session(sessions_app)

    @app.route("/", methods=["GET", "POST"])
    @limiter.limit("50/minute")
    def index() -> t.Any:
        carboy.session["n"] = carboy.session.get("n", 0) + 1
        carboy.flash("hi")
        return {
            "form": dict(carboy.request.form),
            "url": carboy.url_for("index", _external=True),
            "page": carboy.render_template_string("{{ 1 + 1 }}"),
        }

    @app.get("/json")
    async def json_view() -> t.Any:
        return {"got": carboy.request.get_json(silent=True)}

    @app.get("/file")
    def file() -> t.Any:
        return app.send_static_file("a.txt")

    @app.get("/bad")
    def bad() -> t.Any:
        carboy.abort(400)

    for client_class in (None, ASGIClient):
        if client_class is not None:
            app.test_client_class = client_class
        client = app.test_client()
        assert client.post("/", data={"a": "1"}).status_code == 200
        assert client.get("/json", json=[1]).status_code == 200
        assert client.get("/file").text == "static file"
        assert client.get("/bad").status_code == 400
        assert client.get("/nowhere").status_code == 404
    with app.app_context():
        carboy.url_for("index", _external=True)
    asyncio.run(asyncio.sleep(0))

    reads = recording.reads  # type: ignore[attr-defined]
    keys = carboy_config.scan(ROOT / "src")
    missing = sorted(k for k in reads if k.isupper() and k not in keys)
    assert missing == [], f"read by the code, missing from the reference: {missing}"
    # The recording saw what the scan had to work out: keys built from f-strings and
    # parameters, and the pool's size under ASGI.
    for name in ("RATELIMIT_DEFAULTS_COST", "RATELIMIT_HEADER_RESET", "MAX_SYNC_THREADS"):
        assert name in reads, name


# -- the API reference ------------------------------------------------------------------------


def test_the_api_reference_has_every_public_name_and_scale_module(built: Built) -> None:
    api = (built.out / "api.html").read_text(encoding="utf-8")
    for name in carboy_docs.public_names():
        assert f'id="carboy.{name}"' in api or f'id="module-carboy.{name}"' in api, name
    for module in carboy_docs.scale_modules():
        assert f'id="module-{module}"' in api, module


def test_public_names_are_read_from_carboys_init() -> None:
    tree = ast.parse((ROOT / "src" / "carboy" / "__init__.py").read_text(encoding="utf-8"))
    exported = {
        alias.asname
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname
    }
    assert set(carboy_docs.public_names()) == exported
    assert {"Carboy", "request", "websocket", "stream_request_body"} <= exported


# -- README -----------------------------------------------------------------------------------

README_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -e '.[example]' && "
    ".venv/bin/carboy --app examples.notes run --debug",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
]


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)\n```", text, flags=re.S)
    assert blocks[:2] == README_COMMANDS
    assert text.index(README_COMMANDS[1]) < text.index("## ")


def test_readme_benchmark_table_is_generated_from_the_latest_results() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table.render(text, readme_table.load()) == text, (
        "README's benchmark table is not current: run python benchmarks/readme_table.py"
    )
    results = readme_table.load()
    hello = results["inprocess"]["hello"]
    ratio = hello["carboy-wsgi"]["us"] / hello["flask"]["us"]
    assert "| hello, in process (WSGI), vs Flask | " in text
    assert f"| {ratio:.2f} |" in text


def test_readme_table_markers_are_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="markers"):
        readme_table.render("# no markers\n", readme_table.load())


def test_loopback_is_what_the_offline_guard_blocks() -> None:
    """The guard in the build is real: the same patch refuses a loopback connection."""
    code = _OFFLINE_SPHINX.split("from sphinx")[0] + (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9))\n"
        "except OSError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "refused: the docs build must not use the network" in done.stdout


def test_links_to_markdown_shown_in_the_site_go_to_its_page() -> None:
    """A page under docs/scale/ that links to benchmarks/README.md (outside docs/) is sent to
    the site's copy of it; other links are left alone, so a broken one still fails."""
    text = (
        "[suite](../../benchmarks/README.md#targets) [home](../../README.md) "
        "[sessions](sessions.md) [gone](../../nowhere.md)"
    )
    assert carboy_docs._link_shown_copies("scale/new-page", text) == (
        "[suite](../benchmarks/suite.md#targets) [home](../index.md) "
        "[sessions](sessions.md) [gone](../../nowhere.md)"
    )


def test_a_modules_own_config_table_gives_meanings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys config-keys.toml does not describe take their meaning from the table in the
    module's docstring, as a new scale module writes it."""
    import types

    module = types.ModuleType("carboy_fake_scale_module")
    module.__doc__ = """A module with config keys.

    =====================  ===========  =================================
    ``FAKE_TIMEOUT``       ``1.0``      seconds to wait for the
                                        :class:`~carboy.Carboy` to answer
    ``FAKE_NAME``          ``"x"``      the ``name`` it goes by
    =====================  ===========  =================================
    """
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert carboy_docs.docstring_meanings([module.__name__]) == {
        "FAKE_TIMEOUT": "seconds to wait for the `carboy.Carboy` to answer",
        "FAKE_NAME": "the `name` it goes by",
    }
