"""Blueprints: groups of routes, hooks and handlers registered on an app, possibly nested.

Flask-compatible: ``flask.Blueprint`` and ``flask.blueprints.BlueprintSetupState``. Registering a
blueprint copies its records into the app's dicts under the blueprint's dotted name; the app never
consults the blueprint object at request time.
"""

from __future__ import annotations

import os
import typing as t
from collections import defaultdict

from . import typing as ft
from .scaffold import (
    Scaffold,
    T_after,
    T_before,
    T_ctx,
    T_error,
    T_filter,
    T_global,
    T_teardown,
    T_test,
    T_url_defaults,
    T_url_pre,
    _endpoint_from_view_func,
    setupmethod,
)

if t.TYPE_CHECKING:
    from .app import Carboy

DeferredSetupFunction = t.Callable[["BlueprintSetupState"], None]

_sentinel: t.Any = object()


class BlueprintSetupState:
    """What one registration of a blueprint on an app knows; passed to deferred functions.

    Flask-compatible: ``flask.blueprints.BlueprintSetupState``.
    """

    def __init__(
        self,
        blueprint: Blueprint,
        app: Carboy,
        options: t.Any,
        first_registration: bool,
    ) -> None:
        #: The app the blueprint is being registered on.
        self.app = app
        #: The blueprint being registered.
        self.blueprint = blueprint
        #: The keyword arguments given to ``register_blueprint``.
        self.options = options
        #: Whether this blueprint had not been registered on the app before.
        self.first_registration = first_registration
        subdomain = self.options.get("subdomain")
        if subdomain is None:
            subdomain = self.blueprint.subdomain
        #: Subdomain of the blueprint's rules, or ``None``.
        self.subdomain = subdomain
        url_prefix = self.options.get("url_prefix")
        if url_prefix is None:
            url_prefix = self.blueprint.url_prefix
        #: URL prefix of the blueprint's rules, or ``None``.
        self.url_prefix = url_prefix
        #: The registered name (``name=`` option or the blueprint's name).
        self.name = self.options.get("name", blueprint.name)
        #: The dotted name of the enclosing blueprint, ``""`` at the top level.
        self.name_prefix = self.options.get("name_prefix", "")
        #: Default view arguments for every rule of the blueprint.
        self.url_defaults = dict(self.blueprint.url_values_defaults)
        self.url_defaults.update(self.options.get("url_defaults", ()))

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: ft.RouteCallable | None = None,
        **options: t.Any,
    ) -> None:
        """Register a rule on the app with the blueprint's prefix, subdomain and dotted name."""
        if self.url_prefix is not None:
            rule = (
                "/".join((self.url_prefix.rstrip("/"), rule.lstrip("/")))
                if rule
                else (self.url_prefix)
            )
        options.setdefault("subdomain", self.subdomain)
        if endpoint is None:
            endpoint = _endpoint_from_view_func(view_func)  # type: ignore[arg-type]
        defaults = self.url_defaults
        if "defaults" in options:
            defaults = dict(defaults, **options.pop("defaults"))
        self.app.add_url_rule(
            rule,
            f"{self.name_prefix}.{self.name}.{endpoint}".lstrip("."),
            view_func,
            defaults=defaults,
            **options,
        )


