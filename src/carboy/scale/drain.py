"""Graceful drain of one worker process: readiness off first, serving on, connections closed
last, then the server's own stop.

A drain has three steps, the same whatever starts it:

1. **draining**: :func:`draining` turns true at once, so ``/readyz`` answers 503 and the load
   balancer takes the host out; everything else is served as before;
2. **closing**, after the drain period (``HEALTH_DRAIN_SECONDS``): the open WebSockets that
   :class:`~carboy.scale.health.Health` tracks are closed with code 1012 (service restart),
   :func:`closing` turns true and the streams wrapped by ``Health.stream`` end, so the
   clients reconnect elsewhere;
3. **stopping** (only when the drain began with SIGTERM): the server's own SIGTERM handler
   runs, so the server stops accepting and finishes the requests in flight; if the process
   is still alive ``HEALTH_STOP_SECONDS`` later, it exits with status 1 (a cap, so that no
   server waits forever on a request that never ends).

What starts it:

* **SIGTERM**, when :func:`install_signal_chain` has put carboy's handler in front of the
  server's (done for gunicorn workers, uvicorn and granian's ASGI workers; see
  ``docs/scale/deploying.md``). The handler only sets a flag and writes a byte to a pipe; a
  daemon thread (the *watcher*) does the rest. A second SIGTERM cuts the drain period short.
* :func:`begin`, called by the loopback-only drain endpoint (``POST /drainz``). It also
  writes the host's **drain marker**, a file whose modification time tells every worker of
  the same server (they poll it every ``POLL_SECONDS``, 0.2 s) that the drain began; a marker
  older than a process is ignored by it, so a restarted server does not start drained.

The state is per process (a forked child starts afresh).

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import select
import signal
import sys
import tempfile
import threading
import time
import typing as t
import weakref
from concurrent.futures import TimeoutError as FutureTimeout

if t.TYPE_CHECKING:
    from types import FrameType

    from ..websocket import Websocket

__all__ = [
    "DrainState",
    "begin",
    "closing",
    "closing_event",
    "draining",
    "install_signal_chain",
    "marker_path",
    "reset",
    "state",
]

logger = logging.getLogger("carboy.scale.drain")

#: How often (seconds) the watcher looks for the drain marker.
POLL_SECONDS = 0.2
#: The close code sent to open WebSockets when the drain period ends (RFC 6455 7.4.1 and the
#: IANA registry: 1012, service restart).
CLOSE_CODE = 1012
#: The close reason sent with ``CLOSE_CODE``.
CLOSE_REASON = "service restart"
#: The modules of the server workers' SIGTERM handlers that :func:`install_signal_chain` puts
#: carboy's drain in front of; another handler (such as a server's master process's, which a
#: forked worker inherits until its server sets its own) is left alone unless ``force=True``.
WORKER_HANDLERS = ("gunicorn.workers.", "uvicorn.server", "granian._signals")
#: The signal a request thread sends the main thread to have it chain SIGTERM (ignored by
#: default; nothing else in a Python web worker uses it).
HELPER_SIGNAL = signal.SIGURG
#: How long (seconds) after the app is made carboy watches for a server handler to chain.
HANDLER_WAIT_SECONDS = 30.0


def _process_start() -> float:
    """This process's start, in :func:`time.time` seconds (Linux: from ``/proc``; elsewhere
    the time of the first call)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, counted after the command name
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def marker_path(name: str) -> str:
    """The default drain marker of app *name* in this process: a file under a directory of
    the temporary directory private to this user, named after the parent process (the
    server's master) and the app, so the workers of one server share it.

    :param name: the app's import name.
    :raises OSError: when the directory cannot be made private to this user.
    """
    base = os.path.join(tempfile.gettempdir(), f"carboy-{os.getuid()}")
    os.makedirs(base, mode=0o700, exist_ok=True)
    info = os.stat(base, follow_symlinks=False)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise OSError(f"{base} is not a directory private to this user")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return os.path.join(base, f"drain-{os.getppid()}-{safe}")


