"""An app whose worker lifespan functions write to the file named by ``LIFESPAN_LOG``.

Each line is ``<event> <pid>``: ``start`` (before_serving), ``request`` (the view), ``stop``
(after_serving). With ``LIFESPAN_FAIL`` set, a second startup function raises.
"""

from __future__ import annotations

import asyncio
import os
import time

from carboy import Carboy, request

app = Carboy(__name__)


def write(event: str) -> None:
    with open(os.environ["LIFESPAN_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{event} {os.getpid()}\n")


@app.before_serving
async def open_resources() -> None:
    await asyncio.sleep(0)
    write("start")


if os.environ.get("LIFESPAN_FAIL"):

    @app.before_serving
    def explode_on_startup() -> None:
        raise RuntimeError("startup exploded on purpose")


@app.after_serving
def close_resources() -> None:
    write("stop")


@app.route("/")
def index() -> dict[str, int]:
    write("request")
    time.sleep(request.args.get("delay", 0.0, type=float))
    return {"pid": os.getpid()}
