"""PostgreSQL servers a test starts, stops and restarts itself: a primary and a streaming replica.

Tests that only need a database use the machine's server (:data:`MACHINE_URL`); tests that
route reads to a replica, or stop one, start their own here from the machine's binaries
(``initdb``, ``pg_ctl``, ``pg_basebackup``), on free loopback ports, in a temporary folder that
is removed afterwards. Shared by the tests and the benchmarks.

PostgreSQL refuses to run as root, and tests here run as root: every server command then runs
as the ``postgres`` user (``runuser -u postgres``), which owns the temporary folder.

The replica is made with ``pg_basebackup -R`` (streaming replication, a hot standby) and
waits ``apply_delay`` before it applies each commit (``recovery_min_apply_delay``), so its lag
is real and known: a row committed on the primary is missing on the replica for that long.
Both servers load ``pg_stat_statements`` and log every data-changing statement
(``log_statement = 'mod'``), so a test can count on the server side what ran where.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg
import pytest

from servers import free_port

#: The machine's server (trust authentication), for the tests that do not stop it.
MACHINE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/bin")
_RUN_AS = "postgres"


def _binary(name: str) -> str:
    for folder in _BIN_DIRS:
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package postgresql-15)")
    return found


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", _RUN_AS, "--", *cmd]


def _run(cmd: list[str], timeout: float = 60) -> None:
    proc = subprocess.run(
        _as_server_user(cmd), capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")


def machine_postgres_or_skip() -> None:
    """Skip the test, saying why, if the machine's PostgreSQL does not answer."""
    try:
        psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=2)
    except psycopg.Error as e:
        pytest.skip(f"the machine's PostgreSQL at 127.0.0.1:5432 does not answer: {e}")


class PgServer:
    """One server: its data folder, port and log. Made by :class:`PgPair`."""

    def __init__(self, name: str, data: Path, port: int) -> None:
        self.name = name
        self.data = data
        self.port = port
        self.log = data.parent / f"{name}.log"

    def url(self, driver: str = "postgresql+psycopg", app_name: str | None = None) -> str:
        """The SQLAlchemy URL of database ``postgres`` on this server (user ``postgres``)."""
        url = f"{driver}://postgres@127.0.0.1:{self.port}/postgres"
        return url + (f"?application_name={app_name}" if app_name else "")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """A new autocommit psycopg connection to this server."""
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Run *sql* in autocommit on a new connection; its rows (``[]`` for a command)."""
        with self.connect() as conn:
            cursor = conn.execute(sql, params or None)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description is not None else []

    def start(self) -> None:
        _run([_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``); its clients' connections are cut."""
        if (self.data / "postmaster.pid").exists():
            _run([_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def kill(self) -> None:
        """Kill the postmaster if it still runs (the cleanup of last resort)."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass

    def statement_lines(self) -> list[str]:
        """The statements this server logged (``log_statement = 'mod'``)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        # The simple protocol logs "statement: ...", the extended one (psycopg with parameters)
        # "execute <name>: ...".
        return [line for line in text.splitlines() if "statement: " in line or " execute " in line]


class PgPair:
    """A primary and a streaming hot-standby replica on free 127.0.0.1 ports.

    Use as a context manager: both are stopped, and the folder removed, on exit (even when the
    test failed). :meth:`PgServer.stop` and :meth:`PgServer.start` on :attr:`replica` make an
    outage.

    :param apply_delay: the replica's ``recovery_min_apply_delay`` (a PostgreSQL duration,
        such as ``"300ms"``); ``None`` for none.
    :param max_connections: each server's ``max_connections``.
    """

    def __init__(self, apply_delay: str | None = "300ms", max_connections: int = 100) -> None:
        self.apply_delay = apply_delay
        self.max_connections = max_connections
        self.dir = Path(tempfile.mkdtemp(prefix="carboy-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, _RUN_AS, _RUN_AS)
        self.primary = PgServer("primary", self.dir / "primary", free_port())
        self.replica = PgServer("replica", self.dir / "replica", free_port())

    def _init_primary(self) -> None:
        data = self.primary.data
        _run([_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.primary.port),
            "unix_socket_directories": "''",
            "max_connections": str(self.max_connections),
            "wal_level": "replica",
            "max_wal_senders": "4",
            "hot_standby": "on",
            "hot_standby_feedback": "on",
            "fsync": "off",
            "synchronous_commit": "on",
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
            "log_statement": "'mod'",
            "log_line_prefix": "'%m [%p] %a '",
            "wal_receiver_status_interval": "1s",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _init_replica(self) -> None:
        data = self.replica.data
        _run(
            [
                _binary("pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"),
                *("-D", str(data), "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"),
            ]
        )
        lines = [f"port = {self.replica.port}\n"]
        if self.apply_delay:
            lines.append(f"recovery_min_apply_delay = '{self.apply_delay}'\n")
        with (data / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(lines)

    def start(self) -> None:
        self._init_primary()
        self.primary.start()
        with self.primary.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self._init_replica()
        self.replica.start()
        self.wait_replayed()

    def wait_replayed(self, timeout: float = 30) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        [(target,)] = self.primary.query("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while True:
            try:
                [(done,)] = self.replica.query(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", target
                )
            except psycopg.OperationalError:
                done = False
            if done:
                return
            if time.monotonic() > deadline:
                pytest.fail("the replica did not catch up with the primary")
            time.sleep(0.05)

    def reset_statements(self) -> None:
        """Zero ``pg_stat_statements`` on both servers."""
        for server in (self.primary, self.replica):
            server.query("SELECT pg_stat_statements_reset()")

    def close(self) -> None:
        for server in (self.replica, self.primary):
            try:
                server.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                server.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgPair:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def calls_on(server: PgServer, pattern: str) -> int:
    """How many times statements whose text matches the SQL ``LIKE`` *pattern* ran on
    *server*, from ``pg_stat_statements``."""
    [(calls,)] = server.query(
        "SELECT coalesce(sum(calls), 0)::int FROM pg_stat_statements WHERE query LIKE %s", pattern
    )
    if not isinstance(calls, int):
        raise TypeError(f"expected a count, got {calls!r}")
    return calls
