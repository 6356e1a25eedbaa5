"""The benchmark app on Bottle: :data:`wsgi`.

Sessions are Bottle's signed cookies holding a JSON string; pages are rendered with
Bottle's Jinja2 adapter, autoescaping on as in the other apps.
"""

from __future__ import annotations

import functools
import json
import typing as t

from bottle import Bottle, HTTPResponse, jinja2_template, request, response, static_file

from .common import (
    FILLER_ROUTES,
    HELLO,
    ITEMS,
    SECRET_KEY,
    SESSION_COOKIE,
    STATIC_DIR,
    TEMPLATE_DIR,
    TEMPLATE_NAME,
    TITLE,
    filler_rule,
)

app = Bottle()
# One lookup list for every call: Bottle caches compiled templates by its id.
render = functools.partial(
    jinja2_template,
    template_lookup=[str(TEMPLATE_DIR)],
    template_settings={"autoescape": True},
)


@app.get("/")
def hello() -> str:
    return HELLO


@app.get("/users/<user_id:int>")
def user(user_id: int) -> dict[str, t.Any]:
    return {"id": user_id, "name": f"user-{user_id}", "active": True}


@app.post("/form")
def form() -> dict[str, t.Any]:
    return {
        "page": int(request.query.page),
        "sort": request.query.sort,
        "name": request.forms.name,
        "count": int(request.forms.count),
    }


@app.get("/page")
def page() -> str:
    return render(TEMPLATE_NAME, title=TITLE, items=ITEMS)


@app.get("/session")
def counter() -> dict[str, int]:
    session = json.loads(request.get_cookie(SESSION_COOKIE, "{}", secret=SECRET_KEY))
    session["count"] = count = session.get("count", 0) + 1
    response.set_cookie(SESSION_COOKIE, json.dumps(session), secret=SECRET_KEY)
    return {"count": count}


@app.get("/static/<filename:path>")
def static(filename: str) -> HTTPResponse:
    return static_file(filename, root=str(STATIC_DIR))


def filler(**values: t.Any) -> str:
    return "filler"


for i in range(FILLER_ROUTES):
    app.route(filler_rule(i, "<item_id:int>", "<slug>"), "GET", filler, name=f"filler_{i}")

if len(app.routes) != 200:
    raise RuntimeError("the benchmark app must have 200 routes")

wsgi = app
