"""The alias's app string, ``carboy.flask_compat:app``, under every server README names.

An app that imports ``flask`` only (``served_apps/alias_demo.py``) is named by ``CARBOY_APP``
and served by gunicorn, uvicorn, hypercorn and granian (WSGI and ASGI). hypercorn finds apps
with ``eval(name, vars(module))`` rather than ``getattr``; it used to fail with ``NoAppError``
(and exit 0).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from servers import Server, free_port, server_env, tool

ALIAS = "carboy.flask_compat:app"


def granian(interface: str) -> Callable[[int], list[str]]:
    return lambda port: [
        *tool("granian"),
        *("--interface", interface, "--host", "127.0.0.1", "--port", str(port), ALIAS),
    ]


#: name -> (the protocol the app should see, the command line for a port)
SERVERS: dict[str, tuple[str, Callable[[int], list[str]]]] = {
    "gunicorn": ("wsgi", lambda port: [*tool("gunicorn"), "--bind", f"127.0.0.1:{port}", ALIAS]),
    "uvicorn": (
        "asgi",
        lambda port: [*tool("uvicorn"), "--host", "127.0.0.1", "--port", str(port), ALIAS],
    ),
    "hypercorn": ("asgi", lambda port: [*tool("hypercorn"), "--bind", f"127.0.0.1:{port}", ALIAS]),
    "granian-wsgi": ("wsgi", granian("wsgi")),
    "granian-asgi": ("asgi", granian("asgi")),
}


@pytest.mark.parametrize("name", list(SERVERS))
def test_the_alias_is_served_by(name: str, tmp_path: Path) -> None:
    protocol, command = SERVERS[name]
    port = free_port()
    with Server(
        command(port), port, tmp_path / f"{name}.log", {"CARBOY_APP": "alias_demo:app"}
    ) as server:
        server.wait_until_up("/")
        answer = httpx.get(server.base_url + "/", timeout=10)
        assert answer.status_code == 200, server.output()
        assert answer.json() == {"app_class": "carboy.app.Carboy", "protocol": protocol}


def test_hypercorn_without_carboy_app_says_what_to_set() -> None:
    env = server_env()
    env.pop("CARBOY_APP", None)
    env.pop("FLASK_APP", None)
    done = subprocess.run(
        [*tool("hypercorn"), "--bind", f"127.0.0.1:{free_port()}", ALIAS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # hypercorn's exit status is 0 whatever failed at load; what it prints is carboy's.
    assert "carboy.flask_compat:app serves the app named by CARBOY_APP" in done.stderr
    assert "NoAppError" not in done.stderr
