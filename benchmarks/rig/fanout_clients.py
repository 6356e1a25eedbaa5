"""The fan-out scenario's client process: many WebSocket clients and one publisher.

:mod:`benchmarks.rig.fanout` runs it inside the rig's client namespace and cgroup (``ip netns
exec cbrN-client``, as wrk runs), once per hosts count::

    python -m benchmarks.rig.fanout_clients --ws ws://10.213.N.2:80/rig/fanout/ch \\
        --publish http://10.213.N.11:8000/rig/publish/ch --clients 300 --messages 1000 \\
        --rate 100 --out result.json

Client *i* connects to the ``--ws`` URL ``i mod len(--ws)`` (one URL: HAProxy; several: one
per host), at most :data:`CONNECT_BATCH` handshakes at once, and waits for its greeting
(``hello <host>/<pid>``, sent by the server once the subscription is live). Then it starts
the publisher, a process of its own (``python -m benchmarks.rig.fanout_clients publish ...``,
so that the clients' frames do not hold its GIL and slow its pace), which publishes
``<n>:<time.time()>:<filler>`` for n = 0 .. messages-1 at ``--rate`` a second, each a
``POST`` on one keep-alive connection to ``--publish`` (one host), catching up without sleeping
when it falls behind. Each client records what it received; the process waits until every
client has the last message, or at most ``--settle`` seconds after the last publish, and writes
its figures as JSON to ``--out``. Every wait is bounded; the driver also kills the process if
it overruns.

The WebSocket clients are :class:`realtime_clients.WSClient` (``tests/realtime_clients.py``,
the ``websockets`` library's sans-I/O protocol: about a third of the CPU per frame of its
asyncio client), so one process keeps up with tens of thousands of frames a second.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import resource
import sys
import time
import typing as t
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from realtime_clients import WSClient, paced  # noqa: E402

#: Handshakes under way at once.
CONNECT_BATCH = 50


class Publisher:
    """``POST``\\ s each message to one host over one keep-alive connection."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.failures: list[str] = []

    def __call__(self, text: str) -> None:
        for attempt in (1, 2):  # a keep-alive connection the server closed: once more, fresh
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", self.path, body=text.encode(),
                                  headers={"Content-Type": "text/plain"})  # fmt: skip
                response = self.conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    self.failures.append(f"{text.split(':', 1)[0]}: {exc!r}")
                continue
            if response.status != 200:
                self.failures.append(f"{text.split(':', 1)[0]}: HTTP {response.status}")
            return


async def _publish(args: argparse.Namespace) -> dict[str, t.Any]:
    """Run the publisher process; its figures (``started``: ``time.time()`` of the first
    publish, ``seconds``, ``failures``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.rig.fanout_clients", "publish", args.publish,
        str(args.messages), f"{args.rate:g}", str(args.pad), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    bound = 3 * args.messages / args.rate + 30
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), bound)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"the publisher ran past {bound:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"the publisher failed ({proc.returncode})")
    figures: dict[str, t.Any] = json.loads(out)
    return figures


def publish_main(url: str, messages: int, rate: float, pad: int) -> int:
    """The publisher process: prints its figures as JSON."""
    publisher = Publisher(url)
    started = time.time()
    paced(publisher, messages, rate, pad)
    seconds = time.time() - started
    print(json.dumps({"started": started, "seconds": seconds, "failures": publisher.failures}))
    return 0


def _quantile_ms(values: list[float], q: float) -> float:
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2) if values else 0.0


async def run(args: argparse.Namespace) -> dict[str, t.Any]:
    loop = asyncio.get_running_loop()
    count, messages, last = args.clients, args.messages, args.messages - 1
    received: list[list[int]] = [[] for _ in range(count)]
    done = [loop.create_future() for _ in range(count)]
    latencies: list[float] = []
    arrival = [0.0]
    errors: list[str] = []

    def receiver(i: int) -> t.Callable[[str, float], None]:
        got, finished = received[i], done[i]

        def on_text(text: str, now: float) -> None:
            seq, stamp, _ = text.split(":", 2)
            n = int(seq)
            got.append(n)
            latencies.append(now - float(stamp))
            arrival[0] = now
            if n == last and not finished.done():
                finished.set_result(None)

        return on_text

    gate = asyncio.Semaphore(CONNECT_BATCH)

    async def connect(i: int) -> WSClient | None:
        try:
            async with gate:
                client = await WSClient.connect(
                    args.ws[i % len(args.ws)], receiver(i), timeout=args.connect_timeout
                )
            await asyncio.wait_for(client.hello, args.connect_timeout)
            return client
        except Exception as exc:  # reported: the run is not ok
            errors.append(f"client {i}: {exc!r}")
            return None

    started = time.monotonic()
    conns = await asyncio.gather(*(connect(i) for i in range(count)))
    connect_s = time.monotonic() - started
    per_worker: dict[str, int] = {}
    for conn in conns:
        if conn is not None:
            tag = conn.hello.result().split()[-1]
            per_worker[tag] = per_worker.get(tag, 0) + 1
    # where the clients connected from: the client namespace's address, when run there
    sources = sorted(
        {c.transport.get_extra_info("sockname")[0] for c in conns if c and c.transport}
    )
    per_host: dict[str, int] = {}
    for tag, n in per_worker.items():
        host = tag.split("/", 1)[0]
        per_host[host] = per_host.get(host, 0) + n

    try:
        published = await _publish(args)
        waiting = [f for f, c in zip(done, conns, strict=True) if c is not None]
        if waiting:
            # a client that lost the last message is reported, not waited for past the bound
            await asyncio.wait(waiting, timeout=args.settle)
    finally:
        for conn in conns:
            if conn is not None:
                conn.close()
    errors += published["failures"]
    first_publish, publish_s = published["started"], published["seconds"]

    expected = list(range(messages))
    lost = out_of_order = duplicates = complete = 0
    for got in received:
        distinct = set(got)
        lost += messages - len(distinct)
        duplicates += len(got) - len(distinct)
        out_of_order += sum(1 for a, b in itertools.pairwise(got) if b < a)
        complete += got == expected
    latencies.sort()
    span = max(1e-9, arrival[0] - first_publish)
    return {
        "clients": count,
        "connected": sum(c is not None for c in conns),
        "connect_s": round(connect_s, 2),
        "sources": sources,
        "per_host": dict(sorted(per_host.items())),
        "per_worker": dict(sorted(per_worker.items())),
        "messages": messages,
        "rate": args.rate,
        "publish_s": round(publish_s, 2),
        "complete": complete,
        "lost": lost,
        "out_of_order": out_of_order,
        "duplicates": duplicates,
        "deliveries": len(latencies),
        "deliveries_per_s": round(len(latencies) / span),
        "p50_ms": _quantile_ms(latencies, 0.5),
        "p90_ms": _quantile_ms(latencies, 0.9),
        "p99_ms": _quantile_ms(latencies, 0.99),
        "max_ms": _quantile_ms(latencies, 1.0),
        "errors": errors[:20] + ([f"... {len(errors) - 20} more"] if len(errors) > 20 else []),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["publish"]:
        url, messages, rate, pad = argv[1:5]
        return publish_main(url, int(messages), float(rate), int(pad))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ws", action="append", required=True, help="a WebSocket URL")
    parser.add_argument("--publish", required=True, help="the URL messages are POSTed to")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="messages a second")
    parser.add_argument("--pad", type=int, default=40, help="bytes of filler per message")
    parser.add_argument("--connect-timeout", type=float, default=20.0, help="seconds")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds to wait for the last deliveries")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.clients + 100
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
