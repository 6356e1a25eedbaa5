"""The benchmark apps, one module per framework, and the registry that names them.

Every app serves the same scenarios (see :mod:`benchmarks.scenarios`) at the same URLs from
a URL map of 200 rules, written the way that framework's documentation writes apps. A module
exposes ``wsgi`` and/or ``asgi`` (the application objects) and may narrow ``SCENARIOS``, the
scenario names it serves (the raw apps serve only hello).
"""

from __future__ import annotations

import importlib
import typing as t
from dataclasses import dataclass


@dataclass(frozen=True)
class Framework:
    #: Short identifier used on the command line and in results.json.
    key: str
    #: Column heading in the reports.
    label: str
    #: Module in this package.
    module: str
    #: "wsgi" or "asgi": the protocol, and the module attribute that holds the app.
    interface: str
    #: Distribution whose version the report records.
    distribution: str

    @property
    def import_path(self) -> str:
        return f"{__name__}.{self.module}"

    @property
    def target(self) -> str:
        """What a server is told to serve: ``module:attribute``."""
        return f"{self.import_path}:{self.interface}"

    @property
    def is_carboy(self) -> bool:
        return self.key.startswith("carboy")

    @property
    def is_ceiling(self) -> bool:
        return self.key.startswith("raw")

    def load(self) -> t.Any:
        return getattr(importlib.import_module(self.import_path), self.interface)

    def scenarios(self, all_names: t.Sequence[str]) -> tuple[str, ...]:
        """The names in *all_names* that this app serves."""
        served = getattr(importlib.import_module(self.import_path), "SCENARIOS", all_names)
        return tuple(name for name in all_names if name in served)


FRAMEWORKS: tuple[Framework, ...] = (
    Framework("carboy-wsgi", "carboy", "carboy_app", "wsgi", "carboy"),
    Framework("flask", "Flask", "flask_app", "wsgi", "flask"),
    Framework("falcon", "Falcon", "falcon_app", "wsgi", "falcon"),
    Framework("bottle", "Bottle", "bottle_app", "wsgi", "bottle"),
    Framework("raw-wsgi", "raw WSGI", "raw_wsgi", "wsgi", ""),
    Framework("carboy-asgi", "carboy", "carboy_app", "asgi", "carboy"),
    Framework("quart", "Quart", "quart_app", "asgi", "quart"),
    Framework("starlette", "Starlette", "starlette_app", "asgi", "starlette"),
    Framework("falcon-asgi", "Falcon", "falcon_app", "asgi", "falcon"),
    Framework("raw-asgi", "raw ASGI", "raw_asgi", "asgi", ""),
)
BY_KEY = {framework.key: framework for framework in FRAMEWORKS}
