"""The app tests/test_bad_input.py serves with real WSGI servers to send it chunked bodies:
``MAX_CONTENT_LENGTH`` is 100 bytes, and each view reads the body another way."""

from __future__ import annotations

import typing as t

from carboy import Carboy, request

app = Carboy(__name__)
app.config["MAX_CONTENT_LENGTH"] = 100


@app.route("/sync")
def probe() -> str:
    return "up"


@app.route("/data", methods=["POST"])
def data() -> t.Any:
    return {"size": len(request.get_data())}


@app.route("/form", methods=["POST"])
def form() -> t.Any:
    return {"size": sum(len(v) for v in request.form.values())}


@app.route("/json", methods=["POST"])
def json_view() -> t.Any:
    return {"size": len(request.get_json())}


@app.route("/stream", methods=["POST"])
def stream() -> t.Any:
    return {"size": len(request.stream.read())}
