"""Reading request bodies: the size limit, the per-worker bound on body bytes in flight,
and content decoding (gzip, deflate), each failure with its 4xx or 503."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import (
    BadRequest,
    ClientDisconnected,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from .logs import LimitWarnings

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class BodyBudget:
    """Request body bytes one worker holds at once: received and not yet answered.

    Bytes are counted as they arrive, so a client that declares a large body and sends it
    slowly holds only what it sent (and the connection's minimum body rate ends it).
    """

    def __init__(self, limit: int, warnings: LimitWarnings | None = None) -> None:
        self.limit = limit
        self.held = 0
        self.warnings = warnings

    def refuse(self, wanted: int) -> Overloaded:
        if self.warnings is not None:
            self.warnings.hit(
                "inflight-body-bytes",
                "request refused: too many request body bytes in flight",
                held_bytes=self.held,
                wanted_bytes=wanted,
                max_inflight_body_bytes=self.limit,
            )
        return Overloaded(
            f"server busy: {self.held} bytes of request bodies are in flight, the limit is "
            f"{self.limit}; retry"
        )


class BodyClaim:
    """The body bytes one request holds; released when it is answered."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held = 0

    def expect(self, declared: int) -> None:
        """Refuse at once a body that could not fit now (nothing is held)."""
        budget = self.budget
        if budget.held + declared > budget.limit:
            raise budget.refuse(declared)

    def take(self, count: int) -> None:
        budget = self.budget
        if budget.held + count > budget.limit:
            raise budget.refuse(count)
        budget.held += count
        self.held += count

    def release(self) -> None:
        self.budget.held -= self.held
        self.held = 0


async def read_body(
    receive: Receive, headers: dict[bytes, bytes], limit: int, claim: BodyClaim
) -> bytes:
    """The whole body as sent (still encoded), held in ``claim``; 413 beyond ``limit``."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLarge(
                f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes"
            )
        claim.expect(int(declared))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        claim.take(len(chunk))
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_content(body: bytes, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The body after its ``Content-Encoding`` (at most ``limit`` bytes decompressed)."""
    encoding = headers.get(b"content-encoding")
    if encoding is None:
        return body
    encoding = encoding.strip().lower()
    if encoding == b"identity":
        return body
    if encoding == b"gzip":
        decompressor = zlib.decompressobj(wbits=31)
    elif encoding == b"deflate":
        decompressor = zlib.decompressobj(wbits=15)
    else:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; "
            "use gzip, deflate or none"
        )
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding.decode()} data: {exc}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    if not decompressor.eof:
        raise BadRequest(f"body is truncated {encoding.decode()} data")
    return data
