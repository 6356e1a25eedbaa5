"""Light WebSocket and SSE clients for the realtime tests and benchmark (many in one process).

:class:`WSClient` speaks WebSocket with the ``websockets`` library's sans-I/O client protocol
on a plain :class:`asyncio.Protocol`: a frame costs about 5 µs of the client's CPU instead of
about 16 µs through ``websockets.asyncio.client``, which matters when one process receives
30,000 frames a second on a 2-core machine that also runs the servers. It can stop reading
(:meth:`WSClient.stall`), as a client that hangs would, and the socket's receive buffer can
be made small so that the server feels it at once.

:func:`sse_events` parses a ``text/event-stream`` body from an httpx response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import typing as t
from urllib.parse import urlsplit

import httpx
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri


class WSClient(asyncio.Protocol):
    """One WebSocket client connection.

    :param on_text: called with ``(text, arrival time.time())`` for each text frame after the
        first (the first is kept in :attr:`hello`); ``None`` keeps frames in :attr:`frames`.
    """

    def __init__(self, on_text: t.Callable[[str, float], None] | None = None) -> None:
        self.on_text = on_text
        self.protocol: ClientProtocol | None = None
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.hello: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        #: Text frames received after the hello (when no *on_text*).
        self.frames: list[str] = []
        #: The close code the server sent (``None``: the connection ended without one).
        self.close_code: int | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        on_text: t.Callable[[str, float], None] | None = None,
        *,
        rcvbuf: int | None = None,
        timeout: float = 20.0,
    ) -> WSClient:
        """Connect to *url* (``ws://host:port/path?query``), and wait for the handshake.

        :param rcvbuf: a small ``SO_RCVBUF`` (bytes) for a client that will stall.
        """
        loop = asyncio.get_running_loop()
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (parts.hostname, parts.port)), timeout)
        client = cls(on_text)
        await loop.create_connection(lambda: client, sock=sock)
        client._start(url)
        await asyncio.wait_for(client.opened, timeout)
        return client

    def _start(self, url: str) -> None:
        assert self.transport is not None
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self.transport.write(b"".join(self.protocol.data_to_send()))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        protocol = self.protocol
        assert protocol is not None
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Response):
                if event.status_code == 101 and not self.opened.done():
                    self.opened.set_result(None)
                elif not self.opened.done():
                    self.opened.set_exception(ConnectionError(f"handshake {event.status_code}"))
                continue
            if event.opcode is Opcode.TEXT:
                self.text_received(event.data.decode(), now)
            elif event.opcode is Opcode.CLOSE and self.close_code is None:
                self.close_code = protocol.close_rcvd.code if protocol.close_rcvd else None
        pending = protocol.data_to_send()
        if pending and self.transport is not None:
            self.transport.write(b"".join(pending))

    def text_received(self, text: str, now: float) -> None:
        """One text frame, received at *now* (``time.time()``); a subclass that speaks a
        protocol over WebSocket (:mod:`benchmarks.realtime_socketio`) overrides it."""
        if not self.hello.done():
            self.hello.set_result(text)
        elif self.on_text is not None:
            self.on_text(text, now)
        else:
            self.frames.append(text)

    def send_text(self, text: str) -> None:
        """Queue a text frame; :meth:`data_received` flushes it after the frames it handles."""
        assert self.protocol is not None
        self.protocol.send_text(text.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the handshake"))
        if not self.hello.done():
            self.hello.set_exception(ConnectionError("closed before the hello"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def stall(self) -> None:
        """Stop reading from the socket (the server's writes pile up in the buffers)."""
        assert self.transport is not None
        self.transport.pause_reading()

    def unstall(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self.protocol is not None:
                try:
                    self.protocol.send_close(1000)
                    self.transport.write(b"".join(self.protocol.data_to_send()))
                except Exception:
                    pass
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def sse_events(response: httpx.Response) -> t.AsyncIterator[dict[str, str]]:
    """The events of a ``text/event-stream`` *response*: dicts with ``id``, ``event``,
    ``data`` and ``retry`` keys (those present); a comment-only block yields ``{}``."""
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            yield event
            event = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data" and "data" in event:
            event["data"] += "\n" + value
        else:
            event[name] = value


@dataclasses.dataclass
class FanOut:
    """What :func:`fan_out` measured."""

    clients: int
    messages: int
    #: Clients that received every message, in order, once.
    complete: int
    #: Clients per worker pid (from each connection's hello).
    workers: dict[str, int]
    #: Publisher-to-client latencies of every delivery, in seconds, sorted.
    latencies: list[float]
    #: Seconds from the first publish to the last delivery.
    seconds: float
    #: Client process CPU seconds during the publishing.
    client_cpu: float
    #: Deliveries that had not arrived when the round ended (each message a client lacks).
    missing: int = 0
    #: Clients that got some message after a later one, or one twice.
    disordered: int = 0

    def ms(self, q: float) -> float:
        """The *q* quantile (0..1) of :attr:`latencies`, in milliseconds."""
        values = self.latencies
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else 0.0

    def summary(self) -> str:
        return (
            f"{self.clients} clients on {len(self.workers)} workers"
            f" {sorted(self.workers.values())},"
            f" {self.messages} messages: {self.complete} complete and in order;"
            f" latency p50 {self.ms(0.5):.1f} ms, p90 {self.ms(0.9):.1f} ms,"
            f" p99 {self.ms(0.99):.1f} ms, max {self.ms(1.0):.1f} ms;"
            f" {self.seconds:.1f} s, client CPU {self.client_cpu:.1f} s"
        )


def paced(publish: t.Callable[[str], t.Any], count: int, rate: float, pad: int = 0) -> None:
    """Call ``publish("<n>:<time.time()>:<pad>")`` *count* times, *rate* a second (``0``: as
    fast as *publish* returns)."""
    start = time.perf_counter()
    filler = "x" * pad
    for n in range(count):
        delay = start + n / rate - time.perf_counter() if rate > 0 else 0.0
        if delay > 0:
            time.sleep(delay)
        publish(f"{n}:{time.time():.6f}:{filler}")


async def fan_out(
    ws_url: str,
    publish: t.Callable[[str], t.Any],
    *,
    clients: int,
    messages: int,
    rate: float,
    pad: int = 0,
    on_connected: t.Callable[[], t.Any] | None = None,
    client: type[WSClient] = WSClient,
    drain: float = 30.0,
) -> FanOut:
    """Connect *clients* WebSocket clients to *ws_url* (each must send a ``hello <pid>`` frame
    once subscribed, then forward the channel), publish *messages* timestamped messages at
    *rate* a second from a thread with *publish*, and measure what each client received.

    *client* is the connection class (:class:`WSClient`, or a subclass that speaks a protocol
    over the socket and reports the same hello and messages). The round ends when every
    client has the last message, or *drain* seconds after the last publish."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    received: list[list[int]] = [[] for _ in range(clients)]
    done = [loop.create_future() for _ in range(clients)]
    last = messages - 1

    def receiver(i: int) -> t.Callable[[str, float], None]:
        got = received[i]
        finished = done[i]

        def on_text(text: str, now: float) -> None:
            seq, stamp, _ = text.split(":", 2)
            n = int(seq)
            got.append(n)
            latencies.append(now - float(stamp))
            if n == last and not finished.done():
                finished.set_result(None)

        return on_text

    gate = asyncio.Semaphore(50)

    async def connect(i: int) -> WSClient:
        async with gate:
            return await client.connect(ws_url, receiver(i))

    conns = await asyncio.gather(*(connect(i) for i in range(clients)))
    workers: dict[str, int] = {}
    for conn in conns:
        pid = (await asyncio.wait_for(conn.hello, 20)).split()[1]
        workers[pid] = workers.get(pid, 0) + 1
    if on_connected is not None:
        on_connected()
    cpu = time.process_time()
    started = time.time()
    publisher = loop.run_in_executor(None, paced, publish, messages, rate, pad)
    try:
        await publisher
        # Every client has its last message soon after it was published; a client that lost
        # one is reported (complete < clients) rather than waited for.
        await asyncio.wait(done, timeout=drain)
    finally:
        for conn in conns:
            conn.close()
    seconds = time.time() - started
    expected = list(range(messages))
    wanted = set(expected)
    return FanOut(
        clients=clients,
        messages=messages,
        complete=sum(got == expected for got in received),
        workers=workers,
        latencies=sorted(latencies),
        seconds=seconds,
        client_cpu=time.process_time() - cpu,
        missing=sum(len(wanted - set(got)) for got in received),
        disordered=sum(got != sorted(set(got)) for got in received),
    )
