"""Flask-Cors: CORS headers on normal responses, preflights and error responses.

Flask-Cors registers an ``after_request`` function and also replaces ``handle_exception`` and
``handle_user_exception`` on the app instance, so error responses get the headers too. carboy
answers most requests on a short path; these tests show it calls the instance's replacements.
The requests go through both carboy's WSGI and ASGI interfaces.
"""

from __future__ import annotations

import pytest
from flask import Flask, abort
from flask_cors import CORS

FRONTEND = "https://frontend.example"


class Conflict(Exception):
    pass


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # unhandled errors answer 500, as in production
    CORS(
        app,
        resources={r"/api/*": {"origins": [FRONTEND, "https://admin.example"]}},
        supports_credentials=True,
        expose_headers=["X-Total"],
        max_age=600,
    )

    @app.errorhandler(Conflict)
    def conflict(error: Conflict) -> tuple[dict[str, str], int]:
        return {"error": str(error)}, 409

    @app.route("/api/items", methods=["GET", "POST", "DELETE"])
    def items() -> tuple[dict[str, list[str]], int, dict[str, str]]:
        return {"items": ["a", "b"]}, 200, {"X-Total": "2"}

    @app.get("/api/conflict")
    def raise_conflict() -> str:
        raise Conflict("already exists")

    @app.get("/api/async-conflict")
    async def raise_conflict_async() -> str:
        raise Conflict("async, already exists")

    @app.get("/api/forbidden")
    def forbidden() -> str:
        abort(403)

    @app.get("/api/crash")
    def crash() -> str:
        raise RuntimeError("unexpected")

    @app.get("/internal")
    def internal() -> dict[str, bool]:
        return {"internal": True}

    return app


@pytest.fixture
def app(client_class: type) -> Flask:
    app = create_app()
    app.test_client_class = client_class
    return app


def assert_cors(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["Access-Control-Allow-Origin"] == FRONTEND
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in headers["Vary"]


def test_cross_origin_get(app: Flask) -> None:
    response = app.test_client().get("/api/items", headers={"Origin": FRONTEND})
    assert response.status_code == 200
    assert response.json == {"items": ["a", "b"]}
    assert_cors(response)
    assert response.headers["Access-Control-Expose-Headers"] == "X-Total"


def test_other_origins_and_paths_get_no_cors(app: Flask) -> None:
    client = app.test_client()
    evil = client.get("/api/items", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 200
    assert "Access-Control-Allow-Origin" not in evil.headers
    internal = client.get("/internal", headers={"Origin": FRONTEND})
    assert internal.json == {"internal": True}
    assert "Access-Control-Allow-Origin" not in internal.headers


def test_preflight(app: Flask) -> None:
    response = app.test_client().options(
        "/api/items",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "Content-Type, X-Token",
        },
    )
    assert response.status_code == 200
    assert_cors(response)
    allowed_methods = {
        m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")
    }
    assert "DELETE" in allowed_methods
    allowed_headers = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"content-type", "x-token"} <= allowed_headers
    assert response.headers["Access-Control-Max-Age"] == "600"
    # The automatic OPTIONS answer of the route is still there underneath.
    assert {"GET", "POST", "DELETE", "OPTIONS"} <= set(response.allow)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/missing", 404),
        ("/api/items/too/deep", 404),
        ("/api/forbidden", 403),
        ("/api/conflict", 409),
        ("/api/async-conflict", 409),
        ("/api/crash", 500),
    ],
)
def test_error_responses_carry_cors_headers(app: Flask, path: str, status: int) -> None:
    response = app.test_client().get(path, headers={"Origin": FRONTEND})
    assert response.status_code == status
    assert_cors(response)
    if status == 409:
        assert response.json["error"].endswith("already exists")


def test_the_instance_handlers_alone_add_the_headers(app: Flask) -> None:
    # Take Flask-Cors's after_request function away: only its replacements of
    # handle_user_exception / handle_exception on the instance are left to add the headers.
    assert "handle_exception" in vars(app)
    assert "handle_user_exception" in vars(app)
    hooks = app.after_request_funcs[None]
    assert [f.__name__ for f in hooks] == ["cors_after_request"]
    hooks.clear()

    client = app.test_client()
    ok = client.get("/api/items", headers={"Origin": FRONTEND})
    assert ok.status_code == 200
    assert "Access-Control-Allow-Origin" not in ok.headers

    for path, status in [
        ("/api/missing", 404),  # routing error: handle_user_exception
        ("/api/conflict", 409),  # error handler: handle_user_exception
        ("/api/async-conflict", 409),  # the same, raised by an async view
        ("/api/crash", 500),  # unhandled: handle_exception
    ]:
        response = client.get(path, headers={"Origin": FRONTEND})
        assert response.status_code == status, path
        assert_cors(response)
