"""The transport our HTTP protocol writes through: one send() per response."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class Closer(Protocol):
    """What the transport asks of the protocol when uvicorn closes the connection."""

    lingering: bool

    def close_connection(self) -> None: ...


class CoalescingTransport:
    """A transport whose writes leave together: one send() per response, not two.

    uvicorn writes a response's head and body separately; each write is a system call.
    Writes are held until the response completes (the protocol flushes then) and, as a
    fallback for anything else (100-continue), until the next turn of the loop. ``close``
    goes through the protocol, which may linger instead.
    """

    __slots__ = ("_buffer", "_loop", "_protocol", "_scheduled", "_transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        protocol: Closer,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._protocol = protocol
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
        self._protocol.close_connection()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
