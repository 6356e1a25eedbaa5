"""The app servers a rig host can run, and their command lines.

=================  ==========  =====================================================================
``--server``       interface   command (plus the app target)
=================  ==========  =====================================================================
``granian``        WSGI        ``granian --interface wsgi --workers W --runtime-threads 1
                               --blocking-threads T --http 1 --no-ws``
``granian-asgi``   ASGI        the same with ``--interface asgi`` (carboy only)
``gunicorn``       WSGI        ``gunicorn --worker-class sync --workers W`` (``gthread --threads T``
                               when T > 1; ``--reuse-port`` with :attr:`ServerSpec.reuse_port`)
``uvicorn``        ASGI        ``uvicorn --interface asgi3 --workers W`` (Flask:
                               ``--interface wsgi``)
=================  ==========  =====================================================================

Each binds ``0.0.0.0:8000`` in its host's namespace, with a backlog of 2048.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.servers import script

PORT = 8000
KINDS = ("granian", "granian-asgi", "gunicorn", "uvicorn")


@dataclass(frozen=True)
class ServerSpec:
    """Which server each host runs, and how."""

    kind: str = "granian"
    workers: int = 1
    #: granian's blocking (Python) threads per worker; gunicorn's threads (gthread worker).
    threads: int = 1
    #: gunicorn ``--reuse-port``: each worker binds its own ``SO_REUSEPORT`` socket.
    reuse_port: bool = False
    #: Idle keep-alive timeout (gunicorn ``--keep-alive``, uvicorn ``--timeout-keep-alive``;
    #: granian has no such setting), seconds.
    keep_alive_s: int = 5
    #: Graceful stop timeout (gunicorn ``--graceful-timeout``, uvicorn
    #: ``--timeout-graceful-shutdown``, granian ``--workers-kill-timeout``), seconds.
    graceful_s: int = 10
    backlog: int = 2048
    extra: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown server {self.kind!r} (known: {', '.join(KINDS)})")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("workers and threads must be 1 or more")

    @property
    def interface(self) -> str:
        return "asgi" if self.kind in ("granian-asgi", "uvicorn") else "wsgi"

    def label(self) -> str:
        text = f"{self.kind}, {self.workers} worker{'s' if self.workers > 1 else ''}"
        if self.threads > 1:
            text += f", {self.threads} threads"
        if self.reuse_port:
            text += ", --reuse-port"
        return text

    def command(self, target: str, framework: str) -> list[str]:
        """The command that serves *target* (``module:attribute``) of *framework*.

        :raises ValueError: for Flask on an ASGI-only server (granian ASGI).
        """
        bind = ["--host", "0.0.0.0", "--port", str(PORT)]
        if self.kind.startswith("granian"):
            if framework == "flask" and self.kind == "granian-asgi":
                raise ValueError("Flask is a WSGI app: serve it with granian, gunicorn or uvicorn")
            return [
                script("granian"), "--interface", self.interface, *bind,
                "--workers", str(self.workers), "--runtime-threads", "1",
                "--blocking-threads", str(self.threads), "--http", "1", "--no-ws",
                "--backlog", str(self.backlog), "--workers-kill-timeout", str(self.graceful_s),
                "--log-level", "warning", *self.extra, target,
            ]  # fmt: skip
        if self.kind == "gunicorn":
            worker = ["--worker-class", "sync"]
            if self.threads > 1:
                worker = ["--worker-class", "gthread", "--threads", str(self.threads)]
            return [
                script("gunicorn"), *worker, "--workers", str(self.workers),
                "--bind", f"0.0.0.0:{PORT}", "--backlog", str(self.backlog),
                "--keep-alive", str(self.keep_alive_s),
                "--graceful-timeout", str(self.graceful_s),
                *(["--reuse-port"] if self.reuse_port else []),
                "--log-level", "warning", *self.extra, target,
            ]  # fmt: skip
        interface = "asgi3" if framework == "carboy" else "wsgi"
        return [
            script("uvicorn"), "--interface", interface, *bind, "--workers", str(self.workers),
            "--backlog", str(self.backlog), "--timeout-keep-alive", str(self.keep_alive_s),
            "--timeout-graceful-shutdown", str(self.graceful_s),
            "--lifespan", "on" if interface == "asgi3" else "off",
            "--no-access-log", "--log-level", "warning", *self.extra, target,
        ]  # fmt: skip
