"""In-process measurements: every app object called directly, no server and no sockets.

For each scenario and framework the request is built once (a WSGI environ with Werkzeug's
``EnvironBuilder``, or an ASGI scope shaped like uvicorn's) and every framework's answer is
checked before anything is timed. Then:

* **µs per request**: a loop of back-to-back requests, its length calibrated per framework to
  ``target`` seconds, repeated ``repeats`` times; the best repeat is reported (the median is
  kept in results.json). The repeats take turns between the frameworks, with a
  ``gc.collect()`` before each, so a slow spell of the machine hits all of them alike.
* **calls per request**: Python function calls counted by :mod:`cProfile` (C builtins
  excluded) over a batch of requests, on the calling thread only: work a framework sends to a
  thread pool (static files under some ASGI frameworks) is not counted.

Per request, the WSGI loop copies the environ (and gives a POST a fresh ``wsgi.input``), calls
the app and drains and closes the body; the ASGI loop copies the scope, makes a ``receive``
that hands over the body in one message, and awaits the app with a ``send`` that drops the
messages. All ASGI apps run on one event loop, kept for the whole run.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import os
import pstats
import statistics
import time
import typing as t
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from werkzeug.test import EnvironBuilder

from .apps import Framework
from .scenarios import SCENARIOS, Answer, Request, Scenario, WrongAnswer, with_session

Message = dict[str, t.Any]


@dataclass(frozen=True)
class Settings:
    #: Seconds each timed loop should take.
    target: float = 0.2
    #: Timed loops per framework; the best is reported.
    repeats: int = 7
    #: Untimed requests before calibrating.
    warmup: int = 200
    #: Requests profiled to count calls.
    profiled: int = 100
    #: The core this process is pinned to while measuring (the one servers get end to end).
    cpu: int | None = 0


QUICK = Settings(target=0.01, repeats=3, warmup=20, profiled=20)


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the body on core *cpu* only (where the OS allows pinning), then unpin."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- delivering requests ------------------------------------------------------------------------


def wsgi_environ(request: Request) -> dict[str, t.Any]:
    headers = dict(request.headers)
    content_type = headers.pop("Content-Type", None)
    headers.pop("Content-Length", None)  # the builder sets it from the body
    builder = EnvironBuilder(
        path=request.path,
        method=request.method,
        query_string=request.query,
        data=request.body or None,
        content_type=content_type,
        headers=list(headers.items()),
        base_url="http://127.0.0.1:8000/",
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def asgi_scope(request: Request) -> dict[str, t.Any]:
    """An HTTP scope shaped like the one uvicorn builds for a plain HTTP/1.1 request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 51000),
        "scheme": "http",
        "method": request.method,
        "root_path": "",
        "path": request.path,
        "raw_path": request.path.encode("ascii"),
        "query_string": request.query.encode("ascii"),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"carboy-benchmarks"),
            (b"accept", b"*/*"),
            *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in
              request.headers),
        ],
    }  # fmt: skip


class Driver:
    """Sends requests to one app in process: :meth:`ask` returns the answer, :meth:`run`
    sends *n* requests doing only what a server must."""

    def __init__(self, framework: Framework, app: t.Any) -> None:
        self.framework = framework
        self.app = app

    def ask(self, request: Request) -> Answer:
        raise NotImplementedError

    def runner(self, request: Request) -> Callable[[int], None]:
        raise NotImplementedError

    def profile(self, request: Request, n: int) -> float:
        """Python function calls per request over *n* requests."""
        gc.collect()  # so no other framework's garbage is collected (and counted) here
        profiler = cProfile.Profile(builtins=False)
        run = self.runner(request)
        profiler.enable()
        run(n)
        profiler.disable()
        total: int = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
        return total / n


class WsgiDriver(Driver):
    def ask(self, request: Request) -> Answer:
        environ = wsgi_environ(request)
        captured: list[t.Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: t.Any = None
        ) -> None:
            captured[:] = [status, headers]

        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = captured
        return Answer(int(status.split()[0]), [(k.lower(), v) for k, v in headers], body)

    def runner(self, request: Request) -> Callable[[int], None]:
        app = self.app
        base = wsgi_environ(request)
        body = request.body

        def start_response(status: str, headers: t.Any, exc_info: t.Any = None) -> None:
            return None

        def run(n: int) -> None:
            for _ in range(n):
                environ = base.copy()
                if body:
                    environ["wsgi.input"] = io.BytesIO(body)
                result = app(environ, start_response)
                for _chunk in result:
                    pass
                close = getattr(result, "close", None)
                if close is not None:
                    close()

        return run


_loop: asyncio.AbstractEventLoop | None = None


def event_loop() -> asyncio.AbstractEventLoop:
    """The one event loop every ASGI app runs on, made on first use."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def make_receive(body: bytes) -> Callable[[], t.Awaitable[Message]]:
    """A server's ``receive``: the whole body in one message, then wait (the client stays
    connected) until cancelled. Never reporting ``http.disconnect`` matters: Quart listens for
    it in a task racing the handler and would cancel the response."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.get_running_loop().create_future()  # cancelled when the app is done
        raise AssertionError("unreachable")

    return receive


async def _discard(message: Message) -> None:
    return None


