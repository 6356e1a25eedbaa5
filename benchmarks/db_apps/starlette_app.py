"""The database scenarios on Starlette: :data:`asgi`, with psycopg 3's
:class:`psycopg_pool.AsyncConnectionPool` (opened and closed by the app's lifespan), the same
pool size and statements as carboy's async app, and :class:`~starlette.templating.Jinja2Templates`
for the fortunes page. Built on first access.
"""

from __future__ import annotations

import contextlib
import typing as t
from collections.abc import AsyncIterator

from . import common


def create_app() -> t.Any:
    from psycopg_pool import AsyncConnectionPool
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.templating import Jinja2Templates

    size = common.pool_size()
    pool = AsyncConnectionPool(common.url(), min_size=size, max_size=size, open=False)
    templates = Jinja2Templates(directory=common.TEMPLATE_DIR)
    schema = common.schema()
    select_world = common.SELECT_WORLD.format(schema=schema)
    select_fortunes = common.SELECT_FORTUNES.format(schema=schema)
    update_world = common.UPDATE_WORLD.format(schema=schema)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=True)
        try:
            yield
        finally:
            await pool.close()

    async def read(conn: t.Any, ids: list[int]) -> list[dict[str, int]]:
        worlds = []
        for i in ids:
            cur = await conn.execute(select_world, (i,))
            row = await cur.fetchone()
            worlds.append({"id": row[0], "randomNumber": row[1]})
        return worlds

    async def single(request: Request) -> Response:
        async with pool.connection() as conn:
            return JSONResponse((await read(conn, [common.random_id()]))[0])

    async def queries(request: Request) -> Response:
        ids = common.random_ids(common.queries(request.query_params.get("queries")))
        async with pool.connection() as conn:
            worlds = await read(conn, ids)
        return JSONResponse(worlds)

    async def fortunes(request: Request) -> Response:
        async with pool.connection() as conn:
            cur = await conn.execute(select_fortunes)
            rows = await cur.fetchall()
        rows.append(common.ADDED_FORTUNE)
        rows.sort(key=lambda r: r[1])
        context = {"fortunes": [{"id": i, "message": m} for i, m in rows]}
        return templates.TemplateResponse(request, common.TEMPLATE_NAME, context)

    async def updates(request: Request) -> Response:
        ids = common.random_ids(common.queries(request.query_params.get("queries")))
        async with pool.connection() as conn:  # commits on leaving the block
            worlds = await read(conn, ids)
            for w in worlds:
                w["randomNumber"] = common.random_number()
            params = sorted(((w["randomNumber"], w["id"]) for w in worlds), key=lambda p: p[1])
            async with conn.cursor() as cur:
                await cur.executemany(update_world, params)
        return JSONResponse(worlds)

    routes = [
        Route("/db", single),
        Route("/queries", queries),
        Route("/fortunes", fortunes),
        Route("/updates", updates),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def __getattr__(name: str) -> t.Any:
    """``asgi``, built on first access."""
    if name != "asgi":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = create_app()
    globals()[name] = app
    return app
