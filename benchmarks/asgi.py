"""In-process ASGI micro-benchmark: carboy against Starlette and Quart, same routes, same run.

No server and no sockets: each scenario builds one ASGI scope up front, then awaits every
framework's application object directly, ``await app(scope, receive, send)``, with a fresh
shallow copy of that scope and trivial ``receive``/``send`` coroutines. All timed loops run
inside one event loop. Before anything is timed, every response is checked, so a fast wrong
answer cannot win.

    python benchmarks/asgi.py            # full run (about a minute)
    python benchmarks/asgi.py --quick    # smoke run (a few seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import platform
import pstats
import sys
import time
import typing as t
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import quart
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import carboy

FILLER_ROUTES = 95  # plus the five scenario routes: a 100-rule URL map
HELLO = "Hello, World!"
ECHO_PAYLOAD = {"name": "carboy & friends", "count": 3, "tags": ["asgi", "bench"]}

Message = dict[str, t.Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[dict[str, t.Any], Receive, Send], Awaitable[None]]


def _filler_rule(i: int, int_arg: str, str_arg: str) -> str:
    """The *i*-th filler rule, with the framework's placeholder syntax for an int and a str."""
    if i % 3 == 0:
        return f"/section-{i}/items/{int_arg}"
    if i % 3 == 1:
        return f"/section-{i}/{str_arg}/edit"
    return f"/static-page-{i}"


def build_carboy() -> t.Any:
    app = carboy.Carboy("asgi_bench")
    request = carboy.request

    @app.route("/")
    async def hello() -> str:
        return HELLO

    @app.route("/users/<int:user_id>")
    async def user(user_id: int) -> dict[str, t.Any]:
        return {"id": user_id, "name": f"user-{user_id}", "active": True}

    @app.route("/echo", methods=["POST"])
    async def echo() -> t.Any:
        return request.get_json()

    @app.route("/sync")
    def sync_hello() -> str:
        return HELLO

    async def filler(**values: t.Any) -> str:
        return "filler"

    for i in range(FILLER_ROUTES):
        app.add_url_rule(_filler_rule(i, "<int:item_id>", "<slug>"), f"filler_{i}", filler)
    assert len(list(app.url_map.iter_rules())) >= 100
    return app


def build_starlette() -> t.Any:
    async def hello(request: StarletteRequest) -> Response:
        return PlainTextResponse(HELLO)

    async def user(request: StarletteRequest) -> Response:
        user_id = request.path_params["user_id"]
        return JSONResponse({"id": user_id, "name": f"user-{user_id}", "active": True})

    async def echo(request: StarletteRequest) -> Response:
        return JSONResponse(await request.json())

    def sync_hello(request: StarletteRequest) -> Response:
        return PlainTextResponse(HELLO)

    async def filler(request: StarletteRequest) -> Response:
        return PlainTextResponse("filler")

    routes = [
        Route("/", hello),
        Route("/users/{user_id:int}", user),
        Route("/echo", echo, methods=["POST"]),
        Route("/sync", sync_hello),
    ]
    routes += [
        Route(_filler_rule(i, "{item_id:int}", "{slug}"), filler, name=f"filler_{i}")
        for i in range(FILLER_ROUTES)
    ]
    assert len(routes) >= 99  # Starlette has no static rule; carboy and Quart have one each
    return Starlette(routes=routes)


def build_quart() -> t.Any:
    app = quart.Quart("asgi_bench")
    request = quart.request

    @app.route("/")
    async def hello() -> str:
        return HELLO

    @app.route("/users/<int:user_id>")
    async def user(user_id: int) -> dict[str, t.Any]:
        return {"id": user_id, "name": f"user-{user_id}", "active": True}

    @app.route("/echo", methods=["POST"])
    async def echo() -> t.Any:
        return await request.get_json()

    @app.route("/sync")
    def sync_hello() -> str:
        return HELLO

    async def filler(**values: t.Any) -> str:
        return "filler"

    for i in range(FILLER_ROUTES):
        app.add_url_rule(_filler_rule(i, "<int:item_id>", "<slug>"), f"filler_{i}", filler)
    assert len(list(app.url_map.iter_rules())) >= 100
    return app