class AsgiDriver(Driver):
    def ask(self, request: Request) -> Answer:
        start: Message = {}
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if start:
                    raise WrongAnswer("response started twice")
                start.update(message)
            elif message["type"] == "http.response.body":
                if not start:
                    raise WrongAnswer("body sent before the response started")
                chunks.append(message.get("body", b""))
            else:
                raise WrongAnswer(f"unexpected message {message['type']!r}")

        scope = asgi_scope(request)
        event_loop().run_until_complete(self.app(scope, make_receive(request.body), send))
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in start["headers"]]
        return Answer(start["status"], headers, b"".join(chunks))

    def runner(self, request: Request) -> Callable[[int], None]:
        app = self.app
        base = asgi_scope(request)
        body = request.body
        loop = event_loop()

        async def requests(n: int) -> None:
            for _ in range(n):
                await app(base.copy(), make_receive(body), _discard)

        def run(n: int) -> None:
            loop.run_until_complete(requests(n))

        return run

    def profile(self, request: Request, n: int) -> float:
        # Profile inside the coroutine, so the loop's own start and stop are not counted (but
        # the loop's work while a framework waits on it is).
        app = self.app
        base = asgi_scope(request)
        body = request.body
        profiler = cProfile.Profile(builtins=False)

        async def requests() -> None:
            profiler.enable()
            for _ in range(n):
                await app(base.copy(), make_receive(body), _discard)
            profiler.disable()

        gc.collect()
        event_loop().run_until_complete(requests())
        total: int = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
        return total / n


def driver(framework: Framework) -> Driver:
    cls = WsgiDriver if framework.interface == "wsgi" else AsgiDriver
    return cls(framework, framework.load())


# -- checking -----------------------------------------------------------------------------------


def prepare(drv: Driver, scenario: Scenario, times: int = 3) -> Request:
    """The request to time for *scenario*, after checking *times* answers to it."""
    request, _cookie = with_session(scenario, drv.ask)
    for _ in range(times):  # the first request also runs any one-time setup of the app
        scenario.check(drv.ask(request))
    return request


def check_all(
    frameworks: Sequence[Framework], scenarios: Sequence[Scenario] = SCENARIOS
) -> dict[str, dict[str, str]]:
    """Check every framework's answer to every scenario it serves, timing nothing:
    ``{scenario: {framework key: "ok" | "n/a" | "WRONG: why"}}``."""
    names = [scenario.name for scenario in scenarios]
    drivers = [driver(framework) for framework in frameworks]
    report: dict[str, dict[str, str]] = {}
    for scenario in scenarios:
        report[scenario.name] = row = {}
        for drv in drivers:
            if scenario.name not in drv.framework.scenarios(names):
                row[drv.framework.key] = "n/a"
                continue
            try:
                prepare(drv, scenario, times=2)
            except WrongAnswer as exc:
                row[drv.framework.key] = f"WRONG: {exc}"
            else:
                row[drv.framework.key] = "ok"
    return report


# -- timing -------------------------------------------------------------------------------------


def calibrate(run: Callable[[int], None], target: float) -> int:
    """How many back-to-back requests take about *target* seconds."""
    loops = 1
    while True:
        start = time.perf_counter()
        run(loops)
        elapsed = time.perf_counter() - start
        if elapsed >= target:
            return loops
        loops = max(loops * 2, int(loops * target / max(elapsed, 1e-9) * 1.1))


def time_interleaved(
    runs: dict[str, Callable[[int], None]], settings: Settings
) -> dict[str, dict[str, float]]:
    """µs per request for each run: best and median of ``settings.repeats`` timed loops,
    the loops taking turns between the runs."""
    loops = {key: calibrate(run, settings.target) for key, run in runs.items()}
    samples: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(settings.repeats):
        for key, run in runs.items():
            gc.collect()  # start each loop without the previous one's garbage
            start = time.perf_counter()
            run(loops[key])
            samples[key].append((time.perf_counter() - start) / loops[key] * 1e6)
    return {
        key: {"us": min(values), "us_median": statistics.median(values), "loops": loops[key]}
        for key, values in samples.items()
    }


def measure(
    frameworks: Sequence[Framework],
    scenarios: Sequence[Scenario] = SCENARIOS,
    settings: Settings = Settings(),
    progress: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{scenario: {framework key: {"us", "us_median", "loops", "calls"}}}`` for every
    framework and scenario it serves.

    :raises WrongAnswer: when a framework answers a scenario wrongly.
    """
    with pinned(settings.cpu):
        return _measure(frameworks, scenarios, settings, progress)


def _measure(
    frameworks: Sequence[Framework],
    scenarios: Sequence[Scenario],
    settings: Settings,
    progress: Callable[[str], None],
) -> dict[str, dict[str, dict[str, float]]]:
    names = [scenario.name for scenario in scenarios]
    drivers = [driver(framework) for framework in frameworks]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in scenarios:
        runs: dict[str, Callable[[int], None]] = {}
        requests: dict[str, Request] = {}
        served = [d for d in drivers if scenario.name in d.framework.scenarios(names)]
        for drv in served:
            key = drv.framework.key
            try:
                requests[key] = prepare(drv, scenario)
            except WrongAnswer as exc:
                raise WrongAnswer(f"{key} answered {scenario.name!r} wrongly: {exc}") from None
            runs[key] = drv.runner(requests[key])
            runs[key](settings.warmup)
        progress(f"in-process: {scenario.name} ({', '.join(runs)})")
        timings = time_interleaved(runs, settings)
        for drv in served:
            key = drv.framework.key
            timings[key]["calls"] = drv.profile(requests[key], settings.profiled)
        results[scenario.name] = timings
    return results