class DrainState:
    """The drain of this process; :func:`state` returns it (one per process).

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        #: The drain period, seconds: the largest ``HEALTH_DRAIN_SECONDS`` of this process's
        #: apps.
        self.drain_seconds = 0.0
        #: Seconds the server gets to stop after the drain period, before the process exits.
        self.stop_seconds: float | None = None
        #: The drain markers this process watches and writes.
        self.markers: set[str] = set()
        #: Why the drain began (``"SIGTERM"``, ``"endpoint"``, ...), or ``None``.
        self.reason: str | None = None
        #: :func:`time.monotonic` when the drain began.
        self.started: float | None = None
        self._started_wall = 0.0
        self._process_start = _process_start()
        self._signals = 0
        self._stopping = False
        self._resumed: float | None = None
        self._passthrough = False
        self._chain: tuple[t.Any, ...] | None = None
        self._helper: t.Any = None
        self._asked = False
        self._closing = threading.Event()
        self._aevents: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
            weakref.WeakKeyDictionary()
        )
        self._sockets: weakref.WeakKeyDictionary[Websocket, asyncio.AbstractEventLoop] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # Guards the two registries above (changed on event loops, read by the watcher).
        self._registry = threading.Lock()
        self._written: set[str] = set()
        self._at_exit = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # -- what the app asks ----------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """Whether the drain began (by a signal, :meth:`begin` or another worker's marker)."""
        if self.started is not None or self._signals:
            return True
        return self._check_markers()

    @property
    def closing(self) -> bool:
        """Whether the drain period is over: streams should end, WebSockets are closed."""
        return self._closing.is_set()

    def wait_closing(self, timeout: float | None) -> bool:
        """Block up to *timeout* seconds (``None``: no limit) for the drain period to end.

        :returns: whether it ended.
        """
        return self._closing.wait(timeout)

    def closing_event(self) -> asyncio.Event:
        """An :class:`asyncio.Event` of the running loop, set when the drain period ends.

        :raises RuntimeError: no event loop is running in this thread.
        """
        loop = asyncio.get_running_loop()
        with self._registry:
            event = self._aevents.get(loop)
            if event is None:
                event = self._aevents[loop] = asyncio.Event()
        if self._closing.is_set():
            event.set()
        self.watch()
        return event

    # -- starting it ----------------------------------------------------------------------------

    def configure(
        self, drain_seconds: float, stop_seconds: float | None, marker: str | None
    ) -> None:
        """Take an app's settings: the longest drain and stop periods win.

        :param drain_seconds: the drain period, seconds (``>= 0``).
        :param stop_seconds: the cap after it, seconds, or ``None`` for none.
        :param marker: a drain marker path to watch and write, or ``None``.
        :raises ValueError: for a negative period.
        """
        if drain_seconds < 0 or (stop_seconds is not None and stop_seconds < 0):
            raise ValueError("HEALTH_DRAIN_SECONDS and HEALTH_STOP_SECONDS must be >= 0.")
        with self._lock:
            self.drain_seconds = max(self.drain_seconds, float(drain_seconds))
            if stop_seconds is not None:
                self.stop_seconds = max(self.stop_seconds or 0.0, float(stop_seconds))
            if marker:
                self.markers.add(marker)

    def begin(self, reason: str, *, mark: bool = False) -> bool:
        """Begin the drain now (once; later calls change nothing).

        :param reason: why, for the log and ``/readyz``'s answer.
        :param mark: also write the drain markers, so every worker of the server drains.
        :returns: whether this call began it.
        """
        with self._lock:
            first = self.started is None
            if first:
                self.started = time.monotonic()
                self._started_wall = time.time()
                self.reason = reason
        if first:
            logger.warning(
                "carboy: draining (%s): /readyz answers 503; WebSockets and streams close in"
                " %.1f s",
                reason,
                self.drain_seconds,
            )
        if mark and not self._closing.is_set():
            self._write_markers()
        self.watch()
        self._poke()
        return first

    def _write_markers(self) -> None:
        for path in list(self.markers):
            if path in self._written:
                continue
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
            try:
                os.close(os.open(path, flags, 0o600))
                os.utime(path)
            except OSError as e:
                logger.error("carboy: could not write the drain marker %s: %r", path, e)
                continue
            self._written.add(path)
            if not self._at_exit:
                self._at_exit = True
                atexit.register(self._remove_markers)

    def _remove_markers(self) -> None:
        for path in list(self._written):
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._written.clear()

    def _check_markers(self) -> bool:
        """Whether a drain marker newer than this process exists; begins the drain if so."""
        for path in self.markers:
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if mtime >= self._process_start:
                self.begin("marker")
                return True
        return False

    # -- SIGTERM ------------------------------------------------------------------------------

    def install_signal_chain(self, *, force: bool = False) -> str:
        """Put the drain in front of the server worker's SIGTERM handler in this process.

        Signal handlers can only be set from the main thread, after the server has set its
        own. carboy calls this when the app is made (gunicorn's workers without
        ``--preload`` and uvicorn have their handler by then), at ASGI lifespan startup (on
        the server's loop: granian's handler is there) and on a WSGI worker's first request.
        Called from another thread (a gthread or granian WSGI request thread), it asks the
        main thread to do it, with a ``SIGURG`` (ignored by default, used by nothing else
        here) whose handler carboy set when the app was made, from the main thread.

        :param force: chain a handler that is not one of ``WORKER_HANDLERS`` too.
        :returns: what was done: ``"signal"`` (a :func:`signal.signal` handler chained:
            gunicorn, uvicorn, granian WSGI), ``"event loop"`` (a handler added with
            :meth:`asyncio.loop.add_signal_handler`: granian ASGI), ``"already chained"``,
            ``"asked the main thread"``, or why nothing was.
        """
        if threading.current_thread() is not threading.main_thread():
            if self._helper is None and signal.getsignal(HELPER_SIGNAL) is not _on_helper:
                return "not the main thread"
            self.watch()
            ident = threading.main_thread().ident
            if ident is not None and not self._asked:
                self._asked = True
                signal.pthread_kill(ident, HELPER_SIGNAL)
            return "asked the main thread"
        how = self._chain_now(force=force, in_handler=False)
        if how in ("signal", "event loop"):
            self.watch()
        return how

    def _chain_now(self, *, force: bool, in_handler: bool) -> str:
        """Chain SIGTERM now, on the main thread. With *in_handler* (called by the
        ``HELPER_SIGNAL`` handler, which may interrupt the main thread anywhere, even
        inside this module with a lock held), only :func:`signal.signal` handlers are chained
        and no lock is taken and no thread started."""
        if self._chain_effective():
            return "already chained"
        self._chain = None
        if not in_handler:
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            # asyncio's own registry of loop signal handlers (private, but the only way to
            # find the server's callback; a loop without it, such as uvloop's, is left alone).
            handlers = getattr(loop, "_signal_handlers", None)
            original: t.Any = handlers.get(signal.SIGTERM) if isinstance(handlers, dict) else None
            if loop is not None and original is not None:
                if force or _is_worker_handler(getattr(original, "_callback", None)):
                    loop.add_signal_handler(signal.SIGTERM, self._on_loop_signal)
                    self._chain = ("loop", loop, original)
                    self._disarm_helper()
                    return "event loop"
                return "unknown event loop handler"
        current = signal.getsignal(signal.SIGTERM)
        if callable(current) and (force or _is_worker_handler(current)):
            signal.signal(signal.SIGTERM, self._on_signal)
            self._chain = ("signal", current)
            self._disarm_helper()
            return "signal"
        if not in_handler:
            self._arm_helper()
        return "no server handler yet"

    def _chain_effective(self) -> bool:
        """Whether the chain made earlier is still in place (a server may replace handlers
        after the app is made, as granian does)."""
        chain = self._chain
        if chain is None:
            return False
        if chain[0] == "signal":
            current = signal.getsignal(signal.SIGTERM)
            return getattr(current, "__self__", None) is self
        handlers = getattr(chain[1], "_signal_handlers", None) or {}
        handle = handlers.get(signal.SIGTERM)
        return getattr(getattr(handle, "_callback", None), "__self__", None) is self

    def _arm_helper(self) -> None:
        if self._helper is not None:
            return
        previous = signal.getsignal(HELPER_SIGNAL)
        if previous not in (signal.SIG_DFL, signal.SIG_IGN) and previous is not _on_helper:
            return  # the app uses it: leave it alone
        signal.signal(HELPER_SIGNAL, _on_helper)
        self._helper = previous if previous is not _on_helper else signal.SIG_DFL
        # A server that sets its handler after importing the app (granian) and then blocks
        # its main thread: ask that thread to chain as soon as the handler appears, instead
        # of waiting for the worker's first request.
        threading.Thread(target=self._await_handler, name="carboy-drain-chain", daemon=True).start()
        global _fork_hook
        if not _fork_hook:  # gunicorn --preload: the app is made before its workers fork
            _fork_hook = True
            os.register_at_fork(after_in_child=_after_fork)

    def _await_handler(self) -> None:
        deadline = time.monotonic() + HANDLER_WAIT_SECONDS
        while time.monotonic() < deadline and self._helper is not None:
            if self.pid != os.getpid():
                return  # forked: this thread's process is the parent
            if _is_worker_handler(signal.getsignal(signal.SIGTERM)):
                self.install_signal_chain()  # not the main thread: asks it
                return
            time.sleep(0.05)

    def _disarm_helper(self) -> None:
        if self._helper is not None:
            with contextlib.suppress(ValueError):
                signal.signal(HELPER_SIGNAL, self._helper)
            self._helper = None
        elif signal.getsignal(HELPER_SIGNAL) is _on_helper:  # inherited from a parent process
            signal.signal(HELPER_SIGNAL, signal.SIG_DFL)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler: flags and a pipe write only (a lock here could deadlock with the
        # main thread's own use of it).
        if self._passthrough:
            chain = self._chain
            if chain is not None and chain[0] == "signal":
                chain[1](signum, frame)
            return
        self._signals += 1
        self._poke()

    def _on_loop_signal(self) -> None:
        if self._passthrough:
            chain = self._chain
            if chain is not None and chain[0] == "loop":
                chain[2]._run()  # the server's callback, with its arguments
            return
        self._signals += 1
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    # -- the watcher ----------------------------------------------------------------------------

    def watch(self) -> None:
        """Start the watcher thread of this process, if not yet running."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._watch, name="carboy-drain-watcher", daemon=True
                )
                self._thread = thread  # before start(): whatever runs meanwhile sees it
                thread.start()

    def _watch(self) -> None:
        while True:
            timeout = self._step()
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
            if ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)

    def _step(self) -> float | None:
        """Move the drain on; return how long to sleep before the next step (``None``: until
        woken)."""
        now = time.monotonic()
        if self._signals and not self._stopping:
            self._stopping = True
            self.begin("SIGTERM")
        if self.started is None:
            if self.markers:
                self._check_markers()
            return POLL_SECONDS if self.started is None else 0.0
        if not self._closing.is_set():
            remaining = self.started + self.drain_seconds - now
            if remaining > 0 and self._signals < 2:
                return remaining
            self.close()
        if not self._stopping:
            return None
        if self._resumed is None:
            self._resume()
            self._resumed = time.monotonic()
        if self.stop_seconds is None:
            return None
        left = self._resumed + self.stop_seconds - time.monotonic()
        if left > 0:
            return left
        self._give_up()
        return None

    def close(self) -> None:
        """End the drain period now: close the tracked WebSockets with 1012 and wake what
        waits for :attr:`closing` (also called at ASGI lifespan shutdown and WSGI process exit,
        for servers whose SIGTERM carboy could not chain)."""
        if self._closing.is_set():
            return
        self._closing.set()
        # The other workers have seen the marker by now (they look every POLL_SECONDS); a
        # worker stopped by a signal's default action would not get to remove it at exit.
        self._remove_markers()
        with self._registry:
            events = list(self._aevents.items())
            tracked = list(self._sockets.items())
        for loop, event in events:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        by_loop: dict[asyncio.AbstractEventLoop, list[Websocket]] = {}
        for ws, loop in tracked:
            if not ws.closed:
                by_loop.setdefault(loop, []).append(ws)
        futures = []
        for loop, open_sockets in by_loop.items():
            try:
                futures.append(asyncio.run_coroutine_threadsafe(_close_all(open_sockets), loop))
            except RuntimeError:  # the loop is closed
                continue
        on_loop = _running_loop()
        for future in futures:
            if on_loop is not None:
                break  # called on a loop (lifespan shutdown): the closes run after we return
            with contextlib.suppress(FutureTimeout, Exception):
                future.result(timeout=2.0)
        if by_loop:
            count = sum(map(len, by_loop.values()))
            logger.warning("carboy: drain period over; closed %d WebSocket(s) with 1012", count)

    def _resume(self) -> None:
        """Hand SIGTERM to the server's handler: deliver it again, now passed through."""
        self._passthrough = True
        logger.warning("carboy: drain done; the server stops now")
        os.kill(os.getpid(), signal.SIGTERM)

    def _give_up(self) -> None:
        logger.error(
            "carboy: the server did not stop within HEALTH_STOP_SECONDS (%.1f s) after the"
            " drain; exiting",
            self.stop_seconds or 0.0,
        )
        for handler in logging.getLogger().handlers + logger.handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        sys.stderr.flush()
        os._exit(1)

    # -- WebSockets -----------------------------------------------------------------------------

    def track(self, ws: Websocket) -> None:
        """Close *ws* (on the running loop) with 1012 when the drain period ends.

        :raises RuntimeError: no event loop is running in this thread.
        """
        loop = asyncio.get_running_loop()
        with self._registry:
            self._sockets[ws] = loop
        self.watch()

    @property
    def open_websockets(self) -> int:
        """How many tracked WebSockets are open."""
        with self._registry:
            sockets = list(self._sockets)
        return sum(1 for ws in sockets if not ws.closed)

    def describe(self) -> dict[str, t.Any]:
        """The drain's state as JSON-ready values (for ``/readyz`` and ``/drainz``)."""
        started = self.started
        return {
            "pid": os.getpid(),
            "draining": self.draining,
            "reason": self.reason,
            "drain_seconds": self.drain_seconds,
            "elapsed": None if started is None else round(time.monotonic() - started, 3),
            "closing": self.closing,
        }


async def _close_all(sockets: list[Websocket]) -> None:
    async def close(ws: Websocket) -> None:
        with contextlib.suppress(Exception):
            await ws.close(CLOSE_CODE, CLOSE_REASON)

    await asyncio.gather(*(close(ws) for ws in sockets))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _is_worker_handler(handler: t.Any) -> bool:
    module = getattr(handler, "__module__", None) or ""
    return module.startswith(WORKER_HANDLERS)


def _after_fork() -> None:
    if signal.getsignal(HELPER_SIGNAL) is _on_helper:
        state()._arm_helper()


def _on_helper(signum: int, frame: FrameType | None) -> None:
    """The ``HELPER_SIGNAL`` handler: chain SIGTERM, now on the main thread (no lock
    taken: the handler may run while this thread holds one)."""
    current = _state
    if current is None or current.pid != os.getpid():
        return  # the next request's call makes the state and asks again
    current._asked = False
    current._chain_now(force=False, in_handler=True)


_state: DrainState | None = None
_fork_hook = False
_state_lock = threading.Lock()


def state() -> DrainState:
    """The drain of this process (made on first use, and again in a forked child).

    .. versionadded:: 0.1
    """
    current = _state
    if current is None or current.pid != os.getpid():
        return _new_state()
    return current


def _new_state() -> DrainState:
    global _state
    with _state_lock:
        if _state is None or _state.pid != os.getpid():
            previous = _state
            _state = DrainState()
            if previous is not None:  # a forked child keeps the settings, not the drain
                _state.drain_seconds = previous.drain_seconds
                _state.stop_seconds = previous.stop_seconds
                _state.markers = set(previous.markers)
        return _state


def reset() -> DrainState:
    """Forget this process's drain and settings (removing the markers it wrote) and return a
    fresh state, as in a new process. For tests: a drain cannot be undone otherwise.

    .. versionadded:: 0.1
    """
    global _state
    with _state_lock:
        previous = _state
        _state = DrainState()
    if previous is not None:
        previous._remove_markers()
        if previous._helper is not None:
            _state._helper = previous._helper  # the SIGURG handler stays armed
            previous._helper = None
    return _state


def draining() -> bool:
    """Whether this process is draining (``/readyz`` answers 503).

    .. versionadded:: 0.1
    """
    return state().draining


def closing() -> bool:
    """Whether this process's drain period is over (streams and WebSockets should end).

    .. versionadded:: 0.1
    """
    return state().closing


def closing_event() -> asyncio.Event:
    """An :class:`asyncio.Event` of the running loop, set when the drain period ends.

    :raises RuntimeError: no event loop is running in this thread.

    .. versionadded:: 0.1
    """
    return state().closing_event()


def begin(reason: str = "endpoint", *, mark: bool = False) -> bool:
    """Begin this process's drain (see :meth:`DrainState.begin`).

    .. versionadded:: 0.1
    """
    return state().begin(reason, mark=mark)


def install_signal_chain(*, force: bool = False) -> str:
    """Put the drain in front of the server's SIGTERM handler (see
    :meth:`DrainState.install_signal_chain`).

    .. versionadded:: 0.1
    """
    return state().install_signal_chain(force=force)
