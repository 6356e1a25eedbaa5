"""Jinja2 integration: the app's template environment, loader and the render functions.

Flask-compatible: ``flask.templating``. The environment is built once per app (see
:func:`create_jinja_environment`); its loader searches the app's template folder first and then
each blueprint's, in registration order. Signals are sent only when they have receivers.
"""

from __future__ import annotations

import typing as t

import jinja2
from jinja2 import BaseLoader, Template, TemplateNotFound

from .globals import _cv_app_get, _cv_request_get, _no_app_msg, g, request, session
from .signals import before_render_template, template_rendered

if t.TYPE_CHECKING:
    from .app import Carboy
    from .blueprints import Blueprint

#: File name endings that :func:`select_jinja_autoescape` switches autoescaping on for.
AUTOESCAPE_EXTENSIONS: tuple[str, ...] = (".html", ".htm", ".xml", ".xhtml", ".svg")

_SourceTuple = tuple[str, str | None, t.Callable[[], bool] | None]


def select_jinja_autoescape(filename: str | None) -> bool:
    """Whether a template named *filename* is rendered with HTML autoescaping.

    This is the default rule behind ``Carboy.select_jinja_autoescape``: templates made from a
    string (``filename`` is ``None``) and names ending in ``.html``, ``.htm``, ``.xml``,
    ``.xhtml`` or ``.svg`` are escaped; everything else is not.

    Flask-compatible: ``flask.Flask.select_jinja_autoescape``.

    :param filename: the template name, or ``None`` for a template built from a string.
    :return: ``True`` to autoescape.
    """
    if filename is None:
        return True
    return filename.endswith(AUTOESCAPE_EXTENSIONS)


def _default_template_ctx_processor() -> dict[str, t.Any]:
    """Context values every template gets: ``g`` when an app context is active, and
    ``request`` when a request context is active.

    Registered by the app as its first context processor. Flask-compatible:
    ``flask.templating._default_template_ctx_processor`` (Flask 3.1.3). ``session`` is not
    passed: templates reach it through the environment's ``session`` global, so only a
    template that uses it opens the session and marks it accessed (``Vary: Cookie``).

    :return: a dict with any of the keys ``g`` and ``request``.
    """
    values: dict[str, t.Any] = {}
    app_ctx = _cv_app_get(None)
    if app_ctx is not None:
        values["g"] = app_ctx.g
    req_ctx = _cv_request_get(None)
    if req_ctx is not None:
        values["request"] = req_ctx.request
    return values


class Environment(jinja2.Environment):
    """A :class:`jinja2.Environment` that knows its app and, by default, loads templates from
    the app's and its blueprints' template folders.

    Flask-compatible: ``flask.templating.Environment``.

    :param app: the application the environment belongs to; kept as :attr:`app`.
    :param options: keyword arguments for :class:`jinja2.Environment`. Without ``loader``, the
        result of ``app.create_global_jinja_loader()`` is used.
    """

    def __init__(self, app: Carboy, **options: t.Any) -> None:
        if "loader" not in options:
            options["loader"] = app.create_global_jinja_loader()
        super().__init__(**options)
        #: The application this environment renders for.
        self.app = app


