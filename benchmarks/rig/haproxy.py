"""HAProxy for the rig: its configuration, and its runtime API (stats, server states).

One frontend on port 80 of the balancer's namespace, one backend ``app`` balancing round-robin
over the hosts, each health-checked with ``option httpchk GET <path>`` every
:attr:`Checks.inter_ms`. WebSockets go through as HTTP/1.1 upgrades (HAProxy's ``mode http``
handles them), held by ``timeout tunnel`` (:attr:`Timeouts.tunnel_s`). The stats and the
runtime commands go through a Unix socket in the run's directory, which the driver reaches from
the root namespace (a path, not an address).
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BACKEND = "app"
PORT = 80


def binary() -> str | None:
    """The ``haproxy`` executable (Debian puts it in ``/usr/sbin``), or ``None``."""
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class Checks:
    """Health-check settings (HAProxy's ``default-server`` parameters)."""

    path: str = "/readyz"
    #: Interval between checks of a server that is up, ms.
    inter_ms: int = 250
    #: Interval while a server is changing state (going down or up), ms.
    fastinter_ms: int = 100
    #: Interval while a server is down, ms.
    downinter_ms: int = 250
    #: Consecutive failures that mark a server down, and successes that mark it up.
    fall: int = 2
    rise: int = 1


@dataclass(frozen=True)
class Timeouts:
    """Client, server and connect timeouts, and how long idle keep-alive connections wait."""

    connect_ms: int = 2000
    client_s: int = 30
    server_s: int = 30
    #: The client side's idle keep-alive timeout.
    keep_alive_s: int = 10
    #: How long idle connections to the servers stay in HAProxy's pool (``pool-purge-delay``).
    #: Keep it under each server's own keep-alive timeout, or HAProxy may reuse a connection
    #: the server is closing (docs/scale/deploying-rig.md).
    pool_purge_ms: int = 1000
    #: How long an upgraded (WebSocket) connection may stay silent both ways; once a
    #: connection is a tunnel, this replaces ``timeout client`` and ``timeout server``.
    tunnel_s: int = 3600


def config(
    listen: str,
    servers: Sequence[tuple[str, str]],
    stats_socket: Path,
    checks: Checks = Checks(),
    timeouts: Timeouts = Timeouts(),
    threads: int = 1,
    maxconn: int = 8000,
    balance: str = "roundrobin",
    server_maxconn: int | None = None,
) -> str:
    """An ``haproxy.cfg`` balancing *listen*:80 over *servers* (name, ``ip:port``) with the
    algorithm *balance* (``roundrobin``, ``leastconn``...); with *server_maxconn*, at most that
    many connections to each server (HAProxy queues the other requests)."""
    lines = [
        "global",
        f"    nbthread {threads}",
        f"    maxconn {maxconn}",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    stats timeout 30s",
        "",
        "defaults",
        "    mode http",
        "    option http-keep-alive",
        f"    timeout connect {timeouts.connect_ms}ms",
        f"    timeout client {timeouts.client_s}s",
        f"    timeout server {timeouts.server_s}s",
        f"    timeout http-keep-alive {timeouts.keep_alive_s}s",
        "    # WebSockets: an upgraded connection that is quiet for timeout client/server is",
        "    # not dead (the fan-out's clients only read); this bounds them instead",
        f"    timeout tunnel {timeouts.tunnel_s}s",
        "    timeout check 1s",
        "    # a request whose connection to a server failed goes to another server",
        "    retries 2",
        "    option redispatch",
        "",
        "frontend web",
        f"    bind {listen}:{PORT}",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        f"    balance {balance}",
        # HTTP/1.1 with a Host header: granian answers an HTTP/1.0 check without one with 400
        f"    option httpchk GET {checks.path} HTTP/1.1",
        "    http-check send hdr Host rig",
        "    http-check expect status 200",
        "    http-reuse safe",
        f"    default-server inter {checks.inter_ms}ms fastinter {checks.fastinter_ms}ms "
        f"downinter {checks.downinter_ms}ms fall {checks.fall} rise {checks.rise} "
        f"pool-purge-delay {timeouts.pool_purge_ms}ms",
    ]
    limit = f" maxconn {server_maxconn}" if server_maxconn else ""
    lines += [f"    server {name} {address} check{limit}" for name, address in servers]
    return "\n".join(lines) + "\n"


def ask(socket_path: Path, line: str) -> str:
    """Send the runtime API command *line* over the stats socket; returns HAProxy's answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


@dataclass(frozen=True)
class ServerStats:
    """One backend server's row of ``show stat``."""

    name: str
    #: ``UP``, ``DOWN``, ``MAINT``, ``UP 1/2``...
    status: str
    #: Responses by status class, cumulative.
    responses_2xx: int
    responses_other: int
    #: Cumulative connections/requests balanced to it (``stot``).
    sessions: int

    @property
    def up(self) -> bool:
        return self.status.startswith("UP")


def parse_stats(text: str, backend: str = BACKEND) -> dict[str, ServerStats]:
    """The servers of *backend* in a ``show stat`` CSV answer."""
    reader = csv.DictReader(io.StringIO(text.lstrip("# ")))
    out = {}
    for row in reader:
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND", None):
            continue

        def num(key: str, row: dict[str, str] = row) -> int:
            value = row.get(key) or "0"
            return int(value) if value.isdigit() else 0

        other = sum(num(k) for k in ("hrsp_1xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"))
        out[row["svname"]] = ServerStats(
            row["svname"], row.get("status", ""), num("hrsp_2xx"), other, num("stot")
        )
    return out


def stats(socket_path: Path) -> dict[str, ServerStats]:
    return parse_stats(ask(socket_path, "show stat"))


def set_state(socket_path: Path, server: str, state: str) -> None:
    """Put *server* in *state* (``ready``, ``drain`` or ``maint``) at runtime."""
    answer = ask(socket_path, f"set server {BACKEND}/{server} state {state}")
    if answer.strip():
        raise RuntimeError(f"haproxy: set server {server} state {state}: {answer.strip()}")