# -- requests and checks ------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Scenario:
    name: str
    scope: dict[str, t.Any]
    body: bytes
    check: Callable[[Answer], None]
    #: Sync views hop to a thread pool; cProfile only sees the event-loop thread.
    threaded: bool = False


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def check_hello(res: Answer) -> None:
    _expect(res.status == 200, f"hello status {res.status}")
    _expect(res.body == HELLO.encode(), f"hello body {res.body!r}")
    _expect(res.headers["content-type"].startswith("text/"), "hello content type")


def check_user(res: Answer) -> None:
    _expect(res.status == 200, f"json status {res.status}")
    _expect(res.headers["content-type"] == "application/json", "json content type")
    data = json.loads(res.body)
    _expect(data == {"id": 42, "name": "user-42", "active": True}, f"json body {data!r}")


def check_missing(res: Answer) -> None:
    _expect(res.status == 404, f"404 status {res.status}")
    _expect(b"Not Found" in res.body, f"404 body {res.body!r}")


def check_echo(res: Answer) -> None:
    _expect(res.status == 200, f"echo status {res.status}")
    _expect(res.headers["content-type"] == "application/json", "echo content type")
    data = json.loads(res.body)
    _expect(data == ECHO_PAYLOAD, f"echo body {data!r}")


def make_scope(
    method: str, path: str, headers: t.Sequence[tuple[bytes, bytes]] = ()
) -> dict[str, t.Any]:
    """An HTTP scope shaped like the one uvicorn builds for a plain HTTP/1.1 request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 51000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"asgi-bench/1.0"),
            (b"accept", b"*/*"),
            *headers,
        ],
    }


def make_scenarios() -> list[Scenario]:
    payload = json.dumps(ECHO_PAYLOAD).encode()
    return [
        Scenario("hello: GET / (text)", make_scope("GET", "/"), b"", check_hello),
        Scenario("json: GET /users/<int>", make_scope("GET", "/users/42"), b"", check_user),
        Scenario(
            "404 among 100 routes",
            make_scope("GET", "/section-0/nothing/here"),
            b"",
            check_missing,
        ),
        Scenario(
            "json echo: POST /echo",
            make_scope(
                "POST",
                "/echo",
                [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            ),
            payload,
            check_echo,
        ),
        Scenario(
            "sync hello: def view (thread pool)",
            make_scope("GET", "/sync"),
            b"",
            check_hello,
            threaded=True,
        ),
    ]


def make_receive(body: bytes) -> Receive:
    """What a server's ``receive`` does: the whole body in one message, then wait (the client
    stays connected) until cancelled. Never reporting ``http.disconnect`` matters: Quart listens
    for it in a task racing the handler and would cancel the response."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.get_running_loop().create_future()  # cancelled when the app is done
        raise AssertionError("unreachable")

    return receive


async def ask(app: ASGIApp, scenario: Scenario) -> Answer:
    """One full request, recording the response for checking."""
    start: Message = {}
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            _expect(not start, "response started twice")
            start.update(message)
        elif message["type"] == "http.response.body":
            _expect(bool(start), "body before start")
            chunks.append(message.get("body", b""))
        else:
            raise AssertionError(f"unexpected message {message['type']!r}")

    await app(scenario.scope.copy(), make_receive(scenario.body), send)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return Answer(start["status"], headers, b"".join(chunks))


async def _discard(message: Message) -> None:
    return None


def make_loop(app: ASGIApp, scenario: Scenario) -> Callable[[int], Awaitable[None]]:
    """``run(n)`` awaits *n* requests back to back, doing only what a server must per request:
    a fresh scope dict and receive callable, a ``send`` that drops the messages."""
    base = scenario.scope
    body = scenario.body

    async def run(n: int) -> None:
        for _ in range(n):
            await app(base.copy(), make_receive(body), _discard)

    return run


async def calibrate(run: Callable[[int], Awaitable[None]], target: float) -> int:
    """How many back-to-back requests take about ``target`` seconds."""
    loops = 1
    while True:
        start = time.perf_counter()
        await run(loops)
        elapsed = time.perf_counter() - start
        if elapsed >= target:
            return loops
        loops = max(loops * 2, int(loops * target / max(elapsed, 1e-9) * 1.1))


