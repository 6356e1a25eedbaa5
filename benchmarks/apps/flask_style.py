"""The benchmark app in Flask's API, built by one function for Flask and for carboy.

Both frameworks get exactly this code, so their routes and views cannot drift apart.
"""

from __future__ import annotations

import types
import typing as t

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


def build(app_class: type[t.Any], framework: types.ModuleType) -> t.Any:
    """The sync-view benchmark app on *app_class* (``Flask`` or ``Carboy``), using the
    ``request``, ``session`` and ``render_template`` of *framework* (``flask`` or ``carboy``)."""
    request, session, render_template = (
        framework.request,
        framework.session,
        framework.render_template,
    )
    app = app_class(
        framework.__name__ + "_bench",
        static_folder=str(STATIC_DIR),
        static_url_path="/static",
        template_folder=str(TEMPLATE_DIR),
    )
    app.secret_key = SECRET_KEY

    @app.get("/")
    def hello() -> str:
        return HELLO

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, t.Any]:
        return {"id": user_id, "name": f"user-{user_id}", "active": True}

    @app.post("/form")
    def form() -> dict[str, t.Any]:
        args, form = request.args, request.form
        return {
            "page": args.get("page", type=int),
            "sort": args["sort"],
            "name": form["name"],
            "count": form.get("count", type=int),
        }

    @app.get("/page")
    def page() -> str:
        return render_template(TEMPLATE_NAME, title=TITLE, items=ITEMS)

    @app.get("/session")
    def counter() -> dict[str, int]:
        session["count"] = count = session.get("count", 0) + 1
        return {"count": count}

    def filler(**values: t.Any) -> str:
        return "filler"

    for i in range(FILLER_ROUTES):
        app.add_url_rule(filler_rule(i, "<int:item_id>", "<slug>"), f"filler_{i}", filler)
    if len(list(app.url_map.iter_rules())) != 200:
        raise RuntimeError("the benchmark app must have 200 rules")
    return app
