"""What every database benchmark app shares: where the tables are, the Fortune rows, the
rules for the ``queries`` parameter, and the template.

The driver (``benchmarks/db.py``) creates the tables in a schema of its own for each run and
passes its name, the database URL and the pool size to each server's worker through the
environment (:data:`ENV_URL`, :data:`ENV_SCHEMA`, :data:`ENV_POOL`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

#: The machine's PostgreSQL (trust authentication), as a libpq URL.
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
ENV_URL = "DBBENCH_URL"
ENV_SCHEMA = "DBBENCH_SCHEMA"
ENV_POOL = "DBBENCH_POOL"
DEFAULT_POOL = 8

#: Rows of the World table: ids 1..WORLD_ROWS, each with a randomNumber in 1..WORLD_ROWS.
WORLD_ROWS = 10_000
#: The ``queries`` parameter is clamped to this range; a missing or non-integer value is 1.
MIN_QUERIES, MAX_QUERIES = 1, 500

#: The Fortune table's twelve rows, as the published benchmark's database holds them.
FORTUNES: tuple[tuple[int, str], ...] = (
    (1, "fortune: No such file or directory"),
    (2, "A computer scientist is someone who fixes things that aren't broken."),
    (3, "After enough decimal places, nobody gives a damn."),
    (4, "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1"),
    (5, "A computer program does what you tell it to do, not what you want it to do."),
    (6, "Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen"),
    (7, "Any program that runs right is obsolete."),
    (8, "A list is only as strong as its weakest link. \u2014 Donald Knuth"),
    (9, "Feature: A bug with seniority."),
    (10, "Computers make very fast, very accurate mistakes."),
    (11, '<script>alert("This should not be displayed in a browser alert box.");</script>'),
    (12, "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af"),
)
#: The row each fortunes request adds before sorting (never stored).
ADDED_FORTUNE = (0, "Additional fortune added at request time.")

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "fortunes.html"

#: The statements of the apps that use the driver directly (psycopg placeholders).
SELECT_WORLD = "SELECT id, randomnumber FROM {schema}.world WHERE id = %s"
SELECT_FORTUNES = "SELECT id, message FROM {schema}.fortune"
UPDATE_WORLD = "UPDATE {schema}.world SET randomnumber = %s WHERE id = %s"


def url() -> str:
    """The libpq URL of the database (``postgresql://...``)."""
    return os.environ.get(ENV_URL, DEFAULT_URL)


def sqlalchemy_url() -> str:
    """:func:`url` for SQLAlchemy with psycopg 3 (``postgresql+psycopg://...``)."""
    scheme, rest = url().split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url()


def schema() -> str:
    """The run's schema, which holds ``world`` and ``fortune``."""
    name = os.environ.get(ENV_SCHEMA, "")
    if not name.isidentifier() or not name.isascii():
        raise RuntimeError(f"{ENV_SCHEMA} must name the run's schema (got {name!r})")
    return name


def pool_size() -> int:
    """Connections per worker: every stack's pool holds exactly this many."""
    return int(os.environ.get(ENV_POOL, DEFAULT_POOL))


def queries(raw: str | None) -> int:
    """The ``queries`` parameter as the rules read it: an integer clamped to 1..500, and 1
    when it is missing or not an integer."""
    try:
        n = int(raw) if raw else MIN_QUERIES
    except ValueError:
        return MIN_QUERIES
    return min(max(n, MIN_QUERIES), MAX_QUERIES)


def random_id() -> int:
    """A World id, 1..10,000."""
    return random.randint(1, WORLD_ROWS)


def random_ids(n: int) -> list[int]:
    """*n* World ids (repeats allowed, as the rules allow)."""
    return [random.randint(1, WORLD_ROWS) for _ in range(n)]


def random_number() -> int:
    """A new randomNumber, 1..10,000."""
    return random.randint(1, WORLD_ROWS)
