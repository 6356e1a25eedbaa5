"""Sphinx configuration for carboy's documentation site.

Build it with ``python -m sphinx -W --keep-going -n docs docs/_build/html`` (what
``tests/test_docs.py`` runs, offline, into a temporary directory).

Why Sphinx with the Pallets theme: carboy is Flask's API, and Flask, Werkzeug, Jinja and Click
document themselves with Sphinx and ``pallets-sphinx-themes``; a Flask user finds the same
layout, and autodoc reads the reST field lists (``:param:``, ``:raises:``,
``.. versionadded::``) that carboy's docstrings already use, as Flask's do. myst-parser lets
the guides stay Markdown, readable on the repository's web view too. The theme installs from
PyPI like any package (no download at build time), so no fallback theme is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# The tree being documented, not whatever carboy the environment has installed.
sys.path.insert(0, str(HERE.parent / "src"))

import carboy  # noqa: E402

project = "carboy"
copyright = "carboy's authors"
release = carboy.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
    "pallets_sphinx_themes",
    "carboy_docs",
]
# Offline by design: no intersphinx (it fetches inventories over the network at build time).
# References into other projects' docs (Werkzeug, Jinja2, redis-py, ...) therefore cannot be
# resolved; ``nitpick_ignore_regex`` below lets those through and nothing else, so a broken
# reference to carboy's own objects or pages still fails the build.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Markdown: heading anchors for ``[text](page.md#a-heading)`` links, tables, ``{directive}``.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]

# autodoc: the docstrings are the reference; members follow each module's ``__all__``.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True

nitpicky = True
# A reference to another project's object cannot resolve offline (no intersphinx): any dotted
# target outside ``carboy.`` is let through, as are the bare names below (type hints that
# autodoc writes without their module). Private names (``_x``) are never in the reference.
# Everything else, every reference into carboy, must resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(?!carboy\b)[A-Za-z_]\w*\.[\s\S]+"),
    (r"py:mod", r"(?!carboy\b).+"),
    (r"py:.*", r"(.+\.)?_\w+"),
    (r"py:.*", r"(.+\.)?([A-Z]|T_\w+)"),  # TypeVars: F, T, T_route
    (r"py:.*", r"(Ellipsis|NoneType|TracebackType|ModuleType|Path|PathLike|TypeVar)"),
    (r"py:.*", r"(RateLimitItem|Redis|RedisCluster|Rule|MapAdapter|Headers|HTTPException)"),
    (r"py:.*", r"(BaseResponse|TestResponse|Result|URLSafeTimedSerializer|Group|Command)"),
    (r"py:.*", r"(datetime|HTTPStatus|ReadableBuffer|SupportsRead|WSGIEnvironment)"),
    (r"py:.*", r"(StartResponse|Scope|Receive|Send|RuleFactory|BaseConverter|TStreamFactory)"),
    (r"py:.*", r"(MultiDict|Context|Queue)"),
    # The bases of Carboy and Blueprint: their members are shown on those classes.
    (r"py:class", r"carboy\.(sansio\.app\.App|scaffold\.Scaffold)"),
]
# Methods without a docstring of their own would show the base class's (Werkzeug's, limits'),
# written for those projects' Sphinx setups.
autodoc_inherit_docstrings = False

html_theme = "flask"
html_title = f"carboy {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_context = {"project_links": []}
html_sidebars = {
    "index": ["localtoc.html", "relations.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
# The theme's version banner asks PyPI from the reader's browser; carboy is not on PyPI.
version_banner = False
is_pallets_theme = True
