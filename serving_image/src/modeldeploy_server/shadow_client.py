"""A small HTTP/1.1 client for mirrored copies: POST on kept-alive connections, one deadline.

The server already parses HTTP with httptools; its response parser is all a client needs,
so mirroring adds no dependency (and nothing to the image). Connections to the current
target are kept in a small idle pool and reused; a connection is dropped on any error, on
a timeout (its answer may still come: it must not be read as the next one's), or when the
peer asks to close. A reused connection that the peer had already closed is retried once
on a new one, since nothing was sent to a live server on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import httptools

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class ShadowTransportError(Exception):
    """The copy could not be delivered, or no valid answer came back."""


class ShadowConnectError(ShadowTransportError):
    """No connection to the canary could be opened (refused, unreachable): nothing was sent."""


@dataclass
class ShadowResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class _Parsed:
    """httptools callbacks: collect one response."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        # Only known while the head is parsed: llhttp resets it once the message ends.
        assert self.parser is not None
        self.keep_alive = bool(self.parser.should_keep_alive())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE_BYTES:
            raise ShadowTransportError("response larger than the shadow client accepts")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class ShadowClient:
    """POSTs to one ``host:port``, keeping up to ``max_idle`` connections open."""

    def __init__(self, host: str, port: int, *, max_idle: int = 8) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._authority = (f"[{host}]" if ":" in host else host).encode() + f":{port}".encode()

    async def post(
        self, path: str, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> ShadowResponse:
        """Send one request; ``ShadowTransportError`` or ``TimeoutError`` when it fails."""
        head = self._head(path, headers, len(body))
        async with asyncio.timeout(timeout):
            while self._idle:
                connection = self._idle.pop()
                try:
                    return await self._exchange(connection, head, body, reused=True)
                except _StaleConnection:
                    continue  # the peer closed it while idle: try the next one
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                message = f"cannot connect to {self.host}:{self.port}: {exc}"
                raise ShadowConnectError(message) from None
            return await self._exchange(_Connection(reader, writer), head, body, reused=False)

    def _head(self, path: str, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
        lines = [
            b"POST " + path.encode() + b" HTTP/1.1",
            b"host: " + self._authority,
            b"content-length: " + str(length).encode(),
            *(name + b": " + value for name, value in headers),
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _exchange(
        self, connection: _Connection, head: bytes, body: bytes, *, reused: bool
    ) -> ShadowResponse:
        parsed = _Parsed()
        parser = parsed.parser = httptools.HttpResponseParser(parsed)
        received = False
        try:
            connection.writer.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                connection.writer.write(body)
            await connection.writer.drain()
            while not parsed.complete:
                data = await connection.reader.read(65536)
                if not data:
                    if reused and not received:
                        raise _StaleConnection
                    raise ShadowTransportError("the connection closed before a full response")
                received = True
                parser.feed_data(data)
        except (OSError, httptools.HttpParserError) as exc:
            connection.close()
            if reused and not received and isinstance(exc, OSError):
                raise _StaleConnection from None
            raise ShadowTransportError(f"{type(exc).__name__}: {exc}") from None
        except BaseException:  # a timeout or cancellation mid-exchange: the stream is unusable
            connection.close()
            raise
        if parsed.keep_alive and len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return ShadowResponse(parser.get_status_code(), parsed.headers, b"".join(parsed.chunks))

    def close(self) -> None:
        """Close the idle connections (when the target changes or the server stops)."""
        while self._idle:
            self._idle.pop().close()


class _StaleConnection(Exception):
    """A kept-alive connection the peer had closed: nothing was delivered on it."""
