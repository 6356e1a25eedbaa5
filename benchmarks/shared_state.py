"""Issue 19's "shared state" benchmark: one request that loads a session, checks a rate limit
and hits a cached fragment, all on Redis.

    python benchmarks/shared_state.py                 # checks, round trips, profile, load
    python benchmarks/shared_state.py --check         # checks and round trips only (no wrk)
    python benchmarks/shared_state.py --repeats 7 --duration 5 --json /tmp/shared.json

Four stacks serve the same request (``GET /shared`` with a session cookie holding a user):

* ``carboy-wsgi``: carboy with ``carboy.scale.sessions.Session``, ``carboy.scale.limiter.Limiter``
  and ``carboy.scale.caching.Cache``, all on the app's ``REDIS_URL``; ``def`` views.
* ``flask``: Flask 3.1 with Flask-Session 0.8, Flask-Limiter 4 and Flask-Caching 2.5 on the
  same Redis, written the way their docs write it.
* ``carboy-async`` and ``carboy-sync``: the carboy app served over ASGI, with the view and the
  fragment ``async def`` (and ``RATELIMIT_ASYNC``), or with the same ``def`` views.

The view reads ``session["user"]`` (a read-only request), is limited by
``@limiter.limit("1000000000/minute")`` (checked on Redis, never tripped) and includes a
fragment cached under one key with ``@cache.cached(key_prefix=...)`` (computed once, then a
hit). The fragment counts its computations, and every answer is checked (body, status, no
429) in process and over HTTP before and after the load, so a fast wrong answer cannot win.

What it measures, in this order:

1. **Round trips to Redis per request**, in process: redis-py's ``send_packed_command`` (sync
   and asyncio) is counted over N requests after a warm-up; one call is one round trip (a
   pipeline is one), and each is named by its commands (an ``EVALSHA`` by the script it runs).
2. **Python calls per request** (cProfile, as ``benchmarks/inprocess.py`` counts them) and the
   profiled time split by package: where the time goes.
3. **req/s end to end**: each stack behind granian with one worker pinned to core 0 (the
   suite's command, ``benchmarks/servers.py``), wrk on core 1; carboy (WSGI) and Flask on
   granian WSGI, carboy async and sync views on granian ASGI. ``--repeats`` rounds of
   ``--duration`` seconds take turns between the two stacks of a server; reported are each
   stack's median round, the spread, and the ratio of each round's pair (same moment).
   The WSGI pair is loaded once per ``--threads`` count (granian's blocking threads; default
   1 and 8): with one thread a worker idles while Redis answers, with more another request
   runs meanwhile, as a deployment of I/O-bound views would be served.

Redis is the machine's (``--redis``, database 14 by default). Every key this run makes starts
with a per-run prefix, and only those keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import json
import os
import pstats
import statistics
import sys
import time
import typing as t
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from unittest import mock

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio.connection
import redis.connection
from markupsafe import escape

from benchmarks import endtoend, inprocess, wrk
from benchmarks.endtoend import _log_dir, _pin_self
from benchmarks.scenarios import Answer, Request, WrongAnswer, expect
from benchmarks.servers import BY_KEY as SERVERS
from benchmarks.servers import Server, ask, granian_wsgi

ROOT = Path(__file__).resolve().parent.parent
#: The machine's Redis, database 14 (the tests use 15).
REDIS_URL = "redis://127.0.0.1:6379/14"
#: High enough never to trip during a run.
LIMIT = "1000000000/minute"
USER = "user-7 <&>"
FRAGMENT = "<ul>" + "".join(f"<li>item {i}</li>" for i in range(20)) + "</ul>"
PAGE = f"<h1>Hello, {escape(USER)}</h1>{FRAGMENT}"
SHARED = Request("GET", "/shared")
#: Environment variables a served worker reads to build its app.
ENV_REDIS = "SHARED_STATE_REDIS"
ENV_PREFIX = "SHARED_STATE_PREFIX"


@dataclass(frozen=True)
class Stack:
    """One app under test, shaped as :class:`benchmarks.servers.Server` expects."""

    key: str
    label: str
    #: "wsgi" or "asgi".
    interface: str
    #: The granian server kind that serves it.
    server: str

    @property
    def attribute(self) -> str:
        return self.key.replace("-", "_")

    @property
    def target(self) -> str:
        return f"benchmarks.shared_state:{self.attribute}"


STACKS: tuple[Stack, ...] = (
    Stack("carboy-wsgi", "carboy (def views)", "wsgi", "granian-wsgi"),
    Stack("flask", "Flask + Flask-Session/-Limiter/-Caching", "wsgi", "granian-wsgi"),
    Stack("carboy-async", "carboy (async def views)", "asgi", "granian-asgi"),
    Stack("carboy-sync", "carboy (def views)", "asgi", "granian-asgi"),
)
BY_KEY = {stack.key: stack for stack in STACKS}
#: The pairs compared end to end: (numerator, denominator) of the ratio, on one server.
PAIRS = (("carboy-wsgi", "flask"), ("carboy-async", "carboy-sync"))

#: How many times each fragment function of this process computed its value.
COMPUTED: Counter[str] = Counter()


# -- the apps -----------------------------------------------------------------------------------


def _env() -> tuple[str, str]:
    return os.environ.get(ENV_REDIS, REDIS_URL), os.environ.get(ENV_PREFIX, "ssbench:")


def _page(user: t.Any, fragment: str) -> str:
    return f"<h1>Hello, {escape(user)}</h1>{fragment}"


def _common_routes(app: t.Any, session: t.Any, key: str) -> None:
    @app.post("/login")
    def login() -> str:
        session["user"] = USER
        return "ok"

    @app.get("/computed")
    def computed() -> str:
        return str(COMPUTED[key])


#: Called as ``routes(app, cache, limiter)`` to add routes to a built app (``benchmarks/rig``).
AddRoutes = t.Callable[[t.Any, t.Any, t.Any], None]


def build_flask(routes: AddRoutes | None = None) -> t.Any:
    """Flask 3.1 + Flask-Session, Flask-Limiter and Flask-Caching on one Redis (the real
    Flask, not carboy's alias); *routes* may add more."""
    from flask import Flask, session
    from flask_caching import Cache
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address
    from flask_session import Session

    url, prefix = _env()
    app = Flask("shared_state_flask")
    app.config.update(
        SECRET_KEY="shared-state",
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(url),
        SESSION_KEY_PREFIX=f"{prefix}flask:session:",
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_URL=url,
        CACHE_KEY_PREFIX=f"{prefix}flask:cache:",
        RATELIMIT_STORAGE_URI=url,
        RATELIMIT_KEY_PREFIX=f"{prefix}flask:limit",
    )
    Session(app)
    cache = Cache(app)
    limiter = Limiter(get_remote_address, app=app)
    _common_routes(app, session, "flask")

    @cache.cached(timeout=3600, key_prefix="fragment")
    def fragment() -> str:
        COMPUTED["flask"] += 1
        return FRAGMENT

    @app.get("/shared")
    @limiter.limit(LIMIT)
    def shared() -> str:
        return _page(session["user"], fragment())

    if routes is not None:
        routes(app, cache, limiter)
    return app


def build_carboy(key: str, asynchronous: bool, routes: AddRoutes | None = None) -> t.Any:
    """carboy with its scale-out modules on the app's ``REDIS_URL``, its keys and fragment
    count named *key*; *asynchronous*: the view and the fragment are ``async def`` and the
    limiter checks on the asyncio client; *routes* may add more."""
    import carboy
    from carboy.scale.caching import Cache
    from carboy.scale.limiter import Limiter, get_remote_address
    from carboy.scale.sessions import Session

    url, prefix = _env()
    app = carboy.Carboy(f"shared_state_{key.replace('-', '_')}")
    app.config.update(
        SECRET_KEY="shared-state",
        REDIS_URL=url,
        SESSION_TYPE="redis",
        SESSION_KEY_PREFIX=f"{prefix}{key}:session:",
        CACHE_TYPE="RedisCache",
        CACHE_KEY_PREFIX=f"{prefix}{key}:cache:",
        RATELIMIT_KEY_PREFIX=f"{prefix}{key}:limit",
        RATELIMIT_ASYNC=asynchronous,
    )
    Session(app)
    cache = Cache(app)
    limiter = Limiter(get_remote_address, app=app)
    session = carboy.session
    _common_routes(app, session, key)

    if asynchronous:

        @cache.cached(timeout=3600, key_prefix="fragment")
        async def afragment() -> str:
            COMPUTED[key] += 1
            return FRAGMENT

        @app.get("/shared")
        @limiter.limit(LIMIT)
        async def ashared() -> str:
            return _page(session["user"], await afragment())

    else:

        @cache.cached(timeout=3600, key_prefix="fragment")
        def fragment() -> str:
            COMPUTED[key] += 1
            return FRAGMENT

        @app.get("/shared")
        @limiter.limit(LIMIT)
        def shared() -> str:
            return _page(session["user"], fragment())

    if routes is not None:
        routes(app, cache, limiter)
    return app


_BUILDERS: dict[str, t.Callable[[], t.Any]] = {
    "carboy_wsgi": lambda: build_carboy("carboy-wsgi", False),
    "flask": build_flask,
    "carboy_async": lambda: build_carboy("carboy-async", True),
    "carboy_sync": lambda: build_carboy("carboy-sync", False),
}


def __getattr__(name: str) -> t.Any:
    """The served apps, built on first access from the environment (``ENV_REDIS``,
    ``ENV_PREFIX``): ``benchmarks.shared_state:carboy_wsgi`` and so on."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = builder()
    globals()[name] = app
    return app


# -- right answers ------------------------------------------------------------------------------


def check_shared(res: Answer) -> None:
    """A right answer: 200, text/html, the user from the session and the cached fragment."""
    expect(res.status == 200, f"status {res.status}; body {res.body[:200]!r}")
    content_type = res.header("content-type") or ""
    expect(content_type.startswith("text/html"), f"content type {content_type!r}")
    expect(res.body == PAGE.encode(), f"body {res.body[:200]!r}, expected {PAGE[:60]!r}...")


def cookie_of(res: Answer) -> str:
    """The ``session=...`` pair a client sends back, from the login's answer."""
    expect(res.status == 200, f"login: status {res.status}; body {res.body[:200]!r}")
    for name, value in res.headers:
        if name == "set-cookie":
            jar: SimpleCookie = SimpleCookie()
            jar.load(value)
            if "session" in jar:
                return f"session={jar['session'].coded_value}"
    raise WrongAnswer("login set no session cookie")


def signed_in(ask_: t.Callable[[Request], Answer]) -> Request:
    """The timed request: ``GET /shared`` with the cookie of a session that holds the user."""
    return SHARED.with_header("Cookie", cookie_of(ask_(Request("POST", "/login"))))


# -- counting round trips -----------------------------------------------------------------------


def _script_names() -> dict[str, str]:
    """SHA1 -> name of every Lua script carboy's modules and ``limits`` register."""
    import limits

    folders = [ROOT / "src" / "carboy" / "scale" / "lua"]
    folders.append(Path(limits.__file__).parent / "resources" / "redis" / "lua_scripts")
    names = {}
    for folder in folders:
        for path in folder.glob("*.lua"):
            text = path.read_bytes()
            for variant in (text, text.strip()):
                names[hashlib.sha1(variant).hexdigest()] = path.stem
    return names


def parse_commands(data: bytes) -> list[list[bytes]]:
    """The commands in a RESP request stream (arrays of bulk strings), as redis-py packs them."""
    commands = []
    i = 0
    while i < len(data):
        if data[i : i + 1] != b"*":
            raise ValueError(f"not a RESP array at byte {i}: {data[i : i + 20]!r}")
        end = data.index(b"\r\n", i)
        count = int(data[i + 1 : end])
        i = end + 2
        args = []
        for _ in range(count):
            end = data.index(b"\r\n", i)
            size = int(data[i + 1 : end])
            i = end + 2
            args.append(data[i : i + size])
            i += size + 2
        commands.append(args)
    return commands


class RoundTrips:
    """Counts round trips to Redis made by this process, sync and asyncio, while active.

    redis-py writes each command, or each pipeline, with one ``send_packed_command`` call and
    then reads the replies: one call is one round trip. Each trip is recorded as the names of
    its commands (``GET+PTTL`` for a pipeline; ``EVALSHA session_load`` for a script).
    """

    def __init__(self) -> None:
        self.trips: list[str] = []
        self._scripts = _script_names()
        self._saved: list[tuple[type, t.Any]] = []

    def _name(self, packed: t.Any) -> str:
        data = b"".join(packed) if isinstance(packed, list | tuple) else bytes(packed)
        names = []
        for args in parse_commands(data):
            name = args[0].decode("ascii", "replace").upper()
            if name == "EVALSHA" and len(args) > 1:
                sha = args[1].decode("ascii", "replace")
                name += " " + self._scripts.get(sha, sha[:10])
            names.append(name)
        return "+".join(names)

    def __enter__(self) -> RoundTrips:
        sync_cls = redis.connection.AbstractConnection
        async_cls = redis.asyncio.connection.AbstractConnection
        sync_send = sync_cls.send_packed_command
        async_send = async_cls.send_packed_command
        trips = self.trips

        def send(conn: t.Any, command: t.Any, check_health: bool = True) -> None:
            trips.append(self._name(command))
            return sync_send(conn, command, check_health)

        async def asend(conn: t.Any, command: t.Any, check_health: bool = True) -> None:
            trips.append(self._name(command))
            return await async_send(conn, command, check_health)

        self._saved = [(sync_cls, sync_send), (async_cls, async_send)]
        sync_cls.send_packed_command = send  # type: ignore[method-assign]
        async_cls.send_packed_command = asend  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, original in self._saved:
            cls.send_packed_command = original  # type: ignore[attr-defined]
        self._saved = []

    def per_request(self, requests: int) -> dict[str, t.Any]:
        """Round trips per request, and per kind of trip."""
        kinds = Counter(self.trips)
        return {
            "round_trips": len(self.trips) / requests,
            "by_trip": {name: n / requests for name, n in kinds.most_common()},
        }


# -- in process ---------------------------------------------------------------------------------

_PACKAGES = (
    "carboy", "flask_session", "flask_limiter", "flask_caching", "flask", "limits", "redis",
    "werkzeug", "jinja2", "cachelib", "msgspec", "asyncio", "benchmarks",
)  # fmt: skip


def _package(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    parts = Path(filename).parts
    for name in reversed(parts):  # the innermost package folder named in the path
        if name in _PACKAGES:
            return name
    return "stdlib/other"


def profile(drv: inprocess.Driver, request: Request, n: int) -> dict[str, t.Any]:
    """Python calls per request and the profiled time split by package (own time)."""
    calls = drv.profile(request, n)
    profiler = cProfile.Profile()
    run = drv.runner(request)
    gc.collect()
    profiler.enable()
    run(n)
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_package: Counter[str] = Counter()
    for (filename, _line, _name), row in stats.stats.items():  # type: ignore[attr-defined]
        by_package[_package(filename)] += row[2]  # own time
    total = sum(by_package.values()) or 1.0
    return {
        "calls": calls,
        "us_profiled": total / n * 1e6,
        "time_share": {k: v / total for k, v in by_package.most_common()},
    }


def timed(drv: inprocess.Driver, request: Request, n: int) -> dict[str, float]:
    """Wall-clock and CPU µs per request over *n* back-to-back requests in this process: the
    difference is mostly time spent waiting for Redis's replies."""
    run = drv.runner(request)
    run(min(n, 20))
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    run(n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"us_wall": wall / n * 1e6, "us_cpu": cpu / n * 1e6}


def check_in_process(
    requests: int, profiled: int, only: t.Sequence[str] = ()
) -> dict[str, dict[str, t.Any]]:
    """Build each stack in this process, check its answers, count its round trips and
    (when *profiled*) its Python calls.

    :raises WrongAnswer: when a stack answers wrongly, or computed its fragment more than once.
    """
    results: dict[str, dict[str, t.Any]] = {}
    for stack in STACKS:
        if only and stack.key not in only:
            continue
        app = _BUILDERS[stack.attribute]()
        cls = inprocess.WsgiDriver if stack.interface == "wsgi" else inprocess.AsgiDriver
        drv = cls(stack, app)  # type: ignore[arg-type]
        try:
            request = signed_in(drv.ask)
            for _ in range(3):  # warm: the fragment computed, scripts loaded, pools open
                check_shared(drv.ask(request))
            with RoundTrips() as counter:
                for _ in range(requests):
                    check_shared(drv.ask(request))
        except WrongAnswer as exc:
            raise WrongAnswer(f"{stack.key} (in process): {exc}") from None
        entry = counter.per_request(requests)
        entry["fragment_computed"] = COMPUTED[stack.key]
        if COMPUTED[stack.key] != 1:
            raise WrongAnswer(f"{stack.key}: fragment computed {COMPUTED[stack.key]} times")
        entry.update(timed(drv, request, requests))
        if profiled:
            entry.update(profile(drv, request, profiled))
        results[stack.key] = entry
    return results


# -- end to end ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSettings:
    duration: float = 5.0
    repeats: int = 5
    warmup: float = 2.0
    connections: int = 32
    server_cpu: int = 0
    client_cpu: int = 1
    #: granian WSGI's blocking threads: one load of the WSGI pair per count (the ASGI pair is
    #: loaded once: granian ASGI runs one Python thread, sync views go to carboy's pool).
    threads: tuple[int, ...] = (1, 8)


def _check_served(server: Server, request: Request, stack: Stack, computed: str) -> None:
    try:
        check_shared(ask(server.port, request))
        got = ask(server.port, Request("GET", "/computed")).body.decode()
        expect(got == computed, f"fragment computed {got} times, expected {computed}")
    except WrongAnswer as exc:
        raise WrongAnswer(f"{stack.key} on {server.kind.label}: {exc}") from None


def load(
    settings: LoadSettings, only: t.Sequence[str], url: str, prefixes: list[str]
) -> dict[str, dict[str, dict[str, t.Any]]]:
    """req/s of each stack, each pair of one server taking turns, by granian WSGI thread
    count (``"1"``, ``"8"``...); see the module docs. Each count runs under a fresh key
    prefix (appended to *prefixes*), so its servers find a cold cache."""
    by_threads: dict[str, dict[str, dict[str, t.Any]]] = {}
    for index, threads in enumerate(settings.threads):
        pairs = PAIRS if index == 0 else PAIRS[:1]
        with run_prefix(url) as prefix:
            prefixes.append(prefix)
            by_threads[str(threads)] = _load(settings, threads, pairs, only)
    return by_threads


def _load(
    settings: LoadSettings,
    threads: int,
    pairs: t.Sequence[tuple[str, str]],
    only: t.Sequence[str] = (),
) -> dict[str, dict[str, t.Any]]:
    _pin_self(settings.client_cpu)
    logs = _log_dir(endtoend.Settings())
    results: dict[str, dict[str, t.Any]] = {}
    for pair in pairs:
        stacks = [BY_KEY[k] for k in pair if not only or k in only]
        if not stacks:
            continue
        with ExitStack() as exits:
            servers = {
                s.key: exits.enter_context(
                    Server(
                        granian_wsgi(threads) if s.server == "granian-wsgi" else SERVERS[s.server],
                        s,  # type: ignore[arg-type]
                        settings.server_cpu,
                        logs / f"shared-state-{s.key}.log",
                    )
                )
                for s in stacks
            }
            requests = {}
            for stack in stacks:
                server = servers[stack.key]
                requests[stack.key] = signed_in(lambda r, p=server.port: ask(p, r))
                _check_served(server, requests[stack.key], stack, "1")
                if settings.warmup > 0:
                    wrk.run(
                        server.url,
                        requests[stack.key],
                        settings.warmup,
                        settings.connections,
                        settings.client_cpu,
                    )
            rounds: dict[str, list[wrk.Load]] = {s.key: [] for s in stacks}
            for _ in range(settings.repeats):
                for stack in stacks:
                    rounds[stack.key].append(
                        wrk.run(
                            servers[stack.key].url,
                            requests[stack.key],
                            settings.duration,
                            settings.connections,
                            settings.client_cpu,
                        )
                    )
            for stack in stacks:
                _check_served(servers[stack.key], requests[stack.key], stack, "1")
        for stack in stacks:
            loads = rounds[stack.key]
            rps = [x.rps for x in loads]
            median = sorted(loads, key=lambda x: x.rps)[(len(loads) - 1) // 2]
            results[stack.key] = {
                "server": stack.server,
                "threads": threads if stack.server == "granian-wsgi" else 1,
                "rps_median": statistics.median(rps),
                "rps_rounds": rps,
                "p50_ms": median.p50_ms,
                "p99_ms": median.p99_ms,
                "errors": sum(x.non_2xx + x.socket_errors for x in loads),
                "requests": sum(x.requests for x in loads),
            }
        if len(stacks) == 2:
            top, bottom = (results[k] for k in pair)
            ratios = [a / b for a, b in zip(top["rps_rounds"], bottom["rps_rounds"], strict=True)]
            results[pair[0]]["ratio_to"] = pair[1]
            results[pair[0]]["ratio_rounds"] = ratios
            results[pair[0]]["ratio_median"] = statistics.median(ratios)
    return results


# -- the command --------------------------------------------------------------------------------


def delete_keys(url: str, prefix: str) -> int:
    """Delete the keys this run made (and nothing else): every key containing *prefix*."""
    client = redis.Redis.from_url(url)
    try:
        stale = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if stale:
            client.delete(*stale)
        return len(stale)
    finally:
        client.close()


@contextmanager
def run_prefix(url: str) -> Iterator[str]:
    """A fresh key prefix in the environment (read by the apps, here and in served workers),
    whose keys are deleted on exit."""
    prefix = f"ssbench-{uuid.uuid4().hex[:10]}:"
    try:
        with mock.patch.dict(os.environ, {ENV_REDIS: url, ENV_PREFIX: prefix}):
            yield prefix
    finally:
        delete_keys(url, prefix)


def print_report(results: dict[str, t.Any]) -> None:
    inproc = results.get("inprocess", {})
    if inproc:
        print(
            "\n| stack | round trips / request | trips | Python calls / request "
            "| µs / request (wall) | µs / request (CPU) |"
        )
        print("|---|---:|---|---:|---:|---:|")
        for key, e in inproc.items():
            trips = ", ".join(f"{n:g} x {name}" for name, n in e["by_trip"].items())
            calls = f"{e['calls']:.0f}" if "calls" in e else "-"
            print(
                f"| {key} | {e['round_trips']:g} | {trips} | {calls} "
                f"| {e['us_wall']:.0f} | {e['us_cpu']:.0f} |"
            )
        if any("time_share" in e for e in inproc.values()):
            print("\nprofiled own time per package (share of the request):")
            for key, e in inproc.items():
                shares = ", ".join(
                    f"{p} {s:.0%}" for p, s in e.get("time_share", {}).items() if s >= 0.02
                )
                print(f"  {key} ({e.get('us_profiled', 0):.0f} us profiled): {shares}")
    by_threads = results.get("endtoend", {})
    if by_threads:
        print("\n| stack | server | threads | req/s median | rounds | p50 ms | p99 ms | errors |")
        print("|---|---|---:|---:|---|---:|---:|---:|")
        for served in by_threads.values():
            for key, e in served.items():
                rounds = ", ".join(f"{r:.0f}" for r in e["rps_rounds"])
                print(
                    f"| {key} | {e['server']} | {e['threads']} | {e['rps_median']:.0f} | "
                    f"{rounds} | {e['p50_ms']:.2f} | {e['p99_ms']:.2f} | {e['errors']} |"
                )
        for served in by_threads.values():
            for key, e in served.items():
                if "ratio_median" in e:
                    rounds = ", ".join(f"{r:.2f}" for r in e["ratio_rounds"])
                    print(
                        f"ratio {key} / {e['ratio_to']} ({e['threads']} thread(s)): median "
                        f"{e['ratio_median']:.2f} (rounds {rounds})"
                    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=REDIS_URL, help="Redis URL (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="checks and round trips; no load")
    parser.add_argument("--stacks", default=",".join(BY_KEY), help="comma-separated")
    parser.add_argument("--requests", type=int, default=200, help="requests counted in process")
    parser.add_argument("--profiled", type=int, default=200, help="requests profiled; 0: none")
    parser.add_argument("--duration", type=float, default=LoadSettings.duration)
    parser.add_argument("--repeats", type=int, default=LoadSettings.repeats)
    parser.add_argument("--warmup", type=float, default=LoadSettings.warmup)
    parser.add_argument("--connections", type=int, default=LoadSettings.connections)
    parser.add_argument(
        "--threads",
        default=",".join(map(str, LoadSettings.threads)),
        help="granian WSGI blocking threads, comma-separated: one load of the WSGI pair each",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    only = [k.strip() for k in args.stacks.split(",") if k.strip()]
    unknown = [k for k in only if k not in BY_KEY]
    if unknown:
        raise SystemExit(f"unknown stacks: {', '.join(unknown)} (known: {', '.join(BY_KEY)})")
    threads = tuple(int(n) for n in args.threads.split(",") if n.strip())
    if not threads or min(threads) < 1:
        raise SystemExit("--threads: one or more counts of 1 or more, comma-separated")
    settings = LoadSettings(
        args.duration, args.repeats, args.warmup, args.connections, threads=threads
    )
    results: dict[str, t.Any] = {
        "command": "python " + " ".join(["benchmarks/shared_state.py", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "redis": args.redis,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    redis.Redis.from_url(args.redis, socket_connect_timeout=1).ping()
    try:
        with run_prefix(args.redis) as prefix:
            results["prefixes"] = [prefix]
            results["inprocess"] = check_in_process(args.requests, args.profiled, only)
        if not args.check:
            if not wrk.available():
                raise SystemExit("the load needs wrk and taskset on PATH (or use --check)")
            results["settings"] = settings.__dict__
            results["endtoend"] = load(settings, only, args.redis, results["prefixes"])
    except WrongAnswer as exc:
        print(f"wrong answer: {exc}", file=sys.stderr)
        return 1
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
