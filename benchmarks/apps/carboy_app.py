"""The benchmark app on carboy: :data:`wsgi` for WSGI servers, :data:`asgi` for ASGI servers.

A carboy app object is a WSGI and an ASGI application at once. Under ASGI, carboy runs an
``async def`` view on the event loop and sends a plain ``def`` view to its thread pool, so an
app written for an ASGI server declares its views ``async def``: :data:`asgi` is the same app
as :data:`wsgi`, with the same code in each view, declared ``async def``.
"""

from __future__ import annotations

import typing as t

import carboy
from carboy import Carboy, render_template, request, session

from .common import (
    FILLER_ROUTES,
    HELLO,
    ITEMS,
    SECRET_KEY,
    STATIC_DIR,
    TEMPLATE_DIR,
    TEMPLATE_NAME,
    TITLE,
    filler_rule,
)
from .flask_style import build


def create_app(asynchronous: bool) -> Carboy:
    if not asynchronous:
        # The same code as the Flask app's views (one builder for both).
        return t.cast(Carboy, build(Carboy, carboy))
    app = Carboy(
        __name__,
        static_folder=str(STATIC_DIR),
        static_url_path="/static",
        template_folder=str(TEMPLATE_DIR),
    )
    app.secret_key = SECRET_KEY
    _add_async_views(app)
    if len(list(app.url_map.iter_rules())) != 200:
        raise RuntimeError("the benchmark app must have 200 rules")
    return app


def _add_async_views(app: Carboy) -> None:
    @app.get("/")
    async def hello() -> str:
        return HELLO

    @app.get("/users/<int:user_id>")
    async def user(user_id: int) -> dict[str, t.Any]:
        return {"id": user_id, "name": f"user-{user_id}", "active": True}

    @app.post("/form")
    async def form() -> dict[str, t.Any]:
        args, form = request.args, request.form
        return {
            "page": args.get("page", type=int),
            "sort": args["sort"],
            "name": form["name"],
            "count": form.get("count", type=int),
        }

    @app.get("/page")
    async def page() -> str:
        return render_template(TEMPLATE_NAME, title=TITLE, items=ITEMS)

    @app.get("/session")
    async def counter() -> dict[str, int]:
        session["count"] = count = session.get("count", 0) + 1
        return {"count": count}

    async def filler(**values: t.Any) -> str:
        return "filler"

    for i in range(FILLER_ROUTES):
        app.add_url_rule(filler_rule(i, "<int:item_id>", "<slug>"), f"filler_{i}", filler)


_apps: dict[str, t.Any] = {}


def __getattr__(name: str) -> t.Any:
    """Make ``wsgi`` or ``asgi`` on first use, so a server's worker (which serves one of the
    two) holds only that app in memory."""
    if name not in ("wsgi", "asgi"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _apps:
        _apps[name] = create_app(asynchronous=name == "asgi")
    return _apps[name]
