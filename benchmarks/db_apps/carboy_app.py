"""The database scenarios on carboy: :data:`wsgi` (``def`` views, SQLAlchemy 2 Core) and
:data:`asgi` (``async def`` views, psycopg 3's asyncio pool), each built on first access so a
worker builds only the app it serves.

:data:`wsgi` is what a carboy user writes for a threaded WSGI server: one SQLAlchemy engine
(psycopg 3, a ``QueuePool`` of :func:`~benchmarks.db_apps.common.pool_size` connections and no
overflow), registered with :class:`carboy.scale.database.Database` (its pool is replaced after
a fork and checked against ``max_connections`` at start), and Core statements on a connection
taken for the request. :data:`asgi` awaits every statement on the event loop, on a
:class:`psycopg_pool.AsyncConnectionPool` of the same size, opened by ``before_serving`` and
closed by ``after_serving`` (the ASGI lifespan).
"""

from __future__ import annotations

import typing as t

from carboy import Carboy, render_template, request

from . import common


def _app(name: str) -> Carboy:
    return Carboy(name, template_folder=str(common.TEMPLATE_DIR))


def create_sync_app() -> Carboy:
    """``def`` views on SQLAlchemy 2 Core, the engine registered with ``Database``."""
    import sqlalchemy as sa

    from carboy.scale.database import Database

    app = _app("dbbench_carboy_sync")
    size = common.pool_size()
    engine = sa.create_engine(common.sqlalchemy_url(), pool_size=size, max_overflow=0)
    Database(app).register(engine)
    metadata = sa.MetaData(schema=common.schema())
    world = sa.Table(
        "world", metadata, sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("randomnumber", sa.Integer),
    )  # fmt: skip
    fortune = sa.Table(
        "fortune", metadata, sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message", sa.String),
    )  # fmt: skip
    select_world = sa.select(world.c.id, world.c.randomnumber).where(
        world.c.id == sa.bindparam("world_id")
    )
    select_fortunes = sa.select(fortune.c.id, fortune.c.message)
    update_world = (
        sa.update(world)
        .where(world.c.id == sa.bindparam("world_id"))
        .values(randomnumber=sa.bindparam("number"))
    )

    def read(conn: sa.Connection, ids: list[int]) -> list[dict[str, int]]:
        rows = (conn.execute(select_world, {"world_id": i}).one() for i in ids)
        return [{"id": r.id, "randomNumber": r.randomnumber} for r in rows]

    @app.get("/db")
    def db() -> dict[str, int]:
        with engine.connect() as conn:
            return read(conn, [common.random_id()])[0]

    @app.get("/queries")
    def queries() -> list[dict[str, int]]:
        ids = common.random_ids(common.queries(request.args.get("queries")))
        with engine.connect() as conn:
            return read(conn, ids)

    @app.get("/fortunes")
    def fortunes() -> str:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(select_fortunes)]
        rows.append(common.ADDED_FORTUNE)
        rows.sort(key=lambda r: r[1])
        return render_template(
            common.TEMPLATE_NAME, fortunes=[{"id": i, "message": m} for i, m in rows]
        )

    @app.get("/updates")
    def updates() -> list[dict[str, int]]:
        ids = common.random_ids(common.queries(request.args.get("queries")))
        with engine.begin() as conn:
            worlds = read(conn, ids)
            for w in worlds:
                w["randomNumber"] = common.random_number()
            # In id order, so concurrent requests lock rows in one order (no deadlock).
            params = sorted(
                ({"world_id": w["id"], "number": w["randomNumber"]} for w in worlds),
                key=lambda p: p["world_id"],
            )
            conn.execute(update_world, params)
        return worlds

    return app


def create_async_app() -> Carboy:
    """``async def`` views on psycopg 3's ``AsyncConnectionPool``, opened by the lifespan."""
    from psycopg_pool import AsyncConnectionPool

    app = _app("dbbench_carboy_async")
    size = common.pool_size()
    pool = AsyncConnectionPool(common.url(), min_size=size, max_size=size, open=False)
    schema = common.schema()
    select_world = common.SELECT_WORLD.format(schema=schema)
    select_fortunes = common.SELECT_FORTUNES.format(schema=schema)
    update_world = common.UPDATE_WORLD.format(schema=schema)

    @app.before_serving
    async def open_pool() -> None:
        await pool.open(wait=True)

    @app.after_serving
    async def close_pool() -> None:
        await pool.close()

    async def read(conn: t.Any, ids: list[int]) -> list[dict[str, int]]:
        worlds = []
        for i in ids:
            cur = await conn.execute(select_world, (i,))
            row = await cur.fetchone()
            worlds.append({"id": row[0], "randomNumber": row[1]})
        return worlds

    @app.get("/db")
    async def db() -> dict[str, int]:
        async with pool.connection() as conn:
            return (await read(conn, [common.random_id()]))[0]

    @app.get("/queries")
    async def queries() -> list[dict[str, int]]:
        ids = common.random_ids(common.queries(request.args.get("queries")))
        async with pool.connection() as conn:
            return await read(conn, ids)

    @app.get("/fortunes")
    async def fortunes() -> str:
        async with pool.connection() as conn:
            cur = await conn.execute(select_fortunes)
            rows = await cur.fetchall()
        rows.append(common.ADDED_FORTUNE)
        rows.sort(key=lambda r: r[1])
        return render_template(
            common.TEMPLATE_NAME, fortunes=[{"id": i, "message": m} for i, m in rows]
        )

    @app.get("/updates")
    async def updates() -> list[dict[str, int]]:
        ids = common.random_ids(common.queries(request.args.get("queries")))
        async with pool.connection() as conn:  # commits on leaving the block
            worlds = await read(conn, ids)
            for w in worlds:
                w["randomNumber"] = common.random_number()
            params = sorted(((w["randomNumber"], w["id"]) for w in worlds), key=lambda p: p[1])
            async with conn.cursor() as cur:
                await cur.executemany(update_world, params)
        return worlds

    return app


_BUILDERS = {"wsgi": create_sync_app, "asgi": create_async_app}


def __getattr__(name: str) -> t.Any:
    """``wsgi`` and ``asgi``, built on first access."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = builder()
    globals()[name] = app
    return app