async def time_per_request(
    runs: dict[str, Callable[[int], Awaitable[None]]], target: float, repeats: int
) -> dict[str, float]:
    """Microseconds per request for each framework: loops calibrated to ``target`` seconds,
    best of ``repeats``. The repeats take turns between the frameworks, so a slow spell of the
    machine (another process, a frequency change) hits all of them alike instead of one."""
    loops = {label: await calibrate(run, target) for label, run in runs.items()}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for label, run in runs.items():
            gc.collect()  # start each timed loop without the previous one's garbage
            start = time.perf_counter()
            await run(loops[label])
            best[label] = min(best[label], (time.perf_counter() - start) / loops[label])
    return {label: seconds * 1e6 for label, seconds in best.items()}


async def calls_per_request(run: Callable[[int], Awaitable[None]], requests: int = 20) -> float:
    """Python function calls per request on this (event-loop) thread, as counted by cProfile
    (C builtins excluded). Includes asyncio's own Python code when a framework yields to it."""
    gc.collect()  # so another framework's garbage is not collected (and counted) here
    profiler = cProfile.Profile(builtins=False)
    profiler.enable()
    await run(requests)
    profiler.disable()
    total: int = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
    return total / requests


def dist_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"


LABELS = ("carboy", "Starlette", "Quart")


async def run_all(quick: bool) -> tuple[list[Scenario], dict[str, dict[str, tuple[float, float]]]]:
    target, repeats = (0.02, 2) if quick else (0.2, 7)
    apps: dict[str, ASGIApp] = {
        "carboy": build_carboy(),
        "Starlette": build_starlette(),
        "Quart": build_quart(),
    }
    scenarios = make_scenarios()
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for scenario in scenarios:
        runs: dict[str, Callable[[int], Awaitable[None]]] = {}
        for label, app in apps.items():
            try:
                for _ in range(3):  # the first request also runs any one-time app setup
                    scenario.check(await ask(app, scenario))
            except AssertionError as exc:
                raise SystemExit(f"{label} gave a wrong answer for {scenario.name!r}: {exc}")
            runs[label] = make_loop(app, scenario)
            await runs[label](20 if quick else 200)  # warm up
        micros = await time_per_request(runs, target, repeats)
        results[scenario.name] = {
            label: (micros[label], await calls_per_request(run)) for label, run in runs.items()
        }
    return scenarios, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke testing")
    args = parser.parse_args(argv)

    scenarios, results = asyncio.run(run_all(args.quick))

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"carboy {dist_version('carboy')}, Starlette {dist_version('starlette')}, "
        f"Quart {dist_version('quart')}, Werkzeug {dist_version('werkzeug')}"
        f"{' -- quick run, numbers are noisy' if args.quick else ''}\n"
    )
    print(
        "| scenario | carboy µs | Starlette µs | Quart µs | carboy/Starlette | carboy/Quart "
        "| carboy calls | Starlette calls | Quart calls |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scenario in scenarios:
        row = results[scenario.name]
        (c_us, c_calls), (s_us, s_calls), (q_us, q_calls) = (row[label] for label in LABELS)
        mark = "*" if scenario.threaded else ""
        print(
            f"| {scenario.name} | {c_us:.1f} | {s_us:.1f} | {q_us:.1f} "
            f"| {c_us / s_us:.2f} | {c_us / q_us:.2f} "
            f"| {c_calls:.0f}{mark} | {s_calls:.0f}{mark} | {q_calls:.0f}{mark} |"
        )
    print(
        "\n\\* calls on the event-loop thread only; the view's side in the pool thread is not"
        " counted."
    )
    hello = results[scenarios[0].name]
    vs_starlette = hello["carboy"][0] / hello["Starlette"][0]
    vs_quart = hello["carboy"][0] / hello["Quart"][0]
    print(
        f"\nTargets (async hello): carboy/Starlette {vs_starlette:.2f} (target <= 1.00: "
        f"{'met' if vs_starlette <= 1.0 else 'missed'}), carboy/Quart {vs_quart:.2f} "
        f"(target <= 0.10: {'met' if vs_quart <= 0.1 else 'missed'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
