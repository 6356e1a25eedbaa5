"""Issue 22's database benchmark: TechEmpower-style scenarios on the machine's PostgreSQL.

    python benchmarks/db.py                 # checks, then the loads: about 8 minutes
    python benchmarks/db.py --quick         # a smoke run, under a minute; figures are noisy
    python benchmarks/db.py --check         # serve every stack and check its answers; no load
    python benchmarks/db.py --json /tmp/db.json --markdown /tmp/db.md
    python benchmarks/db.py --cleanup       # drop the schemas of killed runs (none running)

The scenarios follow the published TechEmpower rules (``/db``, ``/queries``, ``/fortunes``,
``/updates``), on a World table of 10,000 rows (``id``, ``randomnumber`` in 1..10,000) and a
Fortune table of their 12 rows, made in a schema of this run's own (``dbbench_<hex>``) and
dropped at the end, also when the run fails:

* **db**: one row by a random id, answered as ``{"id": ..., "randomNumber": ...}``;
* **queries**: 20 rows, each by its own query (``queries=N``: 1..500; missing or not an
  integer: 1), answered as a list;
* **fortunes**: every Fortune row plus one added at request time, sorted by message, in an
  HTML table from a Jinja2 template that escapes them;
* **updates**: 20 rows read one by one, each given a new random number, written back (one
  executemany, in id order) in the same transaction, answered as a list.

Five stacks serve them (``benchmarks/db_apps/``), all started at once, each from one granian
worker pinned to core 0 (``benchmarks/servers.py``), the same pool size everywhere
(``--pool``, 8):

* ``carboy-sync``: carboy, ``def`` views, SQLAlchemy 2 Core on an engine registered with
  ``carboy.scale.database.Database``; granian WSGI with ``--threads`` (8) blocking threads;
* ``carboy-fsa``: the Flask app's code below, unchanged, on carboy (``carboy.flask_compat``);
  granian WSGI, the same threads;
* ``flask``: Flask 3.1 + Flask-SQLAlchemy 3.1 models and ``db.session``; granian WSGI, the
  same threads;
* ``carboy-async``: carboy, ``async def`` views, psycopg 3's ``AsyncConnectionPool``;
  granian ASGI;
* ``starlette``: Starlette with the same pool and statements; granian ASGI.

Every answer is checked over HTTP before the loads and after them (status, content type,
JSON shape, each row against the table, the ``queries`` clamping, the fortunes page's rows,
order and escaping, and that updates reached the table), so a fast wrong answer cannot win.
Then for each scenario: a warm-up load of each stack, and ``--repeats`` rounds of
``--duration`` seconds in which the stacks take turns (in a rotated order each round); wrk
``-t1 -c32`` on core 1 (``benchmarks/wrk.py``: each load is bounded in time). Reported: each
stack's median round, every round, p50/p99 of the median round, errors; and for each carboy
stack the ratio of its req/s to Flask's and to Starlette's, per round (same moment) and the
median of those; and the worker's CPU time per request (user + system, every thread, read
around each round), steadier than req/s when the machine is busy, and its ratios.
PostgreSQL is not pinned: it shares both cores with everything else.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import typing as t
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from benchmarks import endtoend, machine, wrk
from benchmarks.db_apps import BASELINES, BY_KEY, STACKS, Stack, common
from benchmarks.endtoend import _log_dir, _pin_self
from benchmarks.scenarios import Answer, Request, WrongAnswer, expect
from benchmarks.servers import BY_KEY as SERVERS
from benchmarks.servers import Server, ask, ensure_bytecode, granian_wsgi

#: Rows per request of the queries and updates scenarios (the rules' headline figure).
QUERIES = 20


# -- the tables ---------------------------------------------------------------------------------


def create_tables(url: str) -> str:
    """Create a fresh schema with the World and Fortune tables, filled; return its name."""
    schema = f"dbbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(
            f"CREATE TABLE {schema}.world (id integer PRIMARY KEY,"
            " randomnumber integer NOT NULL DEFAULT 0)"
        )
        conn.execute(
            f"INSERT INTO {schema}.world (id, randomnumber)"
            " SELECT x, 1 + floor(random() * %s)::integer FROM generate_series(1, %s) AS x",
            (common.WORLD_ROWS, common.WORLD_ROWS),
        )
        conn.execute(
            f"CREATE TABLE {schema}.fortune (id integer PRIMARY KEY,"
            " message varchar(2048) NOT NULL)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {schema}.fortune (id, message) VALUES (%s, %s)", common.FORTUNES
            )
        conn.execute(f"ANALYZE {schema}.world")
        conn.execute(f"ANALYZE {schema}.fortune")
    return schema


def leftover_schemas(url: str) -> list[str]:
    """The schemas of runs that could not drop theirs (killed with SIGKILL, say)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dbbench\\_%' ORDER BY 1"
        ).fetchall()
    return [name for (name,) in rows]


