"""The HTTP/1.1 protocol of both ports: uvicorn's httptools protocol enforcing the limits
that ``http_limits`` describes, closing by lingering, and writing once per response.

uvicorn's own knobs were checked first: ``timeout_keep_alive`` closes idle kept-alive
connections (used); ``limit_concurrency`` answers 503 only once a head is complete, so
connections that never finish one still hold their descriptors;
``h11_max_incomplete_event_size`` caps heads for the (much slower) h11 protocol only; and a
connection is closed with the body still arriving, which the client sees as a reset instead
of the answer. Hence this subclass of ``HttpToolsProtocol``, a private class: pyproject pins
uvicorn's minor version.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .asgi_extensions import DISCONNECT_EXTENSION, ConnectionWatch
from .http_limits import (
    BODY_RATE_WINDOW,
    LINGER_HEADROOM,
    LINGER_IDLE_SECONDS,
    LINGER_MAX_BYTES,
    LINGER_SECONDS,
    MAX_HEAD_BYTES,
    REFUSED_LINGER_SECONDS,
    ConnectionGuard,
    error_response,
)
from .http_transport import CoalescingTransport


def protocol_class(guard: ConnectionGuard) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection of the port ``guard`` guards."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": guard})


class GuardedHttpProtocol(HttpToolsProtocol):
    """One connection: httptools' protocol with the limits of ``guard`` (see the module)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lingering = False
        self._raw: asyncio.Transport | None = None
        self._in_message = False  # between the first byte of a head and the end of its body
        self._in_head = True  # waiting for, or reading, a request head
        self._head_started: float | None = None
        self._head_bytes = 0  # bytes received since the head began (bounds httptools' buffer)
        self._head_timer: TimerHandle | None = None
        self._body_timer: TimerHandle | None = None
        self._body_bytes = 0
        self._body_marks: list[int] = []  # body bytes at each of the last checks
        self._linger_timer: TimerHandle | None = None
        self._linger_until = 0.0
        self._linger_last_data = 0.0
        self._discarded = 0
        self._watch = ConnectionWatch()
        self._extensions = {DISCONNECT_EXTENSION: self._watch}

    # -- connection ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._raw = transport
        self.transport = CoalescingTransport(transport, self.loop, self)  # type: ignore[assignment]
        guard = self.guard
        if len(self.connections) > guard.cap and not guard.evict_oldest_waiting():
            self._refuse_at_accept()
            return
        guard.start_waiting(self)
        self._head_started = self.loop.time()
        self._head_timer = self.loop.call_later(guard.limits.header_timeout, self._head_timed_out)

    def _refuse_at_accept(self) -> None:
        guard = self.guard
        count = len(self.connections)
        guard.hit(
            "connections",
            "connection refused: too many open connections",
            connections=count,
            max_connections=guard.cap,
            client=self._client(),
        )
        assert self._raw is not None
        if count > guard.cap + LINGER_HEADROOM:
            self._raw.abort()  # even lingering would hold too many descriptors
            return
        self._raw.write(
            error_response(
                503,
                f"server busy: {guard.cap} connections are open; retry",
                b"retry-after: 1\r\n",
            )
        )
        self._linger(REFUSED_LINGER_SECONDS)

    def evict(self) -> None:
        """Closed to make room for a new connection (this one waited longest for a head)."""
        self.guard.hit(
            "connections",
            "closed the connection that waited longest for a request head, to admit a new one",
            max_connections=self.guard.cap,
            client=self._client(),
        )
        self._cancel_timers()
        if self._raw is not None:
            self._raw.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.connection_lost()
        self.guard.stop_waiting(self)
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Graceful shutdown: idle connections close now (no lingering), busy ones after
        their response."""
        if self.lingering or self._raw is None:
            return
        if self.cycle is None or self.cycle.response_complete:
            self._cancel_timers()
            self._raw.close()
        else:
            self.cycle.keep_alive = False

    def close_connection(self) -> None:
        """uvicorn closes: at once if the request was read, else with a lingering close."""
        if self.lingering or self._raw is None or self._raw.is_closing():
            return
        if self._in_message:
            self._linger(LINGER_SECONDS)
        else:
            self._raw.close()

    # -- data ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._discard(len(data))
            return
        if self._in_head:
            if self._head_started is None:  # the next request on a kept-alive connection
                self._head_started = self.loop.time()
            self._head_bytes += len(data)
        super().data_received(data)
        if self.lingering or self._raw is None or self._raw.is_closing():
            return
        if self._in_head and self._head_bytes:
            if self._head_bytes > MAX_HEAD_BYTES:  # and httptools still buffers the head
                self._head_too_large()
            elif self._head_timer is None and self._head_started is not None:
                remaining = self.guard.limits.header_timeout - (
                    self.loop.time() - self._head_started
                )
                self._head_timer = self.loop.call_later(max(0.0, remaining), self._head_timed_out)
        elif self._in_message and self._body_timer is None and self.guard.limits.min_body_rate:
            self._body_timer = self.loop.call_later(BODY_RATE_WINDOW, self._check_body_rate)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = self._extensions  # type: ignore[typeddict-item]
        self._in_message = True
        self._in_head = True
        if self._head_started is None:
            self._head_started = self.loop.time()

    def on_headers_complete(self) -> None:
        # The head came within one read: measured exactly only when that read was large.
        too_large = self._head_bytes > MAX_HEAD_BYTES and (
            len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) > MAX_HEAD_BYTES
        )
        self._in_head = False
        self._head_started = None
        self._head_bytes = 0
        self.guard.stop_waiting(self)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if too_large:
            self._head_too_large()
            return
        self._body_bytes = 0
        self._body_marks.clear()
        super().on_headers_complete()
        if self.guard.draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with "Connection: close"

    def on_body(self, body: bytes) -> None:
        if self.lingering:
            return
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.lingering:
            return
        self._in_message = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        answered = self.cycle is not None and self.cycle.response_complete
        super().on_message_complete()
        if answered and not self.pipeline:
            # The answer went out before the body had arrived; now the connection is idle
            # (uvicorn re-arms the keep-alive timeout only when a response completes).
            self._become_idle()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
        if not self._in_message and not self.transport.is_closing():
            self._become_idle()

    def _become_idle(self) -> None:
        self._in_head = True
        self._head_started = None
        self._head_bytes = 0
        self.guard.start_waiting(self)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(error_response(400, f"malformed HTTP request: {msg}"))
        self.transport.close()

    # -- limits ----------------------------------------------------------------------
    def _head_too_large(self) -> None:
        if len(getattr(self, "url", b"")) > MAX_HEAD_BYTES:
            status, what = 414, "the request URL"
        else:
            status, what = 431, "the request head (request line and headers)"
        self.guard.hit(
            "head-size",
            "request head too large",
            status=status,
            max_bytes=MAX_HEAD_BYTES,
            client=self._client(),
        )
        self._answer_and_linger(status, f"{what} exceeds {MAX_HEAD_BYTES} bytes")

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.lingering or self._raw is None or self._raw.is_closing():
            return
        timeout = self.guard.limits.header_timeout
        self.guard.hit(
            "header-timeout",
            "closed a connection whose request head did not arrive in time",
            header_timeout=timeout,
            bytes_received=self._head_bytes,
            client=self._client(),
        )
        self.guard.stop_waiting(self)
        if self._head_bytes == 0:
            self._raw.close()  # nothing was asked: nothing to answer
        else:
            self._answer_and_linger(408, f"the request head did not arrive within {timeout:g} s")

    def _check_body_rate(self) -> None:
        self._body_timer = None
        if not self._in_message or self._in_head or self.lingering:
            return
        if self.flow.read_paused:  # the server is not reading: not the client's fault
            self._body_marks.clear()
        self._body_marks.append(self._body_bytes)
        rate = self.guard.limits.min_body_rate
        if len(self._body_marks) >= 2:
            window = self._body_marks[-1] - self._body_marks[-2]
        else:
            window = self._body_bytes
        if window < rate * BODY_RATE_WINDOW:
            self.guard.hit(
                "body-rate",
                "closed a connection whose request body arrived too slowly",
                min_body_rate=rate,
                bytes_in_window=window,
                window_seconds=BODY_RATE_WINDOW,
                client=self._client(),
            )
            self._answer_and_linger(
                408,
                f"the request body arrived at under {rate:g} bytes/s over {BODY_RATE_WINDOW:g} s",
            )
            return
        del self._body_marks[:-1]
        self._body_timer = self.loop.call_later(BODY_RATE_WINDOW, self._check_body_rate)

    def _answer_and_linger(self, status: int, message: str) -> None:
        """Answer ``status`` (unless an answer is under way), then close by lingering."""
        cycle = self.cycle
        started = False
        if cycle is not None and not cycle.response_complete:
            started = cycle.response_started
            cycle.disconnected = True  # the application stops: its receive() says so
            cycle.message_event.set()
        assert self._raw is not None
        if started:
            self._raw.close()
            return
        self.transport.flush()  # type: ignore[attr-defined]
        self._raw.write(error_response(status, message))
        self._linger(LINGER_SECONDS)

    # -- lingering close -------------------------------------------------------------
    def _linger(self, seconds: float) -> None:
        raw = self._raw
        assert raw is not None
        self.transport.flush()  # type: ignore[attr-defined]
        self._cancel_timers()
        self.guard.stop_waiting(self)
        self.lingering = True
        if raw.is_closing():
            return
        try:
            raw.write_eof()  # FIN after what is written; the client reads the answer
        except (OSError, NotImplementedError, RuntimeError):
            raw.close()
            return
        self.flow.resume_reading()
        now = self.loop.time()
        self._linger_until = now + seconds
        self._linger_last_data = now
        self._linger_timer = self.loop.call_later(
            min(seconds, LINGER_IDLE_SECONDS), self._linger_tick
        )

    def _discard(self, count: int) -> None:
        self._discarded += count
        self._linger_last_data = self.loop.time()
        if self._discarded > LINGER_MAX_BYTES and self._raw is not None:
            self._raw.abort()

    def _linger_tick(self) -> None:
        self._linger_timer = None
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        now = self.loop.time()
        if now >= self._linger_until or now - self._linger_last_data >= LINGER_IDLE_SECONDS:
            raw.close()
            return
        wait = min(self._linger_until - now, self._linger_last_data + LINGER_IDLE_SECONDS - now)
        self._linger_timer = self.loop.call_later(max(0.01, wait), self._linger_tick)

    def _cancel_timers(self) -> None:
        for name in ("_head_timer", "_body_timer"):
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

    def _client(self) -> str | None:
        return f"{self.client[0]}:{self.client[1]}" if self.client else None
