"""Realtime fan-out, carboy against python-socketio's Redis manager, in one run (issue 21).

Two servers run side by side with the same server program and worker count:

* carboy: ``tests/served_apps/realtime_app.py``, the broadcast's WebSocket helper (Redis
  Streams by default, ``--carboy-backend pubsub`` for its at-most-once backend); the publisher
  is a ``Broadcast`` in this process (``publish``, the sync client);
* socketio: ``tests/served_apps/realtime_socketio_app.py``, python-socketio's own ASGI app with
  ``AsyncRedisManager`` (Redis pub/sub, at most once); the publisher is an external
  ``RedisManager(write_only=True)`` in this process, emitting to the room the clients joined.

The clients connect from this process with the websocket transport only: the same sans-I/O
``websockets`` client (:mod:`realtime_clients`); on the socketio side :class:`SIOClient`
speaks Engine.IO 4 / Socket.IO 5 over it (answers the open packet with ``40``, pings with
``3``, and reads ``42["event",data]``). Each message carries its number and the publisher's
``time.time()``; a client records ``arrival - publish`` for every message, and which numbers
it got. Rounds alternate (carboy, socketio, carboy, ...) on one channel each; the report gives,
per side, the medians over the rounds of p50, p99 and deliveries per second, the clients that
got every message in order, the deliveries missing at the end, and the ratios carboy/socketio::

    python benchmarks/realtime_socketio.py   # 1000 clients, 2 workers, 1000 at 5/s, 3+3 rounds
    python benchmarks/realtime_socketio.py --rate 0   # unpaced: what each side delivers flat out
    python benchmarks/realtime_socketio.py --clients 20 --messages 20 --rounds 1 --json out.json

Needs the machine's Redis at 127.0.0.1:6379 (database 15; carboy's keys use a per-run prefix
and are deleted afterwards; python-socketio's pub/sub channel is per run and stores nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import time
import typing as t
import uuid
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# realtime.py puts tests/ and src/ on the path (for realtime_clients, servers and carboy).
import httpx
import redis
import socketio
from realtime import REDIS_URL, command, measured, worker_cpu

import carboy
from carboy.scale.broadcast import Broadcast
from realtime_clients import FanOut, WSClient, fan_out
from servers import Server, free_port

SIDES = ("carboy", "socketio")


class SIOClient(WSClient):
    """A Socket.IO 5 client over Engine.IO 4's websocket transport, default namespace only.

    What the measurement needs and nothing else: the ``hello`` event (the worker's pid) fills
    :attr:`hello` as ``"hello <pid>"``, and every other event's single string argument goes to
    *on_text*, as a plain WebSocket frame would.
    """

    def text_received(self, text: str, now: float) -> None:
        kind = text[:2]
        if kind == "42":  # Engine.IO message, Socket.IO EVENT: 42["name",data]
            name, data = json.loads(text[2:])
            if name == "hello":
                if not self.hello.done():
                    self.hello.set_result(f"hello {data}")
            elif self.on_text is not None:
                self.on_text(data, now)
            else:
                self.frames.append(data)
        elif text[:1] == "2":  # ping: pong
            self.send_text("3")
        elif text[:1] == "0":  # Engine.IO open: connect to the default namespace
            self.send_text("40")
        elif kind == "44" and not self.hello.done():  # namespace connect refused
            self.hello.set_exception(ConnectionError(text))
        # "40{sid}" (namespace connected) and anything else: nothing to do.


def socketio_path(room: str) -> str:
    return f"/socket.io/?EIO=4&transport=websocket&room={room}"


def wait_subscribed(client: redis.Redis, channel: str, workers: int, timeout: float) -> None:
    """Wait until *workers* processes subscribe to the pub/sub *channel* (python-socketio's
    manager subscribes in the background once its worker has a client)."""
    deadline = time.monotonic() + timeout
    while True:
        subscribed = dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)
        if int(subscribed) >= workers:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{subscribed} of {workers} workers subscribed to {channel}")
        time.sleep(0.05)


async def warm_up(url: str, workers: int, timeout: float = 30.0) -> None:
    """Connect Socket.IO clients, a few at a time, until every worker has had one: each
    worker's manager then subscribes to the channel, and stays subscribed for the run."""
    pids: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Socket.IO clients reached {len(pids)} of {workers} workers")
        conns = await asyncio.gather(*(SIOClient.connect(url) for _ in range(2 * workers)))
        for conn in conns:
            pids.add((await asyncio.wait_for(conn.hello, 20)).split()[1])
            conn.close()


def all_workers(server: Server, workers: int, timeout: float = 30.0) -> None:
    """Ask ``/pid`` on new connections until every worker answered (so that clients spread)."""
    pids: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(pids) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(pids)} of {workers} workers answered")
        pids.add(httpx.get(server.base_url + "/pid", headers={"Connection": "close"}).text)