class DispatchingJinjaLoader(BaseLoader):
    """Finds a template in the app's loader, then in each blueprint's loader.

    The first loader that has the template wins, so an app template shadows a blueprint
    template of the same name. With ``EXPLAIN_TEMPLATE_LOADING`` set in the app's config, every
    loader is asked and the attempts are written to ``app.logger`` at INFO level.

    Flask-compatible: ``flask.templating.DispatchingJinjaLoader``.

    :param app: the application whose loaders are searched.
    """

    def __init__(self, app: Carboy) -> None:
        self.app = app

    def get_source(self, environment: jinja2.Environment, template: str) -> _SourceTuple:
        """Return ``(source, filename, uptodate)`` for *template* from the first loader with it.

        :param environment: the environment asking.
        :param template: the template name, e.g. ``"admin/index.html"``.
        :raises jinja2.TemplateNotFound: when no loader has the template.
        """
        if self.app.config.get("EXPLAIN_TEMPLATE_LOADING", False):
            return self._get_source_explained(environment, template)
        for _owner, loader in self._iter_loaders():
            try:
                return loader.get_source(environment, template)
            except TemplateNotFound:
                continue
        raise TemplateNotFound(template)

    def _get_source_explained(self, environment: jinja2.Environment, template: str) -> _SourceTuple:
        attempts: list[tuple[Carboy | Blueprint, BaseLoader, _SourceTuple | None]] = []
        found: _SourceTuple | None = None
        for owner, loader in self._iter_loaders():
            try:
                result: _SourceTuple | None = loader.get_source(environment, template)
            except TemplateNotFound:
                result = None
            if found is None and result is not None:
                found = result
            attempts.append((owner, loader, result))
        _log_loading_attempts(self.app, template, attempts)
        if found is None:
            raise TemplateNotFound(template)
        return found

    def _iter_loaders(self) -> t.Iterator[tuple[Carboy | Blueprint, BaseLoader]]:
        """Yield ``(owner, loader)`` for the app and every blueprint that has a loader."""
        app = self.app
        loader = app.jinja_loader
        if loader is not None:
            yield app, loader
        for blueprint in app.iter_blueprints():
            loader = blueprint.jinja_loader
            if loader is not None:
                yield blueprint, loader

    def list_templates(self) -> list[str]:
        """All template names any of the loaders can list, sorted and without duplicates.

        :raises TypeError: if one of the loaders cannot list its templates.
        """
        names: set[str] = set()
        for _owner, loader in self._iter_loaders():
            names.update(loader.list_templates())
        return sorted(names)


def _log_loading_attempts(
    app: Carboy,
    template: str,
    attempts: list[tuple[Carboy | Blueprint, BaseLoader, _SourceTuple | None]],
) -> None:
    """Write what each loader returned for *template* to ``app.logger`` (INFO)."""
    lines = [f"Looking up template {template!r}:"]
    hits = 0
    for number, (owner, loader, result) in enumerate(attempts, 1):
        kind = "application" if owner is app else "blueprint"
        lines.append(f"  {number}. {kind} {getattr(owner, 'name', owner)!r}")
        lines.append(f"     loader: {type(loader).__module__}.{type(loader).__qualname__}")
        searchpath = getattr(loader, "searchpath", None)
        if searchpath is not None:
            lines.append(f"     searchpath: {list(searchpath)!r}")
        if result is None:
            lines.append("     result: not found")
        else:
            hits += 1
            lines.append(f"     result: found at {result[1]!r}")
    if not attempts:
        lines.append("  No loaders are configured (no template folders).")
    if hits == 0:
        lines.append("No loader had the template.")
        req_ctx = _cv_request_get(None)
        blueprint = req_ctx.request.blueprint if req_ctx is not None else None
        if blueprint is not None:
            lines.append(
                f"  The request is handled by blueprint {blueprint!r}; its template folder is"
                " searched only after the app's, under the same names (templates are not"
                " namespaced by blueprint)."
            )
    elif hits > 1:
        lines.append(
            f"{hits} loaders had the template; the first one listed is used, the others are"
            " shadowed."
        )
    app.logger.info("\n".join(lines))


def create_jinja_environment(app: Carboy) -> Environment:
    """Build the Jinja environment for *app* (what ``app.create_jinja_environment()`` returns).

    Options come from ``app.jinja_options``. Unless given there, ``autoescape`` is
    ``app.select_jinja_autoescape`` and ``auto_reload`` is ``TEMPLATES_AUTO_RELOAD`` from the
    config, or ``app.debug`` when that is ``None``. The globals ``url_for``,
    ``get_flashed_messages``, ``config``, ``request``, ``session`` and ``g`` are set, and the
    ``tojson`` filter serialises with ``app.json.dumps``.

    Flask-compatible: ``flask.Flask.create_jinja_environment``.

    :param app: the application.
    :return: an instance of ``app.jinja_environment``.
    """
    from .helpers import get_flashed_messages

    options = dict(app.jinja_options)
    if "autoescape" not in options:
        options["autoescape"] = app.select_jinja_autoescape
    if "auto_reload" not in options:
        auto_reload = app.config.get("TEMPLATES_AUTO_RELOAD")
        options["auto_reload"] = app.debug if auto_reload is None else auto_reload
    env = app.jinja_environment(app, **options)
    env.globals.update(
        url_for=app.url_for,
        get_flashed_messages=get_flashed_messages,
        config=app.config,
        request=request,
        session=session,
        g=g,
    )
    env.policies["json.dumps_function"] = app.json.dumps
    return env


