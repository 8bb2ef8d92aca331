"""Fixtures for the server's unit tests: models on disk and an in-process ASGI client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from modeldeploy_server.dataplane import BatchingOptions, DataPlane, ModelIdentity, ModelSlot
from modeldeploy_server.metrics import WorkerMetrics
from modeldeploy_server.profile import Profile
from modeldeploy_server.quality import QualityOptions
from modeldeploy_server.rest import RestApp
from modeldeploy_server.runtime.onnx import OnnxModel


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class AsgiClient:
    """Calls an ASGI app in-process on one event loop (the batcher keeps a loop)."""

    def __init__(self, app: RestApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        chunks: int = 1,
    ) -> Response:
        return self.loop.run_until_complete(self._call(method, path, body, headers or {}, chunks))

    def post(self, path: str, doc: Any, **kwargs: Any) -> Response:
        return self.request("POST", path, orjson.dumps(doc), **kwargs)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    async def _call(
        self, method: str, path: str, body: bytes, headers: dict[str, str], chunks: int
    ) -> Response:
        size = max(1, -(-len(body) // chunks))
        parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
        messages = [
            {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
            for i, part in enumerate(parts)
        ]
        sent: list[dict[str, Any]] = []
        answered = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await answered.wait()  # as uvicorn: the client stays until it has its answer
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
        }
        await self.app(scope, receive, send)
        start = sent[0]
        assert start["type"] == "http.response.start"
        body_out = b"".join(m.get("body", b"") for m in sent[1:])
        return Response(start["status"], dict(start["headers"]), body_out)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


def make_app(
    loop: asyncio.AbstractEventLoop,
    path: Path,
    name: str = "m",
    *,
    sha256: str | None = None,
    max_request_bytes: int = 1 << 20,
    batching: BatchingOptions | None = None,
    profile: Profile | None = None,
    quality: QualityOptions | None = None,
) -> tuple[AsgiClient, DataPlane, WorkerMetrics]:
    """A loaded model behind the real data plane and HTTP layer, no network."""
    metrics = WorkerMetrics()
    dataplane = DataPlane(ModelSlot(name, None), metrics, batching or BatchingOptions(), quality)
    model = OnnxModel(name, path, sha256=sha256)
    loop.run_until_complete(dataplane.load(model, ModelIdentity(uri=str(path)), profile))
    app = RestApp(dataplane, metrics, max_request_bytes=max_request_bytes)
    return AsgiClient(app, loop), dataplane, metrics
