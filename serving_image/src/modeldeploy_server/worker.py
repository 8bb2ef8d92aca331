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
from collections.abc import Callable, Generator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class _CoalescingTransport:
    """A transport whose writes leave together: one send() per response, not two.

    uvicorn writes a response's head and body separately; each write is a system call.
    Writes are held until the response completes (the protocol flushes then) and, as a
    fallback for anything else (100-continue), until the next turn of the loop.
    """

    __slots__ = ("_buffer", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._buffer:
            data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class ServerHttpProtocol(HttpToolsProtocol):
    """httptools' protocol with one write per response, and JSON bodies even for requests
    it cannot parse."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps({"error": f"malformed HTTP request: {msg}"})
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()


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


class _Server(uvicorn.Server):
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


@dataclass(frozen=True)
class WorkerOptions:
    """Socket and shutdown options of a worker."""

    host: str
    port: int
    drain_delay: float
    graceful_timeout: float
    keep_alive_timeout: float
    access_log: bool


def run_worker(
    options: WorkerOptions, control: Connection, make: Callable[[], WorkerCallbacks]
) -> int:
    """Run until SIGTERM/SIGINT or the supervisor disappears; returns the exit code."""
    import uvloop

    return uvloop.run(_serve(options, control, make))


async def _serve(
    options: WorkerOptions, control: Connection, make: Callable[[], WorkerCallbacks]
) -> int:
    loop = asyncio.get_running_loop()
    callbacks = make()
    config = uvicorn.Config(
        callbacks.app,
        http=ServerHttpProtocol,
        lifespan="off",
        access_log=options.access_log,
        log_config=None,
        server_header=False,
        timeout_keep_alive=int(max(1, options.keep_alive_timeout)),
        timeout_graceful_shutdown=int(max(1, round(options.graceful_timeout))),
        backlog=2048,
    )
    server = _Server(config)
    stopping = False

    def stop(reason: str) -> None:
        nonlocal stopping
        if stopping:
            server.force_exit = reason == "SIGINT"
            return
        stopping = True
        callbacks.drain()
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
    try:
        sock = listen_socket(options.host, options.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", options.host, options.port, exc)
        return 1
    callbacks.start()
    try:
        await server.serve(sockets=[sock])
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(control.fileno())
        callbacks.close()
    log.info("worker stopped")
    return 0