def _current_app() -> Carboy:
    ctx = _cv_app_get(None)
    if ctx is None:
        raise RuntimeError(_no_app_msg)
    return ctx.app


def _render(app: Carboy, template: Template, context: dict[str, t.Any]) -> str:
    app.update_template_context(context)
    if before_render_template.receivers:
        before_render_template.send(
            app, _async_wrapper=app.ensure_sync, template=template, context=context
        )
    text = template.render(context)
    if template_rendered.receivers:
        template_rendered.send(
            app, _async_wrapper=app.ensure_sync, template=template, context=context
        )
    return text


def _stream(app: Carboy, template: Template, context: dict[str, t.Any]) -> t.Iterator[str]:
    app.update_template_context(context)
    if before_render_template.receivers:
        before_render_template.send(
            app, _async_wrapper=app.ensure_sync, template=template, context=context
        )

    def generate() -> t.Iterator[str]:
        yield from template.generate(context)
        if template_rendered.receivers:
            template_rendered.send(
                app, _async_wrapper=app.ensure_sync, template=template, context=context
            )

    chunks = generate()
    if _cv_request_get(None) is not None:
        from .helpers import stream_with_context

        return stream_with_context(chunks)
    return chunks


#: What the render functions accept as the template: a name, a template, or a list of them.
TemplateRef = str | Template | list[str | Template]


def render_template(template_name_or_list: TemplateRef, **context: t.Any) -> str:
    """Render a template from the template folders with *context* and return the text.

    The context is completed by the app's (and the current blueprint's) context processors;
    values passed here win over theirs.

    Flask-compatible: ``flask.render_template``.

    :param template_name_or_list: a template name, a :class:`jinja2.Template`, or a list of
        them; with a list, the first one that exists is rendered.
    :param context: variables for the template.
    :return: the rendered text.
    :raises jinja2.TemplateNotFound: when no template is found (for a list,
        :class:`jinja2.TemplatesNotFound`).
    :raises RuntimeError: outside an app context.
    """
    app = _current_app()
    template = app.jinja_env.get_or_select_template(template_name_or_list)
    return _render(app, template, context)


def render_template_string(source: str, **context: t.Any) -> str:
    """Render the template source *source* with *context* (always HTML-autoescaped).

    Flask-compatible: ``flask.render_template_string``.

    :param source: Jinja template source text.
    :param context: variables for the template.
    :return: the rendered text.
    :raises jinja2.TemplateSyntaxError: for invalid source.
    :raises RuntimeError: outside an app context.
    """
    app = _current_app()
    template = app.jinja_env.from_string(source)
    return _render(app, template, context)


def stream_template(template_name_or_list: TemplateRef, **context: t.Any) -> t.Iterator[str]:
    """Render a template piece by piece, as an iterator of strings to return as a response.

    Inside a request the iterator keeps the request context active while it is consumed
    (it is wrapped with :func:`carboy.stream_with_context`).

    Flask-compatible: ``flask.stream_template``.

    :param template_name_or_list: a template name, a :class:`jinja2.Template`, or a list of
        them; with a list, the first one that exists is used.
    :param context: variables for the template.
    :return: an iterator of text chunks.
    :raises jinja2.TemplateNotFound: when no template is found.
    :raises RuntimeError: outside an app context.
    """
    app = _current_app()
    template = app.jinja_env.get_or_select_template(template_name_or_list)
    return _stream(app, template, context)


def stream_template_string(source: str, **context: t.Any) -> t.Iterator[str]:
    """Render the template source *source* piece by piece (always HTML-autoescaped).

    Flask-compatible: ``flask.stream_template_string``.

    :param source: Jinja template source text.
    :param context: variables for the template.
    :return: an iterator of text chunks.
    :raises jinja2.TemplateSyntaxError: for invalid source.
    :raises RuntimeError: outside an app context.
    """
    app = _current_app()
    template = app.jinja_env.from_string(source)
    return _stream(app, template, context)


__all__ = [
    "DispatchingJinjaLoader",
    "Environment",
    "create_jinja_environment",
    "render_template",
    "render_template_string",
    "select_jinja_autoescape",
    "stream_template",
    "stream_template_string",
]