def compare(args: argparse.Namespace) -> list[dict[str, object]]:
    """Run the rounds; print one JSON line per round; return the rounds' figures."""
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-realtime-{run}:"
    channel = f"bench-socketio-{run}"
    client = redis.Redis.from_url(REDIS_URL)
    publisher_app = carboy.Carboy("publisher")
    publisher_app.config.update(
        REDIS_URL=REDIS_URL,
        BROADCAST_KEY_PREFIX=prefix,
        BROADCAST_KEY_TTL=600,
        BROADCAST_BACKEND=args.carboy_backend,
    )
    broadcast = Broadcast(publisher_app)
    emitter = socketio.RedisManager(REDIS_URL, channel=channel, write_only=True)
    env = {"RT_REDIS_URL": REDIS_URL, "RT_PREFIX": prefix, "RT_BACKEND": args.carboy_backend}
    apps = {"carboy": "realtime_app:app", "socketio": "realtime_socketio_app:app"}
    log_dir = Path(args.log_dir)
    rounds: list[dict[str, object]] = []
    try:
        with ExitStack() as stack:
            servers: dict[str, Server] = {}
            for side in SIDES:
                port = free_port()
                cmd = command(args.server, port, args.workers, apps[side])
                log = log_dir / f"realtime-{side}-{run}.log"
                servers[side] = stack.enter_context(
                    Server(cmd, port, log, {**env, "RT_CHANNEL": channel})
                )
            for server in servers.values():
                server.wait_until_up("/pid")
                all_workers(server, args.workers)
            warm_url = servers["socketio"].ws_url + socketio_path("warm-up")
            asyncio.run(warm_up(warm_url, args.workers))
            wait_subscribed(client, channel, args.workers, 20.0)
            for n in range(args.rounds):
                for side in SIDES:
                    server = servers[side]
                    room = f"bench{n}"
                    if side == "carboy":
                        url = server.ws_url + f"/ws/{room}"
                        publish = functools.partial(broadcast.publish, room)
                        kind: type[WSClient] = WSClient
                    else:
                        url = server.ws_url + socketio_path(room)
                        publish = functools.partial(emitter.emit, "m", room=room, namespace="/")
                        kind = SIOClient
                    cpu = worker_cpu(server)
                    result: FanOut = asyncio.run(
                        asyncio.wait_for(
                            fan_out(
                                url,
                                publish,
                                clients=args.clients,
                                messages=args.messages,
                                rate=args.rate,
                                pad=args.pad,
                                client=kind,
                                drain=args.drain,
                            ),
                            # PERF: a bound on the whole round, not a measurement.
                            timeout=120 + args.drain + args.messages / (args.rate or 100),
                        )
                    )
                    figures = {
                        "round": n + 1,
                        "side": side,
                        "server": args.server,
                        "workers": args.workers,
                        "load_average": round(os.getloadavg()[0], 1),
                        **measured(result, args.rate, worker_cpu(server) - cpu),
                    }
                    rounds.append(figures)
                    print(json.dumps(figures), flush=True)
                    time.sleep(args.pause)
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
        client.close()
    return rounds


def number(value: object) -> float:
    return float(t.cast(float, value))


def summary(rounds: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Per side: the medians over its rounds, and totals of completeness and losses."""
    out: dict[str, dict[str, float]] = {}
    for side in SIDES:
        mine = [r for r in rounds if r["side"] == side]
        if not mine:
            continue
        out[side] = {
            "rounds": len(mine),
            "clients": sum(number(r["clients"]) for r in mine),
            "complete": sum(number(r["complete"]) for r in mine),
            "missing": sum(number(r["missing"]) for r in mine),
            "disordered": sum(number(r["disordered"]) for r in mine),
            **{
                key: statistics.median(number(r[key]) for r in mine)
                for key in ("p50_ms", "p99_ms", "deliveries_per_s", "worker_cpu_s")
            },
        }
    return out


def report(rounds: list[dict[str, object]], backend: str) -> list[str]:
    """The summary lines: one per side, then the ratios carboy/socketio."""
    medians = summary(rounds)
    names = {
        "carboy": f"carboy Broadcast ({backend})",
        "socketio": "python-socketio AsyncRedisManager",
    }
    lines = []
    for side, m in medians.items():
        lines.append(
            f"{side}: {names[side]}: {m['complete']:.0f}/{m['clients']:.0f} clients complete"
            f" and in order over {m['rounds']:.0f} rounds, {m['missing']:.0f} deliveries missing,"
            f" {m['disordered']:.0f} clients out of order; median p50 {m['p50_ms']:.1f} ms,"
            f" p99 {m['p99_ms']:.1f} ms, {m['deliveries_per_s']:.0f} deliveries/s,"
            f" worker CPU {m['worker_cpu_s']:.1f} s"
        )
    if len(medians) == 2:
        c, s = medians["carboy"], medians["socketio"]

        def ratio(key: str) -> str:
            return f"{c[key] / s[key]:.2f}" if s[key] else "n/a"

        lines.append(
            f"carboy/socketio: deliveries/s {ratio('deliveries_per_s')},"
            f" p50 {ratio('p50_ms')}, p99 {ratio('p99_ms')}, worker CPU {ratio('worker_cpu_s')}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=5.0, help="messages a second; 0: unpaced")
    parser.add_argument("--pad", type=int, default=40, help="bytes of filler per message")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side")
    parser.add_argument(
        "--drain", type=float, default=30.0, help="seconds to wait after the last publish"
    )
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between rounds")
    parser.add_argument("--carboy-backend", choices=("streams", "pubsub"), default="streams")
    parser.add_argument("--log-dir", default="/tmp")
    parser.add_argument("--json", help="write the rounds and the summary to this file")
    args = parser.parse_args(argv)
    rounds = compare(args)
    lines = report(rounds, args.carboy_backend)
    for line in lines:
        print(line)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rounds": rounds, "summary": summary(rounds), "report": lines}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
