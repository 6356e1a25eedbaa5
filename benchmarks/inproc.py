"""In-process WSGI micro-benchmark: carboy against Flask, same routes, same run.

No server and no sockets: each scenario builds one WSGI environ up front, then calls the
application object directly with a fresh copy of it for every request. Before anything is
timed, every response is checked, so a fast wrong answer cannot win.

    python benchmarks/inproc.py            # full run (well under a minute)
    python benchmarks/inproc.py --quick    # smoke run (a few seconds)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import sys
import time
import types
import typing as t
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from werkzeug.test import EnvironBuilder

FILLER_ROUTES = 96  # plus the four scenario routes: a 100-rule URL map


def build_app(app_class: type[t.Any], framework: types.ModuleType) -> t.Any:
    """Build the benchmark app with ``app_class`` (Carboy or Flask) and its module's helpers.

    Both frameworks get exactly this function, so their routes are identical.
    """
    request = framework.request
    app = app_class("inproc_bench")

    @app.route("/")
    def hello() -> str:
        return "Hello, World!"

    @app.route("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, t.Any]:
        return {"id": user_id, "name": f"user-{user_id}", "active": True}

    @app.route("/echo", methods=["POST"])
    def echo() -> str:
        form = request.form
        return f"{form['name']} x{int(form['count'])}"

    def filler(**values: t.Any) -> str:
        return "filler"

    for i in range(FILLER_ROUTES):
        if i % 3 == 0:
            rule = f"/section-{i}/items/<int:item_id>"
        elif i % 3 == 1:
            rule = f"/section-{i}/<slug>/edit"
        else:
            rule = f"/static-page-{i}"
        app.add_url_rule(rule, f"filler_{i}", filler)

    assert len(list(app.url_map.iter_rules())) >= 100
    return app


@dataclass
class Response:
    status: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Scenario:
    name: str
    environ: dict[str, t.Any]
    body: bytes | None
    check: Callable[[Response], None]


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def check_hello(res: Response) -> None:
    _expect(res.status == "200 OK", f"hello status {res.status}")
    _expect(res.body == b"Hello, World!", f"hello body {res.body!r}")
    _expect(res.headers["Content-Type"].startswith("text/html"), "hello content type")


def check_user(res: Response) -> None:
    _expect(res.status == "200 OK", f"json status {res.status}")
    _expect(res.headers["Content-Type"] == "application/json", "json content type")
    data = json.loads(res.body)
    _expect(data == {"id": 42, "name": "user-42", "active": True}, f"json body {data!r}")


def check_missing(res: Response) -> None:
    _expect(res.status == "404 NOT FOUND", f"404 status {res.status}")
    _expect(b"Not Found" in res.body, "404 body")


def check_echo(res: Response) -> None:
    _expect(res.status == "200 OK", f"form status {res.status}")
    _expect(res.body == b"carboy & flask x3", f"form body {res.body!r}")


def make_scenarios() -> list[Scenario]:
    def env(**kwargs: t.Any) -> dict[str, t.Any]:
        builder = EnvironBuilder(**kwargs)
        try:
            return builder.get_environ()
        finally:
            builder.close()

    form_body = b"name=carboy+%26+flask&count=3"
    return [
        Scenario("hello: GET / (text)", env(path="/"), None, check_hello),
        Scenario("json: GET /users/<int>", env(path="/users/42"), None, check_user),
        Scenario("404 among 100 routes", env(path="/section-0/nothing/here"), None, check_missing),
        Scenario(
            "form: POST urlencoded echo",
            env(
                path="/echo",
                method="POST",
                data=form_body,
                content_type="application/x-www-form-urlencoded",
            ),
            form_body,
            check_echo,
        ),
    ]


def make_caller(app: t.Any, scenario: Scenario) -> Callable[[], Response]:
    """Return a zero-argument function that performs one full WSGI request."""
    base = scenario.environ
    body = scenario.body
    captured: dict[str, t.Any] = {}

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
    ) -> t.Any:
        captured["status"] = status
        captured["headers"] = headers
        return None

    def call() -> Response:
        environ = base.copy()
        if body is not None:
            environ["wsgi.input"] = io.BytesIO(body)
        result: Iterable[bytes] = app(environ, start_response)
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return Response(captured["status"], dict(captured["headers"]), payload)

    return call


def make_timed_call(app: t.Any, scenario: Scenario) -> Callable[[], None]:
    """Like :func:`make_caller`, but doing only what a server must: call the app and drain the
    body. Checking and recording the answer stays out of the timed loop, so the ratio compares
    the frameworks rather than this script's bookkeeping."""
    base = scenario.environ
    body = scenario.body

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> None:
        return None

    def call() -> None:
        environ = base.copy()
        if body is not None:
            environ["wsgi.input"] = io.BytesIO(body)
        result = app(environ, start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()

    return call


def time_per_call(call: Callable[[], t.Any], target: float, repeats: int) -> float:
    """Microseconds per call: calibrate a loop to ``target`` seconds, keep the best repeat."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= target:
            break
        loops = max(loops * 2, int(loops * target / max(elapsed, 1e-9) * 1.1))
    best = elapsed
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(loops):
            call()
        best = min(best, time.perf_counter() - start)
    return best / loops * 1e6


def calls_per_request(call: Callable[[], t.Any], requests: int = 20) -> float:
    """Python-level function calls per request, as counted by cProfile (C builtins excluded)."""
    profiler = cProfile.Profile(builtins=False)
    profiler.enable()
    for _ in range(requests):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total: int = stats.total_calls  # type: ignore[attr-defined]
    return total / requests


def dist_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run for smoke testing")
    args = parser.parse_args(argv)
    target, repeats = (0.02, 2) if args.quick else (0.2, 7)

    import flask

    import carboy

    frameworks = {
        "carboy": build_app(carboy.Carboy, carboy),
        "Flask": build_app(flask.Flask, flask),
    }
    scenarios = make_scenarios()
    results: dict[str, dict[str, tuple[float, float]]] = {}

    for scenario in scenarios:
        results[scenario.name] = {}
        answers: dict[str, Response] = {}
        for label, app in frameworks.items():
            call = make_caller(app, scenario)
            try:
                for _ in range(3):  # first call also runs any one-time app setup
                    answers[label] = call()
                    scenario.check(answers[label])
            except AssertionError as exc:
                print(f"{label} gave a wrong answer for {scenario.name!r}: {exc}", file=sys.stderr)
                return 1
            for _ in range(200 if not args.quick else 20):
                call()
            timed = make_timed_call(app, scenario)
            micros = time_per_call(timed, target, repeats)
            results[scenario.name][label] = (micros, calls_per_request(timed))
        if answers["carboy"] != answers["Flask"]:
            print(
                f"note: carboy and Flask responses differ for {scenario.name!r}:\n"
                f"  carboy: {answers['carboy']}\n  Flask:  {answers['Flask']}",
                file=sys.stderr,
            )

    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"carboy {dist_version('carboy')}, Flask {dist_version('flask')}, "
        f"Werkzeug {dist_version('werkzeug')}"
        f"{' -- quick run, numbers are noisy' if args.quick else ''}\n"
    )
    print("| scenario | carboy µs | Flask µs | carboy/Flask ratio | carboy calls | Flask calls |")
    print("|---|---:|---:|---:|---:|---:|")
    for scenario in scenarios:
        (c_us, c_calls), (f_us, f_calls) = (
            results[scenario.name]["carboy"],
            results[scenario.name]["Flask"],
        )
        print(
            f"| {scenario.name} | {c_us:.1f} | {f_us:.1f} | {c_us / f_us:.2f} "
            f"| {c_calls:.0f} | {f_calls:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