def drop_tables(url: str, schema: str) -> None:
    """Drop the run's schema and everything in it."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@contextmanager
def run_schema(url: str, pool: int) -> Iterator[str]:
    """The run's tables, and the environment the served workers build their apps from; the
    schema is dropped on exit."""
    schema = create_tables(url)
    env = {common.ENV_URL: url, common.ENV_SCHEMA: schema, common.ENV_POOL: str(pool)}
    try:
        with mock.patch.dict(os.environ, env):
            yield schema
    finally:
        drop_tables(url, schema)


class Table:
    """Reads the World table directly, to check what the apps answered."""

    def __init__(self, url: str, schema: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        self._schema = schema

    def close(self) -> None:
        self._conn.close()

    def numbers(self, ids: t.Iterable[int] | None = None) -> dict[int, int]:
        """id -> randomnumber of *ids* (all rows when None)."""
        sql = f"SELECT id, randomnumber FROM {self._schema}.world"
        if ids is None:
            rows = self._conn.execute(sql).fetchall()
        else:
            rows = self._conn.execute(sql + " WHERE id = ANY(%s)", (list(ids),)).fetchall()
        return dict(rows)


# -- right answers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    request: Request


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("db", "one query", Request("GET", "/db")),
    Scenario("queries", f"{QUERIES} queries", Request("GET", "/queries", f"queries={QUERIES}")),
    Scenario("fortunes", "fortunes page", Request("GET", "/fortunes")),
    Scenario("updates", f"{QUERIES} updates", Request("GET", "/updates", f"queries={QUERIES}")),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}
#: ``queries`` values and the row count the rules make of them.
CLAMPS = (("20", 20), ("1", 1), ("0", 1), ("-3", 1), ("foo", 1), ("", 1), ("501", 500))


def _json(res: Answer) -> t.Any:
    expect(res.status == 200, f"status {res.status}; body {res.body[:200]!r}")
    content_type = res.header("content-type") or ""
    expect(content_type.startswith("application/json"), f"content type {content_type!r}")
    try:
        return json.loads(res.body)
    except ValueError as exc:
        raise WrongAnswer(f"not JSON ({exc}): {res.body[:200]!r}") from None


def _world(obj: t.Any) -> tuple[int, int]:
    expect(isinstance(obj, dict), f"not a JSON object: {obj!r}")
    expect(set(obj) == {"id", "randomNumber"}, f"keys {sorted(obj)}, expected id, randomNumber")
    world_id, number = obj["id"], obj["randomNumber"]
    for value in (world_id, number):
        expect(type(value) is int, f"{value!r} is not an integer in {obj!r}")
        expect(1 <= value <= common.WORLD_ROWS, f"{value} out of 1..10000 in {obj!r}")
    return world_id, number


def check_worlds(res: Answer, count: int | None, table: Table) -> list[tuple[int, int]]:
    """A list of *count* World objects (a single object when *count* is None), each as the
    table holds it now."""
    data = _json(res)
    if count is None:
        worlds = [_world(data)]
    else:
        expect(isinstance(data, list), f"not a JSON list: {res.body[:200]!r}")
        expect(len(data) == count, f"{len(data)} rows, expected {count}")
        worlds = [_world(obj) for obj in data]
    stored = table.numbers(i for i, _ in worlds)
    for world_id, number in worlds:
        expect(stored[world_id] == number, f"row {world_id}: {number}, the table has {stored}")
    return worlds


def check_updates(res: Answer, count: int, table: Table, before: dict[int, int]) -> None:
    """*count* World objects whose new numbers are in the table (a row asked for twice: the
    table holds one of its numbers), and, over 20 rows or more, mostly changed numbers
    (a new random number equals the old one once in 10,000)."""
    data = _json(res)
    expect(isinstance(data, list) and len(data) == count, f"expected {count} rows: {data!r:.200}")
    answered: dict[int, set[int]] = {}
    for obj in data:
        world_id, number = _world(obj)
        answered.setdefault(world_id, set()).add(number)
    stored = table.numbers(answered)
    for world_id, numbers in answered.items():
        expect(stored[world_id] in numbers, f"row {world_id}: table {stored[world_id]}, {numbers}")
    if len(answered) >= 20:
        changed = sum(stored[i] != before[i] for i in answered)
        expect(changed >= 0.9 * len(answered), f"{changed} of {len(answered)} rows changed")


class _Rows(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.title = ""
        self._cell: list[str] | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_title:
            self.title += data


#: The fortunes page's rows after the header: the stored ones plus the added one, by message.
EXPECTED_FORTUNES = sorted([*common.FORTUNES, common.ADDED_FORTUNE], key=lambda r: r[1])


def check_fortunes(res: Answer) -> None:
    """200, ``text/html; charset=utf-8``, a table of the 13 rows sorted by message, the
    script row escaped and the Japanese row in UTF-8."""
    expect(res.status == 200, f"status {res.status}; body {res.body[:200]!r}")
    content_type = (res.header("content-type") or "").replace(" ", "").lower()
    expect(content_type == "text/html;charset=utf-8", f"content type {content_type!r}")
    text = res.body.decode("utf-8")
    expect("<script>" not in text, "the <script> fortune is not escaped")
    expect("&lt;script&gt;" in text, "the <script> fortune is missing or escaped otherwise")
    parser = _Rows()
    parser.feed(text)
    parser.close()
    expect(parser.title.strip() == "Fortunes", f"title {parser.title!r}")
    expect(parser.rows[:1] == [["id", "message"]], f"header row {parser.rows[:1]!r}")
    got = [(row[0], row[1]) if len(row) == 2 else tuple(row) for row in parser.rows[1:]]
    want = [(str(i), message) for i, message in EXPECTED_FORTUNES]
    expect(got == want, f"rows {got!r}, expected {want!r}")


def check_stack(port: int, table: Table, full: bool = True) -> None:
    """Every scenario of the stack on *port*; with *full*, every clamp of ``queries`` too.

    :raises WrongAnswer: on the first wrong answer.
    """

    def get(path: str, query: str = "") -> Answer:
        return ask(port, Request("GET", path, query))

    check_worlds(get("/db"), None, table)
    check_fortunes(get("/fortunes"))
    cases = CLAMPS if full else CLAMPS[:1]
    for raw, count in cases:
        check_worlds(get("/queries", f"queries={raw}"), count, table)
    check_worlds(get("/queries"), 1, table)  # no parameter at all
    for raw, count in cases:
        before = table.numbers()
        check_updates(get("/updates", f"queries={raw}"), count, table, before)
    if full:
        check_updates(get("/updates"), 1, table, table.numbers())


def check_served(servers: dict[str, Server], table: Table, full: bool) -> None:
    for key, server in servers.items():
        try:
            check_stack(server.port, table, full)
        except WrongAnswer as exc:
            raise WrongAnswer(f"{key} on {server.kind.label}: {exc}") from None


# -- the loads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    duration: float = 3.0
    repeats: int = 7
    warmup: float = 2.0
    connections: int = 32
    #: granian WSGI's blocking threads (the ASGI stacks run their views on one event loop).
    threads: int = 8
    #: Connections in each stack's pool.
    pool: int = common.DEFAULT_POOL
    server_cpu: int = 0
    client_cpu: int = 1


QUICK = Settings(duration=1.0, repeats=2, warmup=0.5)


def server_kind(stack: Stack, threads: int) -> t.Any:
    return granian_wsgi(threads) if stack.server == "granian-wsgi" else SERVERS[stack.server]


@contextmanager
def serving(stacks: t.Sequence[Stack], settings: Settings) -> Iterator[dict[str, Server]]:
    """Every stack's server, started at the same time (they read the environment of
    :func:`run_schema`), all stopped on exit."""
    logs = _log_dir(endtoend.Settings())
    servers = {
        s.key: Server(
            server_kind(s, settings.threads),
            s,  # type: ignore[arg-type]
            settings.server_cpu,
            logs / f"db-{s.key}.log",
        )
        for s in stacks
    }
    ensure_bytecode()  # once, before the servers start side by side
    with ExitStack() as exits:
        for server in servers.values():
            exits.callback(server.stop)
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(Server.__enter__, servers.values()))
        yield servers


def load_scenario(
    servers: dict[str, Server], scenario: Scenario, settings: Settings
) -> dict[str, dict[str, t.Any]]:
    """Warm each stack up, then load them in turns for ``settings.repeats`` rounds."""
    keys = list(servers)
    request = scenario.request

    cpu_us: dict[str, list[float]] = {k: [] for k in keys}

    def one(key: str, seconds: float) -> wrk.Load:
        server = servers[key]
        before = _cpu_seconds(server)
        load = wrk.run(server.url, request, seconds, settings.connections, settings.client_cpu)
        if load.requests:
            cpu_us[key].append((_cpu_seconds(server) - before) / load.requests * 1e6)
        return load

    if settings.warmup > 0:
        for key in keys:
            one(key, settings.warmup)
    for key in keys:
        cpu_us[key].clear()  # only the timed rounds count
    rounds: dict[str, list[wrk.Load]] = {k: [] for k in keys}
    for index in range(settings.repeats):
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            rounds[key].append(one(key, settings.duration))
    results: dict[str, dict[str, t.Any]] = {}
    for key in keys:
        loads = rounds[key]
        rps = [x.rps for x in loads]
        median = sorted(loads, key=lambda x: x.rps)[(len(loads) - 1) // 2]
        results[key] = {
            "rps_median": statistics.median(rps),
            "rps_rounds": rps,
            "p50_ms": median.p50_ms,
            "p99_ms": median.p99_ms,
            "errors": sum(x.non_2xx + x.socket_errors for x in loads),
            "requests": sum(x.requests for x in loads),
            "cpu_us_median": statistics.median(cpu_us[key]) if cpu_us[key] else None,
            "cpu_us_rounds": cpu_us[key],
        }
    for key in keys:
        if not BY_KEY[key].is_carboy:
            continue
        for base in BASELINES:
            if base not in results:
                continue
            mine, theirs = results[key]["rps_rounds"], results[base]["rps_rounds"]
            ratios = [a / b for a, b in zip(mine, theirs, strict=True) if b > 0]
            results[key][f"ratio_to_{base}"] = statistics.median(ratios) if ratios else None
            results[key][f"ratio_to_{base}_rounds"] = ratios
            mine, theirs = results[key]["cpu_us_median"], results[base]["cpu_us_median"]
            results[key][f"cpu_ratio_to_{base}"] = mine / theirs if mine and theirs else None
    return results


def _cpu_seconds(server: Server) -> float:
    """CPU time (user + system, every thread) the server's worker has used, in seconds."""
    assert server.worker is not None
    times = server.worker.cpu_times()
    return float(times.user + times.system)


