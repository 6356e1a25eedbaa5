"""The app tests/test_asgi_body.py serves under real ASGI servers: request bodies read by sync
and ``async def`` views, under a 1 MiB ``MAX_CONTENT_LENGTH``."""

from __future__ import annotations

import typing as t

from carboy import Carboy, request

app = Carboy(__name__)
app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024


def describe() -> dict[str, t.Any]:
    files = {name: f.read().decode("latin-1") for name, f in request.files.items()}
    return {"form": request.form.to_dict(), "files": files}


@app.post("/form/sync")
def form_sync() -> dict[str, t.Any]:
    return describe()


@app.post("/form/async")
async def form_async() -> dict[str, t.Any]:
    return describe()


@app.post("/size/sync")
def size_sync() -> dict[str, int]:
    return {"size": len(request.get_data())}


@app.post("/size/async")
async def size_async() -> dict[str, int]:
    return {"size": len(request.get_data())}


@app.get("/ping")
def ping() -> str:
    return "pong"
