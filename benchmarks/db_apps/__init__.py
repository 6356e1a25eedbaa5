"""The database benchmark's apps (``benchmarks/db.py``), one module per framework, and the
registry of the stacks it serves them as.

Each app serves the four scenarios at the same URLs (``/db``, ``/queries?queries=N``,
``/fortunes``, ``/updates?queries=N``) from the tables the driver made, and exposes ``wsgi``
or ``asgi`` (or both), built on first access from the environment (see :mod:`.common`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stack:
    """One framework + data layer + server, shaped as :class:`benchmarks.servers.Server`
    expects a framework."""

    key: str
    label: str
    #: Module in this package.
    module: str
    #: "wsgi" or "asgi": the protocol, and the module attribute that holds the app.
    interface: str
    #: The granian server kind that serves it.
    server: str

    @property
    def target(self) -> str:
        return f"{__name__}.{self.module}:{self.interface}"

    @property
    def is_carboy(self) -> bool:
        return self.key.startswith("carboy")


STACKS: tuple[Stack, ...] = (
    Stack("carboy-sync", "carboy, def views, SQLAlchemy Core", "carboy_app", "wsgi",
          "granian-wsgi"),
    Stack("carboy-fsa", "carboy + Flask-SQLAlchemy (the Flask app's code)",
          "carboy_flask_sqlalchemy_app", "wsgi", "granian-wsgi"),
    Stack("flask", "Flask + Flask-SQLAlchemy", "flask_app", "wsgi", "granian-wsgi"),
    Stack("carboy-async", "carboy, async def views, psycopg async pool", "carboy_app", "asgi",
          "granian-asgi"),
    Stack("starlette", "Starlette, psycopg async pool", "starlette_app", "asgi", "granian-asgi"),
)  # fmt: skip
BY_KEY = {stack.key: stack for stack in STACKS}
#: What each carboy stack's req/s is divided by.
BASELINES = ("flask", "starlette")