# -- the report ---------------------------------------------------------------------------------


def _table(
    loads: dict[str, t.Any], heading: str, columns: list[str], cell: t.Callable[[t.Any, str], str]
) -> list[str]:
    lines = [
        "",
        f"| {heading} | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, served in loads.items():
        cells = [cell(served, c) for c in columns]
        lines.append(f"| {SCENARIO_BY_NAME[name].title} | " + " | ".join(cells) + " |")
    return lines


def _figure(value: t.Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(results: dict[str, t.Any]) -> str:
    """The tables: req/s, req/s ratios, worker CPU per request, CPU ratios, every round."""
    loads = results.get("endtoend", {})
    if not loads:
        return "(checks only: no load was run)\n"
    keys = [s.key for s in STACKS if any(s.key in v for v in loads.values())]
    pairs = [f"{k} ÷ {b}" for k in keys if BY_KEY[k].is_carboy for b in BASELINES if b in keys]

    def entry(served: t.Any, column: str, field: str) -> t.Any:
        if " ÷ " in column:
            key, base = column.split(" ÷ ")
            return served.get(key, {}).get(f"{field}_to_{base}")
        return served.get(column, {}).get(field)

    lines = ["req/s (median round; above: more)"]
    lines += _table(
        loads, "scenario", keys, lambda s, c: _figure(entry(s, c, "rps_median"), ",.0f")
    )
    if pairs:
        lines += ["", "req/s ratios (median of the rounds' ratios; above 1: carboy serves more)"]
        lines += _table(loads, "scenario", pairs, lambda s, c: _figure(entry(s, c, "ratio"), ".2f"))
    lines += ["", "worker CPU per request, µs (median round; PostgreSQL's own CPU not included)"]
    lines += _table(
        loads, "scenario", keys, lambda s, c: _figure(entry(s, c, "cpu_us_median"), ".0f")
    )
    if pairs:
        lines += ["", "worker CPU per request ratios (below 1: carboy spends less)"]
        lines += _table(
            loads, "scenario", pairs, lambda s, c: _figure(entry(s, c, "cpu_ratio"), ".2f")
        )
    lines += [
        "",
        "| scenario | stack | req/s rounds | CPU µs/request rounds | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for name, served in loads.items():
        for k in keys:
            if k in served:
                e = served[k]
                rounds = ", ".join(f"{r:.0f}" for r in e["rps_rounds"])
                cpu = ", ".join(f"{r:.0f}" for r in e["cpu_us_rounds"])
                lines.append(
                    f"| {name} | {k} | {rounds} | {cpu} | {e['p50_ms']:.2f} | {e['p99_ms']:.2f} "
                    f"| {e['errors']} |"
                )
    return "\n".join(lines) + "\n"


# -- the command --------------------------------------------------------------------------------


def run(
    url: str,
    stacks: t.Sequence[Stack],
    scenarios: t.Sequence[Scenario],
    settings: Settings,
    check_only: bool,
    results: dict[str, t.Any],
) -> None:
    """Make the tables, serve the stacks, check, load (unless *check_only*), check again;
    fill *results*."""
    with run_schema(url, settings.pool) as schema:
        results["schema"] = schema
        table = Table(url, schema)
        try:
            started = time.monotonic()
            with serving(stacks, settings) as servers:
                results["startup_seconds"] = time.monotonic() - started
                started = time.monotonic()
                check_served(servers, table, full=True)
                results["checks_seconds"] = time.monotonic() - started
                if check_only:
                    return
                _pin_self(settings.client_cpu)
                loads: dict[str, t.Any] = {}
                for scenario in scenarios:
                    loads[scenario.name] = load_scenario(servers, scenario, settings)
                    results["endtoend"] = loads
                check_served(servers, table, full=False)
        finally:
            table.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=common.DEFAULT_URL, help="libpq URL: %(default)s")
    parser.add_argument("--check", action="store_true", help="serve and check; no load")
    parser.add_argument("--quick", action="store_true", help="short rounds (a smoke run)")
    parser.add_argument("--stacks", default=",".join(BY_KEY), help="comma-separated")
    parser.add_argument("--scenarios", default=",".join(SCENARIO_BY_NAME), help="comma-separated")
    defaults = Settings()
    parser.add_argument("--duration", type=float, help=f"seconds per round ({defaults.duration})")
    parser.add_argument("--repeats", type=int, help=f"rounds per stack ({defaults.repeats})")
    parser.add_argument("--warmup", type=float, help=f"seconds of warm-up ({defaults.warmup})")
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="granian WSGI")
    parser.add_argument("--pool", type=int, default=defaults.pool, help="connections per pool")
    parser.add_argument(
        "--cleanup", action="store_true", help="drop the schemas killed runs left; no run"
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    args = parser.parse_args(argv)
    if args.cleanup:
        for schema in leftover_schemas(args.url):
            drop_tables(args.url, schema)
            print(f"dropped {schema}")
        return 0
    stacks = [BY_KEY.get(k.strip()) for k in args.stacks.split(",") if k.strip()]
    scenarios = [SCENARIO_BY_NAME.get(k.strip()) for k in args.scenarios.split(",") if k.strip()]
    if None in stacks or not stacks:
        raise SystemExit(f"--stacks: some of {', '.join(BY_KEY)}")
    if None in scenarios or not scenarios:
        raise SystemExit(f"--scenarios: some of {', '.join(SCENARIO_BY_NAME)}")
    base = QUICK if args.quick else defaults
    settings = Settings(
        duration=args.duration if args.duration is not None else base.duration,
        repeats=args.repeats if args.repeats is not None else base.repeats,
        warmup=args.warmup if args.warmup is not None else base.warmup,
        connections=args.connections,
        threads=args.threads,
        pool=args.pool,
    )
    if not args.check and not wrk.available():
        raise SystemExit("the loads need wrk and taskset on PATH (or use --check)")
    results: dict[str, t.Any] = {
        "command": "python " + " ".join(["benchmarks/db.py", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine.describe(),
        "settings": asdict(settings),
        "stacks": {s.key: {"label": s.label, "server": s.server} for s in stacks},
    }
    for name in ("SQLAlchemy", "Flask-SQLAlchemy", "psycopg", "psycopg-pool"):
        results["machine"]["versions"][name.lower()] = machine._version(name)
    with psycopg.connect(args.url, connect_timeout=5) as conn:
        results["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    status = 0
    try:
        run(args.url, t.cast(list[Stack], stacks), t.cast(list[Scenario], scenarios), settings,
            args.check, results)  # fmt: skip
    except WrongAnswer as exc:
        print(f"wrong answer: {exc}", file=sys.stderr)
        status = 1
    results["load_average_at_end"] = list(os.getloadavg())
    errors = sum(e["errors"] for v in results.get("endtoend", {}).values() for e in v.values())
    if errors:
        print(f"{errors} requests failed under load (see the table)", file=sys.stderr)
        status = 1
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(table)
    return status


if __name__ == "__main__":
    sys.exit(main())
