"""The rolling-restart proof of issue 20: one host of a rig stopped with SIGTERM under load.

Every host serves ``carboy_hello`` with carboy's ``Health`` (``RIG_HEALTH`` =
:func:`benchmarks.rig.app.rolling_health`): drain period :data:`DRAIN_S`, stop period
:data:`STOP_S`. wrk loads HAProxy from the client namespace with a few connections; a few
2-second requests (``/rig/slow``) and, on ASGI servers, :data:`WEBSOCKETS` WebSocket clients go
straight to the stopped host; then that host's server gets SIGTERM. What a restart must show:
wrk saw no non-2xx answer and no socket error, every 2-second request answered 200, every
WebSocket was closed with 1012, HAProxy took the host out (``DOWN``) before it stopped, and the
server exited within the drain period + 2 s. The host is then started again and HAProxy sees
it up.

HAProxy's checks (:class:`benchmarks.rig.haproxy.Checks`): ``inter 250ms fastinter 100ms fall
2`` with ``timeout check 1s``, so the host is out within about 0.25 + 0.1 + 1 s of ``/readyz``
turning 503; :data:`DRAIN_S` leaves a margin over that, as docs/scale/deploying.md asks.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import http.client
import signal
import threading
import time
from dataclasses import asdict, dataclass, field

from benchmarks import wrk
from benchmarks.scenarios import Request

from . import app as rig_app
from . import haproxy
from .rig import Measurement, Rig, RigConfig
from .servers import PORT, ServerSpec

DRAIN_S = 2.5
#: Longer than the bound the exit is held to (drain + 2 s), so a forced exit would miss it.
STOP_S = 5.0
EXIT_BOUND_S = DRAIN_S + 2.0
SERVERS = ("gunicorn", "uvicorn", "granian")
#: WebSocket clients held open on the stopped host (ASGI servers only; issue 20 asks for 100)
#: and the close code each must get (1012, service restart).
WEBSOCKETS = 100
WS_CLOSE = 1012
#: Handshakes under way at once while the clients connect: batches, so that 100 clients are
#: open in well under a second without a burst of 100 SYNs at a 0.4-CPU host.
WS_CONNECT_BATCH = 25
STOPPED = "h2"


@dataclass
class RollingResult:
    """What one rolling restart measured (times in seconds from the SIGTERM)."""

    server: str
    hosts: int
    load: wrk.Load
    #: 2xx answers HAProxy had from each host during the load.
    served: dict[str, int]
    #: The 2-second requests' statuses (``-1``: the connection failed).
    slow_statuses: list[int]
    #: When HAProxy first reported the stopped host ``DOWN`` (``None``: never, before the exit).
    down_after: float | None
    #: When the stopped host's server exited (``None``: not within the bound + 10 s).
    exited_after: float | None
    exit_status: int | None
    #: HAProxy saw the host up again after the restart, and it answered there.
    restarted: bool
    errors: list[str] = field(default_factory=list)
    #: Close codes the WebSocket clients on the stopped host got (ASGI servers; ``None``: the
    #: connection ended without a close frame).
    ws_closes: list[int | None] = field(default_factory=list)
    #: WebSocket clients connected to the stopped host before the SIGTERM.
    ws_expected: int = 0
    #: Seconds the WebSocket clients took to connect and get their greetings.
    ws_connect_s: float | None = None

    @property
    def ok(self) -> bool:
        return (
            self.load.non_2xx == 0
            and self.load.socket_errors == 0
            and self.load.requests > 0
            and self.slow_statuses
            and all(s == 200 for s in self.slow_statuses)
            and self.down_after is not None
            and self.exited_after is not None
            and self.down_after < self.exited_after < EXIT_BOUND_S
            and self.restarted
            and len(self.ws_closes) == self.ws_expected
            and all(code == WS_CLOSE for code in self.ws_closes)
        ) is True

    def line(self) -> str:
        down = "never" if self.down_after is None else f"{self.down_after:.2f} s"
        exited = "no" if self.exited_after is None else f"{self.exited_after:.2f} s"
        return (
            f"{self.server:9} {self.hosts} hosts: {self.load.requests} requests "
            f"({self.load.rps:.0f}/s), non-2xx {self.load.non_2xx}, socket errors "
            f"{self.load.socket_errors}; 2 s requests {self.slow_statuses}; {STOPPED} DOWN at "
            f"{down}, exited at {exited} (status {self.exit_status}); per host {self.served}"
            + (f"; WebSockets {self.ws_summary()}" if self.ws_expected else "")
            + f"; restarted {'up' if self.restarted else 'NOT up'} -> {'ok' if self.ok else 'FAIL'}"
        )

    def ws_summary(self) -> str:
        """``100/100 closed 1012`` (and the other close codes, when any; a client that failed
        otherwise is in :attr:`errors`)."""
        codes = collections.Counter(self.ws_closes)
        text = f"{codes.pop(WS_CLOSE, 0)}/{self.ws_expected} closed {WS_CLOSE}"
        text += "".join(f", {n} {code or 'without a close frame'}" for code, n in codes.items())
        if self.ws_connect_s is not None:
            text += f" (all connected in {self.ws_connect_s:.2f} s)"
        return text

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def config(kind: str, hosts: int = 3, cpus: float | None = 0.4) -> RigConfig:
    """A rig of *hosts* serving the app with ``Health`` on *kind* (4 threads each, so the
    2-second requests leave room for the load)."""
    return RigConfig(
        hosts=hosts,
        app="carboy_hello",
        server=ServerSpec(
            kind,
            workers=1,
            # granian ASGI allows one blocking thread; carboy runs sync views on its own pool
            threads=1 if kind == "granian-asgi" else 4,
            graceful_s=int(DRAIN_S + STOP_S) + 3,
            # the rig's granian runs --no-ws; the last of the two flags wins
            extra=("--ws",) if kind == "granian-asgi" else (),
        ),
        cpus=cpus,
        redis=False,
        health="benchmarks.rig.app:rolling_health",
        env=((rig_app.ENV_DRAIN, str(DRAIN_S)), (rig_app.ENV_STOP, str(STOP_S))),
    )


def _slow(rig: Rig) -> int:
    try:
        answer = rig.ask("/rig/slow", host=STOPPED, timeout=15)
    except (OSError, http.client.HTTPException):
        return -1
    return answer.status if answer.body == b"slow" else -2


class _Sockets:
    """*count* WebSocket clients on their own thread and loop, each waiting for its close;
    at most *batch* handshakes are under way at once."""

    def __init__(self, url: str, count: int, batch: int = WS_CONNECT_BATCH) -> None:
        self.url, self.count, self.batch = url, count, batch
        self.ready = threading.Event()
        self.closes: list[int | None] = []
        self.errors: list[str] = []
        #: Seconds from the first connect to the last client's greeting.
        self.connect_seconds: float | None = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.thread.start()

    async def _main(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        opened = 0
        gate = asyncio.Semaphore(self.batch)
        started = time.monotonic()

        async def client() -> None:
            nonlocal opened
            try:
                async with gate:
                    ws = await connect(self.url, open_timeout=10, close_timeout=5)
                async with ws:
                    await asyncio.wait_for(ws.recv(), 10)  # the greeting: it is served
                    opened += 1
                    if opened == self.count:
                        self.connect_seconds = time.monotonic() - started
                        self.ready.set()
                    while True:
                        await asyncio.wait_for(ws.recv(), 30)
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
            except BaseException as exc:  # reported by the result
                self.errors.append(f"WebSocket: {exc!r}")
                self.ready.set()

        await asyncio.gather(*(client() for _ in range(self.count)))


def restart_one(
    rig: Rig,
    load_seconds: float = 7.0,
    lead_s: float = 1.5,
    connections: int = 4,
    slow: int = 3,
    websockets: int = 0,
) -> RollingResult:
    """Load *rig*, stop :data:`STOPPED` with SIGTERM *lead_s* into the load, start it again."""
    host = rig.host(STOPPED)
    proc = host.process
    assert proc is not None
    measured: list[Measurement] = []
    failed: list[BaseException] = []

    def load() -> None:
        try:
            measured.append(rig.load(Request("GET", "/"), load_seconds, connections=connections))
        except BaseException as exc:  # reported below, after the restart
            failed.append(exc)

    sockets = _Sockets(f"ws://{host.address}:{PORT}/rig/ws", websockets) if websockets else None
    if sockets is not None and not sockets.ready.wait(20):
        raise RuntimeError(f"the WebSocket clients did not connect: {sockets.errors}")
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    with concurrent.futures.ThreadPoolExecutor(slow) as pool:
        time.sleep(max(0.0, lead_s - 0.5))
        slow_futures = [pool.submit(_slow, rig) for _ in range(slow)]
        time.sleep(0.5)  # the 2-second requests are under way
        sigterm = time.monotonic()
        rig.signal_host(STOPPED, signal.SIGTERM)
        down_after = exited_after = None
        while time.monotonic() < sigterm + EXIT_BOUND_S + 10:
            now = time.monotonic() - sigterm
            if down_after is None:
                stats = haproxy.stats(rig.stats_socket).get(STOPPED)
                if stats is not None and not stats.up:
                    down_after = now
            if proc.poll() is not None:
                exited_after = now
                break
            time.sleep(0.02)
        slow_statuses = [f.result() for f in slow_futures]
    loader.join(load_seconds + 40)
    errors = [repr(e) for e in failed]
    if sockets is not None:
        sockets.thread.join(10)
        errors += sockets.errors
    restarted = False
    if proc.poll() is None:
        errors.append(f"{STOPPED} still running; killed")
        proc.kill()
        proc.wait(10)
    try:
        rig.restart_host(STOPPED)
        rig.wait_servers_up([STOPPED])
        restarted = rig.ask("/readyz", host=STOPPED).status == 200
    except RuntimeError as exc:
        errors.append(str(exc))
    if not measured:
        raise RuntimeError(f"the load failed: {errors}")
    m = measured[0]
    return RollingResult(
        server=rig.config.server.kind,
        hosts=rig.config.hosts,
        load=m.load,
        served=m.served,
        slow_statuses=slow_statuses,
        down_after=down_after,
        exited_after=exited_after,
        exit_status=proc.returncode,
        restarted=restarted,
        errors=errors,
        ws_closes=list(sockets.closes) if sockets is not None else [],
        ws_expected=websockets,
        ws_connect_s=sockets.connect_seconds if sockets is not None else None,
    )


def run(kind: str, hosts: int = 3, cpus: float | None = 0.4) -> RollingResult:
    """One rig of *hosts* on *kind*, one rolling restart of its second host (with
    :data:`WEBSOCKETS` clients on it when *kind* is an ASGI server); torn down after."""
    with Rig(config(kind, hosts, cpus)) as rig:
        asgi = rig.config.server.interface == "asgi"
        return restart_one(rig, websockets=WEBSOCKETS if asgi else 0)
