"""One worker process: uvicorn (httptools, uvloop) on a SO_REUSEPORT socket.

The worker knows nothing of models: ``server`` wires the app and passes callbacks. It
answers control messages from the supervisor over a pipe, and on SIGTERM it turns
readiness false at once, keeps serving for ``drain_delay`` seconds (endpoints take a
moment to drop the pod), then stops accepting and lets in-flight requests finish within
``graceful_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import uvicorn

from .http_limits import ConnectionGuard, ConnectionLimits
from .http_protocol import protocol_class
from .logs import LimitWarnings

log = logging.getLogger(__name__)


def listen_socket(host: str, port: int, *, exclusive_check: bool = False) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT, so every worker can bind the same port.

    With ``exclusive_check`` the port is first bound without SO_REUSEPORT: that fails when
    any other process (another server too) holds it, where SO_REUSEPORT alone would
    silently share the port, and its traffic, with it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if exclusive_check:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the worker installs its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class WorkerCallbacks:
    """What the wiring gives the worker."""

    app: Any
    start: Callable[[], None]
    """Called once the loop runs (e.g. to start loading)."""
    control: Callable[[Any], Any]
    """Handles one supervisor message; a non-None result is sent back."""
    drain: Callable[[], None]
    """Readiness turns false."""
    close: Callable[[], None]
    """After the server stopped: release the model."""
    loaded: Callable[[], Awaitable[bool]]
    """Waits until the model is loaded (True) or failed to load (False)."""
    warnings: LimitWarnings
    """Where connection limits are counted and logged (the app's own limits go there too)."""


@dataclass(frozen=True)
class WorkerOptions:
    """Socket and shutdown options of a worker."""

    host: str
    port: int
    drain_delay: float
    graceful_timeout: float
    keep_alive_timeout: float
    access_log: bool
    limits: ConnectionLimits
    heartbeat_interval: float = 1.0
    listen_once_loaded: bool = False
    """Bind the port only once the model is loaded (a replacement for a dead worker)."""


def run_worker(
    options: WorkerOptions,
    control: Connection,
    heartbeat: Any,
    make: Callable[[], WorkerCallbacks],
) -> int:
    """Run until SIGTERM/SIGINT or the supervisor disappears; returns the exit code.

    ``heartbeat`` is a shared double the event loop sets to ``time.monotonic()`` every
    ``heartbeat_interval`` seconds: the supervisor replaces a worker whose loop stops.
    """
    import uvloop

    return uvloop.run(_serve(options, control, heartbeat, make))


async def _serve(
    options: WorkerOptions,
    control: Connection,
    heartbeat: Any,
    make: Callable[[], WorkerCallbacks],
) -> int:
    loop = asyncio.get_running_loop()
    callbacks = make()

    def beat() -> None:
        heartbeat.value = time.monotonic()
        loop.call_later(options.heartbeat_interval, beat)

    beat()
    guard = ConnectionGuard(options.limits, "http", callbacks.warnings)
    if guard.cap < options.limits.max_connections:
        log.warning(
            "connection cap lowered to fit the open-file limit",
            extra={"fields": {"max_connections": guard.cap}},
        )
    config = uvicorn.Config(
        callbacks.app,
        http=protocol_class(guard),
        lifespan="off",
        access_log=options.access_log,
        log_config=None,
        server_header=False,
        timeout_keep_alive=int(max(1, options.keep_alive_timeout)),
        timeout_graceful_shutdown=int(max(1, round(options.graceful_timeout))),
        backlog=2048,
    )
    server = QuietServer(config)
    stopping = False

    def stop(reason: str) -> None:
        nonlocal stopping
        if stopping:
            server.force_exit = reason == "SIGINT"
            return
        stopping = True
        callbacks.drain()
        guard.draining = True
        log.info(
            "draining",
            extra={"fields": {"reason": reason, "drain_delay": options.drain_delay}},
        )
        loop.call_later(options.drain_delay, setattr, server, "should_exit", True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, signal.Signals(sig).name)

    def on_control() -> None:
        try:
            while control.poll():
                reply = callbacks.control(control.recv())
                if reply is not None:
                    control.send(reply)
        except (EOFError, OSError):
            loop.remove_reader(control.fileno())
            stop("supervisor gone")

    loop.add_reader(control.fileno(), on_control)
    callbacks.start()
    if options.listen_once_loaded:
        # A replacement: the other workers serve meanwhile; a connection the kernel gave
        # this one while it loads would only get 503.
        waiting = asyncio.ensure_future(callbacks.loaded())
        while not waiting.done() and not stopping:
            await asyncio.wait({waiting}, timeout=0.1)
        if stopping:
            waiting.cancel()
            callbacks.close()
            return 0
        if not waiting.result():
            log.error("the model did not load in this replacement worker; exiting")
            callbacks.close()
            return 1
    try:
        sock = listen_socket(options.host, options.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", options.host, options.port, exc)
        return 1
    try:
        await server.serve(sockets=[sock])
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(control.fileno())
        callbacks.close()
    log.info("worker stopped")
    return 0
