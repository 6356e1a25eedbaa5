"""An app that imports ``flask`` only, served as ``carboy.flask_compat:app`` with
``CARBOY_APP=alias_demo:app`` (tests/test_alias_servers.py)."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/")
def index():  # type: ignore[no-untyped-def]
    return jsonify(
        app_class=f"{type(app).__module__}.{type(app).__name__}",
        protocol="asgi" if "asgi.scope" in request.environ else "wsgi",
    )
