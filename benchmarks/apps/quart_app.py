"""The benchmark app on Quart: :data:`asgi`."""

from __future__ import annotations

import typing as t

from quart import Quart, render_template, request, session

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

app = Quart(
    __name__,
    static_folder=str(STATIC_DIR),
    static_url_path="/static",
    template_folder=str(TEMPLATE_DIR),
)
app.secret_key = SECRET_KEY


@app.get("/")
async def hello() -> str:
    return HELLO


@app.get("/users/<int:user_id>")
async def user(user_id: int) -> dict[str, t.Any]:
    return {"id": user_id, "name": f"user-{user_id}", "active": True}


@app.post("/form")
async def form() -> dict[str, t.Any]:
    args, form = request.args, await request.form
    return {
        "page": args.get("page", type=int),
        "sort": args["sort"],
        "name": form["name"],
        "count": form.get("count", type=int),
    }


@app.get("/page")
async def page() -> str:
    return await render_template(TEMPLATE_NAME, title=TITLE, items=ITEMS)


@app.get("/session")
async def counter() -> dict[str, int]:
    session["count"] = count = session.get("count", 0) + 1
    return {"count": count}


async def filler(**values: t.Any) -> str:
    return "filler"


for i in range(FILLER_ROUTES):
    app.add_url_rule(filler_rule(i, "<int:item_id>", "<slug>"), f"filler_{i}", filler)

if len(list(app.url_map.iter_rules())) != 200:
    raise RuntimeError("the benchmark app must have 200 rules")

asgi = app
