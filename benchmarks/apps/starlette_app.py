"""The benchmark app on Starlette: :data:`asgi`.

Sessions: :class:`~starlette.middleware.sessions.SessionMiddleware` wraps the session route
only, so no other route pays for it (Starlette's best case; carboy, Flask and Quart have
sessions app-wide). Form parsing needs the ``python-multipart`` package: without it the form
scenario is left out (:data:`SCENARIOS`), not answered some other way.
"""

from __future__ import annotations

import importlib.util

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

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

_ALL = ("hello", "json", "form", "template", "404", "session", "static")
if importlib.util.find_spec("python_multipart") is None:
    SCENARIOS = tuple(name for name in _ALL if name != "form")
    UNSUPPORTED_REASON = "Starlette's form parsing needs python-multipart (not installed)"
else:
    SCENARIOS = _ALL

templates = Jinja2Templates(directory=TEMPLATE_DIR)


async def hello(request: Request) -> Response:
    return PlainTextResponse(HELLO)


async def user(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    return JSONResponse({"id": user_id, "name": f"user-{user_id}", "active": True})


async def form(request: Request) -> Response:
    query, form = request.query_params, await request.form()
    return JSONResponse(
        {
            "page": int(query["page"]),
            "sort": query["sort"],
            "name": form["name"],
            "count": int(str(form["count"])),
        }
    )


async def page(request: Request) -> Response:
    return templates.TemplateResponse(request, TEMPLATE_NAME, {"title": TITLE, "items": ITEMS})


async def counter(request: Request) -> Response:
    request.session["count"] = count = request.session.get("count", 0) + 1
    return JSONResponse({"count": count})


async def filler(request: Request) -> Response:
    return PlainTextResponse("filler")


sessions = [Middleware(SessionMiddleware, secret_key=SECRET_KEY, session_cookie=SESSION_COOKIE)]
routes: list[BaseRoute] = [
    Route("/", hello),
    Route("/users/{user_id:int}", user),
    Route("/form", form, methods=["POST"]),
    Route("/page", page),
    Route("/session", counter, middleware=sessions),
    Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
]
routes += [
    Route(filler_rule(i, "{item_id:int}", "{slug}"), filler, name=f"filler_{i}")
    for i in range(FILLER_ROUTES)
]
if len(routes) != 200:
    raise RuntimeError("the benchmark app must have 200 routes")

asgi = Starlette(routes=routes)
