"""The benchmark app on Falcon: :data:`wsgi` (``falcon.App``) and :data:`asgi`
(``falcon.asgi.App``), the same resources with sync or ``async`` responders.

Falcon has no sessions and no templates of its own: the session is a JSON dict in a cookie
signed with itsdangerous, and pages are rendered by a Jinja2 environment.
"""

from __future__ import annotations

import typing as t

import falcon
import falcon.asgi
import jinja2
from itsdangerous import BadSignature, URLSafeSerializer

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

templates = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True)
signer = URLSafeSerializer(SECRET_KEY, salt="session")


def load_session(req: falcon.Request | falcon.asgi.Request) -> dict[str, t.Any]:
    cookie = req.cookies.get(SESSION_COOKIE)
    if cookie is None:
        return {}
    try:
        return dict(signer.loads(cookie))
    except BadSignature:
        return {}


class Hello:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = HELLO


class User:
    def on_get(self, req: falcon.Request, resp: falcon.Response, user_id: int) -> None:
        resp.media = {"id": user_id, "name": f"user-{user_id}", "active": True}


class Form:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = req.get_media()
        resp.media = {
            "page": req.get_param_as_int("page"),
            "sort": req.get_param("sort"),
            "name": form["name"],
            "count": int(form["count"]),
        }


class Page:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = templates.get_template(TEMPLATE_NAME).render(title=TITLE, items=ITEMS)


class Counter:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        session = load_session(req)
        session["count"] = count = session.get("count", 0) + 1
        resp.set_cookie(SESSION_COOKIE, signer.dumps(session))
        resp.media = {"count": count}


class Filler:
    def on_get(self, req: falcon.Request, resp: falcon.Response, **params: t.Any) -> None:
        resp.text = "filler"


class AsyncHello:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = HELLO


class AsyncUser:
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, user_id: int
    ) -> None:
        resp.media = {"id": user_id, "name": f"user-{user_id}", "active": True}


class AsyncForm:
    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        form = await req.get_media()
        resp.media = {
            "page": req.get_param_as_int("page"),
            "sort": req.get_param("sort"),
            "name": form["name"],
            "count": int(form["count"]),
        }


class AsyncPage:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = templates.get_template(TEMPLATE_NAME).render(title=TITLE, items=ITEMS)


class AsyncCounter:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        session = load_session(req)
        session["count"] = count = session.get("count", 0) + 1
        resp.set_cookie(SESSION_COOKIE, signer.dumps(session))
        resp.media = {"count": count}


class AsyncFiller:
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: t.Any
    ) -> None:
        resp.text = "filler"


def create_app(asynchronous: bool) -> t.Any:
    resources: tuple[t.Any, ...]
    if asynchronous:
        app: t.Any = falcon.asgi.App()
        resources = (AsyncHello, AsyncUser, AsyncForm, AsyncPage, AsyncCounter, AsyncFiller)
    else:
        app = falcon.App()
        resources = (Hello, User, Form, Page, Counter, Filler)
    hello, user, form, page, counter, filler = (resource() for resource in resources)
    app.add_route("/", hello)
    app.add_route("/users/{user_id:int}", user)
    app.add_route("/form", form)
    app.add_route("/page", page)
    app.add_route("/session", counter)
    app.add_static_route("/static", str(STATIC_DIR))
    for i in range(FILLER_ROUTES):
        app.add_route(filler_rule(i, "{item_id:int}", "{slug}"), filler)
    return app


_apps: dict[str, t.Any] = {}


def __getattr__(name: str) -> t.Any:
    """Make ``wsgi`` or ``asgi`` on first use, so a server's worker (which serves one of the
    two) holds only that app in memory."""
    if name not in ("wsgi", "asgi"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _apps:
        _apps[name] = create_app(asynchronous=name == "asgi")
    return _apps[name]
