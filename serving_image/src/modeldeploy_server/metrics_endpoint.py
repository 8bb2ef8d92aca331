"""The metrics port: one event loop in a thread of the supervisor, serving ``/metrics``.

The same uvicorn protocol and connection limits as the inference port (``http_protocol``),
so a half-open connection costs a few objects, not a thread: the supervisor stays light and
a flood of idle connections cannot starve Prometheus of its scrape. Scrapes run one at a
time in a helper thread (each asks every worker over its pipe).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn

from .http_limits import ConnectionGuard, ConnectionLimits
from .http_protocol import protocol_class
from .logs import LimitWarnings
from .worker import QuietServer

log = logging.getLogger(__name__)

MAX_METRICS_CONNECTIONS = 64
"""Prometheus holds one connection per target; a few more for people and probes."""

Scrape = Callable[[str | None], tuple[bytes, str]]
"""``Accept`` header in, exposition and its content type out."""


def bind_metrics_socket(host: str, port: int) -> socket.socket:
    """The metrics port, bound now (so a taken port fails at start) and listened on later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class MetricsEndpoint:
    """Serves ``scrape`` on ``sock`` until ``stop``."""

    def __init__(
        self,
        sock: socket.socket,
        scrape: Scrape,
        *,
        header_timeout: float,
        keep_alive_timeout: float,
    ) -> None:
        self.sock = sock
        self.scrape = scrape
        self.warnings = LimitWarnings(logging.getLogger("modeldeploy_server.limits"))
        limits = ConnectionLimits(
            max_connections=MAX_METRICS_CONNECTIONS, header_timeout=header_timeout
        )
        self.guard = ConnectionGuard(limits, "metrics", self.warnings)
        self._scraper = ThreadPoolExecutor(1, thread_name_prefix="scrape")
        config = uvicorn.Config(
            self._app,
            http=protocol_class(self.guard),
            interface="asgi3",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_keep_alive=int(max(1, keep_alive_timeout)),
            timeout_graceful_shutdown=1,
        )
        self._server = QuietServer(config)
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)
        self._scraper.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self.sock]))
        except Exception:
            log.exception("the metrics endpoint stopped")

    async def _app(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] not in ("/metrics", "/"):
            await _reply(send, 404, b'{"error":"not found; metrics are at /metrics"}')
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _reply(send, 405, b'{"error":"use GET"}', extra=[(b"allow", b"GET, HEAD")])
            return
        accept = None
        for name, value in scope["headers"]:
            if name == b"accept":
                accept = value.decode("latin-1")
        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(self._scraper, self.scrape, accept)
        await _reply(send, 200, body, content_type.encode("latin-1"))


async def _reply(
    send: Any,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += extra or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
