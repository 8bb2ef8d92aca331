"""The limits on the connections of one port, and what those connections share.

Per connection (enforced by ``http_protocol``):

- a head deadline, ``header_timeout`` seconds from accept, or from the first byte of the
  next request on a kept-alive connection: 408 if part of a head came, else a plain close;
- a minimum body rate: from ``BODY_RATE_WINDOW`` seconds after the head on, every
  ``BODY_RATE_WINDOW`` seconds must bring ``min_body_rate`` bytes per second (a drip, or a
  burst then silence, gets 408);
- a head size cap, ``MAX_HEAD_BYTES``: 414 when the URL alone exceeds it, else 431;
- a lingering close (as nginx's ``lingering_close``): an answer sent before the request was
  read in full is followed by a FIN, and what the client still sends is read and dropped for
  a bounded time, so that an ordinary client reads the answer instead of a reset.

Per process and port (``ConnectionGuard``): a cap on open connections (``max_connections``,
lowered to fit the descriptor limit). A connection beyond it evicts the one that has waited
longest for a request head (idle kept-alive or a slow head); with none to evict, it gets 503
and is closed. Every limit hit is counted and logged through ``LimitWarnings``
(rate-limited).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from .logs import LimitWarnings

if TYPE_CHECKING:
    from .http_protocol import GuardedHttpProtocol

MAX_HEAD_BYTES = 64 * 1024
"""Request line plus headers; an inference request needs a few hundred bytes."""
BODY_RATE_WINDOW = 5.0
"""Seconds over which the body rate is measured (and the grace before the first check)."""
LINGER_SECONDS = 10.0
"""Longest a lingering close reads and drops what the client still sends."""
LINGER_IDLE_SECONDS = 2.0
"""A lingering connection is closed once the client has been silent this long."""
LINGER_MAX_BYTES = 256 * 1024 * 1024
REFUSED_LINGER_SECONDS = 1.0
"""A connection refused at accept lingers only briefly: it holds a descriptor."""
RESERVED_FDS = 64
"""Descriptors kept for the process itself (model, pipes, logs, the event loop)."""
LINGER_HEADROOM = 64
"""Refused connections that may linger beyond the cap; beyond that they are reset."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of one port's connections (see the module docstring)."""

    max_connections: int = 2048
    header_timeout: float = 10.0
    min_body_rate: float = 1024.0
    """Bytes per second; 0 disables the check."""


def connection_cap(requested: int, nofile: int | None = None) -> int:
    """``requested``, lowered so that the connections cannot exhaust the descriptor limit
    (``accept`` failing with EMFILE resets connections and logs nothing useful)."""
    if nofile is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        nofile = soft if soft != resource.RLIM_INFINITY else 1 << 20
    return max(16, min(requested, nofile - RESERVED_FDS - LINGER_HEADROOM))


class ConnectionGuard:
    """What the connections of one port share: the limits, who waits for a head, the log."""

    def __init__(self, limits: ConnectionLimits, listener: str, warnings: LimitWarnings) -> None:
        self.limits = limits
        self.listener = listener
        self.cap = connection_cap(limits.max_connections)
        self.warnings = warnings
        # Connections waiting for a request head, oldest first (dicts keep insertion order).
        self._waiting: dict[GuardedHttpProtocol, None] = {}
        self.draining = False
        """Set when the worker drains: every answer then closes its connection, so that
        clients on kept-alive connections reconnect, and reach a pod that stays, while this one
        still answers (a connection closed while idle could cross a client's next request)."""

    def start_waiting(self, protocol: GuardedHttpProtocol) -> None:
        self._waiting.pop(protocol, None)
        self._waiting[protocol] = None

    def stop_waiting(self, protocol: GuardedHttpProtocol) -> None:
        self._waiting.pop(protocol, None)

    def evict_oldest_waiting(self) -> bool:
        """Close the connection that has waited longest for a head; False if there is none."""
        for protocol in self._waiting:
            del self._waiting[protocol]
            protocol.evict()
            return True
        return False

    def hit(self, limit: str, message: str, **fields: Any) -> None:
        self.warnings.hit(limit, message, listener=self.listener, **fields)


def error_response(status: int, message: str, extra: bytes = b"") -> bytes:
    """A complete ``connection: close`` response with a JSON error body."""
    body = orjson.dumps({"error": message})
    return (
        STATUS_LINE[status] + b"content-type: application/json\r\ncontent-length: "
        + str(len(body)).encode() + b"\r\nconnection: close\r\n" + extra + b"\r\n" + body
    )  # fmt: skip
