"""Class-based views.

Flask-compatible: ``flask.views``. Subclass :class:`View` and implement
:meth:`View.dispatch_request`, or subclass :class:`MethodView` and write one method per HTTP
method (``get``, ``post``, ...); then register ``YourView.as_view("name")`` with
``add_url_rule``.
"""

from __future__ import annotations

import inspect
import typing as t

from . import typing as ft
from .concurrency import ensure_async
from .globals import current_app, request

#: The lower-case HTTP method names :class:`MethodView` looks for as handler methods.
http_method_funcs: frozenset[str] = frozenset(
    ["get", "post", "head", "options", "delete", "put", "trace", "patch"]
)


class View:
    """Base class for a view written as a class.

    Override :meth:`dispatch_request`; URL variables arrive as keyword arguments. Register the
    function made by :meth:`as_view`. By default a new instance is made for every request
    (:attr:`init_every_request`).

    Flask-compatible: ``flask.views.View``.
    """

    #: The HTTP methods the view accepts, used by ``add_url_rule`` when it is given none.
    methods: t.ClassVar[t.Collection[str] | None] = None

    #: Whether the app answers ``OPTIONS`` for this view itself; ``None`` follows the app's
    #: ``PROVIDE_AUTOMATIC_OPTIONS`` setting.
    provide_automatic_options: t.ClassVar[bool | None] = None

    #: Decorators applied, in order, to the view function made by :meth:`as_view`; the first
    #: one listed is the innermost. They wrap the function, not the class.
    decorators: t.ClassVar[list[t.Callable[..., t.Any]]] = []

    #: Whether a new instance is created for each request (``True``) or one instance, made in
    #: :meth:`as_view`, serves every request (``False``; it must not keep per-request state).
    init_every_request: t.ClassVar[bool] = True

    @classmethod
    def _dispatches_async(cls) -> bool:
        return inspect.iscoroutinefunction(cls.dispatch_request)

    async def _dispatch_async(self, **kwargs: t.Any) -> t.Any:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return await ensure_async(app, self.dispatch_request)(**kwargs)

    def dispatch_request(self) -> ft.ResponseReturnValue:
        """Handle the request and return a response value; URL variables are keyword arguments.

        :raises NotImplementedError: unless a subclass overrides it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must override 'dispatch_request' to handle requests."
        )

    @classmethod
    def as_view(cls, name: str, *class_args: t.Any, **class_kwargs: t.Any) -> ft.RouteCallable:
        """Make a view function that handles requests with an instance of this class.

        The function has the attributes ``view_class``, ``methods`` and
        ``provide_automatic_options``, is named *name* (the default endpoint), and takes
        ``__doc__`` and ``__module__`` from the class. Async ``dispatch_request`` methods are
        run through ``current_app.ensure_sync``.

        Flask-compatible: ``flask.views.View.as_view``.

        :param name: the view function's ``__name__``, used as the endpoint name.
        :param class_args: positional arguments for the class constructor.
        :param class_kwargs: keyword arguments for the class constructor.
        :return: the view function, wrapped by :attr:`decorators`.
        """
        # The outermost (decorated) function; the per-request factory reads ``view_class``
        # from it at call time, so replacing that attribute takes effect.
        view_func: t.Any
        if cls._dispatches_async():
            # An async view function, so that under ASGI the handler runs on the event loop
            # (a sync wrapper would send it to the thread pool and back).
            shared_instance = None if cls.init_every_request else cls(*class_args, **class_kwargs)

            async def run_async(**kwargs: t.Any) -> t.Any:
                instance = shared_instance
                if instance is None:
                    instance = view_func.view_class(*class_args, **class_kwargs)
                return await instance._dispatch_async(**kwargs)

            view_func = run_async
        elif cls.init_every_request:

            def view(**kwargs: t.Any) -> ft.ResponseReturnValue:
                instance = view_func.view_class(*class_args, **class_kwargs)
                rv: ft.ResponseReturnValue = current_app.ensure_sync(instance.dispatch_request)(
                    **kwargs
                )
                return rv

            view_func = view
        else:
            shared = cls(*class_args, **class_kwargs)

            def view_shared(**kwargs: t.Any) -> ft.ResponseReturnValue:
                rv: ft.ResponseReturnValue = current_app.ensure_sync(shared.dispatch_request)(
                    **kwargs
                )
                return rv

            view_func = view_shared
        if cls.decorators:
            # Decorators that copy metadata (functools.wraps) should see the final names.
            view_func.__name__ = name
            view_func.__module__ = cls.__module__
            for decorator in cls.decorators:
                view_func = decorator(view_func)

        # Set on the outermost function, so the app finds them even when a decorator did not
        # copy attributes over.
        view_func.view_class = cls
        view_func.__name__ = name
        view_func.__doc__ = cls.__doc__
        view_func.__module__ = cls.__module__
        view_func.methods = cls.methods
        view_func.provide_automatic_options = cls.provide_automatic_options
        result: ft.RouteCallable = view_func
        return result


class MethodView(View):
    """A class-based view that sends each request to the method named after its HTTP method.

    Define ``get``, ``post``, ``put``, ... on a subclass. :attr:`methods` is then filled in
    from the handlers defined on the class and its bases (unless the subclass sets it). A
    ``HEAD`` request without a ``head`` handler is handled by ``get``.

    Flask-compatible: ``flask.views.MethodView``.
    """

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        if "methods" in cls.__dict__:
            return
        found: set[str] = set()
        for base in cls.__bases__:
            base_methods = getattr(base, "methods", None)
            if base_methods:
                found.update(base_methods)
        for name in http_method_funcs:
            if hasattr(cls, name):
                found.add(name.upper())
        if found:
            cls.methods = found

    @classmethod
    def _dispatches_async(cls) -> bool:
        if cls.dispatch_request is not MethodView.dispatch_request:
            return super()._dispatches_async()
        return any(
            inspect.iscoroutinefunction(getattr(cls, name, None)) for name in http_method_funcs
        )

    async def _dispatch_async(self, **kwargs: t.Any) -> t.Any:
        if type(self).dispatch_request is not MethodView.dispatch_request:
            return await super()._dispatch_async(**kwargs)
        handler = self._handler()
        return await ensure_async(current_app._get_current_object(), handler)(**kwargs)  # type: ignore[attr-defined]

    def _handler(self) -> t.Callable[..., t.Any]:
        method = request.method
        handler = getattr(self, method.lower(), None)
        if handler is None and method == "HEAD":
            handler = getattr(self, "get", None)
        if handler is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no handler for the {method!r} method; define"
                f" '{method.lower()}' or remove {method!r} from its 'methods'."
            )
        return handler  # type: ignore[no-any-return]

    def dispatch_request(self, **kwargs: t.Any) -> ft.ResponseReturnValue:
        """Call the handler for ``request.method`` with the URL variables.

        :raises NotImplementedError: when the class has no handler for the request's method
            (possible only when :attr:`methods` lists a method no handler exists for).
        """
        rv: ft.ResponseReturnValue = current_app.ensure_sync(self._handler())(**kwargs)
        return rv


__all__ = ["MethodView", "View", "http_method_funcs"]