class Blueprint(Scaffold):
    """A set of routes and hooks registered on an app with :meth:`Carboy.register_blueprint`.

    Flask-compatible: ``flask.Blueprint``.

    :param name: the blueprint's name, prefixed to its endpoints; no dots.
    :param import_name: the module name, usually ``__name__``.
    :param static_folder: static files folder relative to the blueprint's ``root_path``.
    :param static_url_path: URL prefix for the static files.
    :param template_folder: templates folder, searched after the app's.
    :param url_prefix: prefixed to every rule of the blueprint.
    :param subdomain: subdomain for every rule of the blueprint.
    :param url_defaults: default view arguments for every rule.
    :param root_path: overrides the folder found from *import_name*.
    :param cli_group: name of the CLI group for ``bp.cli`` commands; ``None`` adds them to the
        app's group directly.
    :raises ValueError: for an empty name or one containing a dot.
    """

    _got_registered_once = False

    def __init__(
        self,
        name: str,
        import_name: str,
        static_folder: str | os.PathLike[str] | None = None,
        static_url_path: str | None = None,
        template_folder: str | os.PathLike[str] | None = None,
        url_prefix: str | None = None,
        subdomain: str | None = None,
        url_defaults: dict[str, t.Any] | None = None,
        root_path: str | None = None,
        cli_group: str | None = _sentinel,
    ) -> None:
        super().__init__(
            import_name=import_name,
            static_folder=static_folder,
            static_url_path=static_url_path,
            template_folder=template_folder,
            root_path=root_path,
        )
        if not name:
            raise ValueError("'name' may not be empty.")
        if "." in name:
            raise ValueError("'name' may not contain a dot '.' character.")
        self.name = name
        self.url_prefix = url_prefix
        self.subdomain = subdomain
        self.deferred_functions: list[DeferredSetupFunction] = []
        self.url_values_defaults = url_defaults or {}
        self.cli_group = cli_group
        self._blueprints: list[tuple[Blueprint, dict[str, t.Any]]] = []

    def _check_setup_finished(self, f_name: str) -> None:
        if self._got_registered_once:
            raise AssertionError(
                f"'{f_name}' was called on blueprint '{self.name}' after it was registered on"
                " an app. Registrations made now would reach some apps and not others; make"
                " every setup call before registering the blueprint."
            )

    @setupmethod
    def record(self, func: DeferredSetupFunction) -> None:
        """Call *func(state)* each time the blueprint is registered on an app.

        Flask-compatible: ``flask.Blueprint.record``.
        """
        self.deferred_functions.append(func)

    @setupmethod
    def record_once(self, func: DeferredSetupFunction) -> None:
        """Like :meth:`record`, but only on the blueprint's first registration on each app.

        Flask-compatible: ``flask.Blueprint.record_once``.
        """

        def wrapper(state: BlueprintSetupState) -> None:
            if state.first_registration:
                func(state)

        self.record(wrapper)

    def make_setup_state(
        self, app: Carboy, options: dict[str, t.Any], first_registration: bool = False
    ) -> BlueprintSetupState:
        """Create the :class:`BlueprintSetupState` passed to deferred functions."""
        return BlueprintSetupState(self, app, options, first_registration)

    @setupmethod
    def register_blueprint(self, blueprint: Blueprint, **options: t.Any) -> None:
        """Nest *blueprint* in this one; its endpoints become ``parent.child.view``.

        Flask-compatible: ``flask.Blueprint.register_blueprint``.

        :raises ValueError: when registering a blueprint on itself.
        """
        if blueprint is self:
            raise ValueError("Cannot register a blueprint on itself")
        self._blueprints.append((blueprint, options))

    def register(self, app: Carboy, options: dict[str, t.Any]) -> None:
        """Register this blueprint (and its nested ones) on *app*; called by the app.

        :raises ValueError: when the dotted name is already registered.
        """
        name_prefix = options.get("name_prefix", "")
        self_name = options.get("name", self.name)
        name = f"{name_prefix}.{self_name}".lstrip(".")
        if name in app.blueprints:
            which = "this" if app.blueprints[name] is self else "a different"
            raise ValueError(
                f"The name '{self_name}' is already registered for {which} blueprint"
                f" ('{name}'). Give this registration a unique name with 'name='."
            )
        first_bp_registration = not any(bp is self for bp in app.blueprints.values())
        app.blueprints[name] = self
        self._got_registered_once = True
        state = self.make_setup_state(app, options, first_bp_registration)

        if self.has_static_folder:
            state.add_url_rule(
                f"{self.static_url_path}/<path:filename>",
                view_func=self.send_static_file,
                endpoint="static",
            )
        self._merge_blueprint_funcs(app, name)
        for deferred in self.deferred_functions:
            deferred(state)

        group = options.get("cli_group", self.cli_group)
        if self.cli.commands:
            if group is None:
                app.cli.commands.update(self.cli.commands)
            else:
                self.cli.name = name if group is _sentinel else group
                app.cli.add_command(self.cli)

        for blueprint, bp_options in self._blueprints:
            bp_options = bp_options.copy()
            sub = bp_options.get("subdomain", blueprint.subdomain)
            if state.subdomain is not None and sub is not None:
                bp_options["subdomain"] = f"{sub}.{state.subdomain}"
            elif sub is not None or state.subdomain is not None:
                bp_options["subdomain"] = sub if sub is not None else state.subdomain
            prefix = bp_options.get("url_prefix")
            if prefix is None:
                prefix = blueprint.url_prefix
            if state.url_prefix is not None and prefix is not None:
                bp_options["url_prefix"] = f"{state.url_prefix.rstrip('/')}/{prefix.lstrip('/')}"
            elif prefix is not None or state.url_prefix is not None:
                bp_options["url_prefix"] = prefix if prefix is not None else state.url_prefix
            bp_options["name_prefix"] = name
            blueprint.register(app, bp_options)

    def _merge_blueprint_funcs(self, app: Carboy, name: str) -> None:
        def scoped(key: str | None) -> str:
            return name if key is None else f"{name}.{key}"

        # Views given by ``@blueprint.endpoint(name)`` serve the app's endpoint of that name.
        app.view_functions.update(self.view_functions)
        for key, by_code in self.error_handler_spec.items():
            app.error_handler_spec[scoped(key)] = defaultdict(
                dict, {code: dict(handlers) for code, handlers in by_code.items()}
            )
        registries: tuple[tuple[t.Any, t.Any], ...] = (
            (self.before_request_funcs, app.before_request_funcs),
            (self.before_websocket_funcs, app.before_websocket_funcs),
            (self.after_request_funcs, app.after_request_funcs),
            (self.teardown_request_funcs, app.teardown_request_funcs),
            (self.url_default_functions, app.url_default_functions),
            (self.url_value_preprocessors, app.url_value_preprocessors),
            (self.template_context_processors, app.template_context_processors),
        )
        for own, target in registries:
            for key, funcs in own.items():
                target.setdefault(scoped(key), []).extend(funcs)

    @setupmethod
    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: ft.RouteCallable | None = None,
        provide_automatic_options: bool | None = None,
        **options: t.Any,
    ) -> None:
        """Record a rule to register on the app, under ``<blueprint>.<endpoint>``.

        Flask-compatible: ``flask.Blueprint.add_url_rule``.

        :raises ValueError: when *endpoint* or the view function's name contains a dot.
        """
        if endpoint and "." in endpoint:
            raise ValueError("'endpoint' may not contain a dot '.' character.")
        if view_func and "." in getattr(view_func, "__name__", ""):
            raise ValueError("'view_func' name may not contain a dot '.' character.")
        self.record(
            lambda s: s.add_url_rule(
                rule,
                endpoint,
                view_func,
                provide_automatic_options=provide_automatic_options,
                **options,
            )
        )

    # -- app-wide registrations made from a blueprint --------------------------------------

    @setupmethod
    def app_template_filter(self, name: str | None = None) -> t.Callable[[T_filter], T_filter]:
        """Register an app-wide template filter. Flask-compatible: ``flask.Blueprint``."""

        def decorator(f: T_filter) -> T_filter:
            self.add_app_template_filter(f, name=name)
            return f

        return decorator

    @setupmethod
    def add_app_template_filter(
        self, f: ft.TemplateFilterCallable, name: str | None = None
    ) -> None:
        """Non-decorator form of :meth:`app_template_filter`."""
        self.record_once(lambda s: s.app.add_template_filter(f, name=name))

    @setupmethod
    def app_template_test(self, name: str | None = None) -> t.Callable[[T_test], T_test]:
        """Register an app-wide template test. Flask-compatible: ``flask.Blueprint``."""

        def decorator(f: T_test) -> T_test:
            self.add_app_template_test(f, name=name)
            return f

        return decorator

    @setupmethod
    def add_app_template_test(self, f: ft.TemplateTestCallable, name: str | None = None) -> None:
        """Non-decorator form of :meth:`app_template_test`."""
        self.record_once(lambda s: s.app.add_template_test(f, name=name))

    @setupmethod
    def app_template_global(self, name: str | None = None) -> t.Callable[[T_global], T_global]:
        """Register an app-wide template global. Flask-compatible: ``flask.Blueprint``."""

        def decorator(f: T_global) -> T_global:
            self.add_app_template_global(f, name=name)
            return f

        return decorator

    @setupmethod
    def add_app_template_global(
        self, f: ft.TemplateGlobalCallable, name: str | None = None
    ) -> None:
        """Non-decorator form of :meth:`app_template_global`."""
        self.record_once(lambda s: s.app.add_template_global(f, name=name))

    @setupmethod
    def before_app_request(self, f: T_before) -> T_before:
        """Like :meth:`before_request`, for every request of the app."""
        self.record_once(lambda s: s.app.before_request_funcs.setdefault(None, []).append(f))
        return f

    @setupmethod
    def after_app_request(self, f: T_after) -> T_after:
        """Like :meth:`after_request`, for every request of the app."""
        self.record_once(lambda s: s.app.after_request_funcs.setdefault(None, []).append(f))
        return f

    @setupmethod
    def teardown_app_request(self, f: T_teardown) -> T_teardown:
        """Like :meth:`teardown_request`, for every request of the app."""
        self.record_once(lambda s: s.app.teardown_request_funcs.setdefault(None, []).append(f))
        return f

    @setupmethod
    def app_context_processor(self, f: T_ctx) -> T_ctx:
        """Like :meth:`context_processor`, for every template of the app."""
        self.record_once(lambda s: s.app.template_context_processors.setdefault(None, []).append(f))
        return f

    @setupmethod
    def app_errorhandler(self, code: type[Exception] | int) -> t.Callable[[T_error], T_error]:
        """Like :meth:`errorhandler`, for errors anywhere in the app."""

        def decorator(f: T_error) -> T_error:
            def register(s: BlueprintSetupState) -> None:
                s.app.errorhandler(code)(f)

            self.record_once(register)
            return f

        return decorator

    @setupmethod
    def app_url_value_preprocessor(self, f: T_url_pre) -> T_url_pre:
        """Like :meth:`url_value_preprocessor`, for every request of the app."""
        self.record_once(lambda s: s.app.url_value_preprocessors.setdefault(None, []).append(f))
        return f

    @setupmethod
    def app_url_defaults(self, f: T_url_defaults) -> T_url_defaults:
        """Like :meth:`url_defaults`, for every URL built in the app."""
        self.record_once(lambda s: s.app.url_default_functions.setdefault(None, []).append(f))
        return f
