"""The HTTP layer: a raw ASGI app mapping paths to data-plane calls and errors to codes.

No framework: the route table below lists every endpoint, a request costs a dict lookup
to route, and every failure becomes ``{"error": "..."}`` with a 4xx code (or a 500 that
carries no traceback; the traceback goes to the log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from .asgi_extensions import DISCONNECT_EXTENSION, ConnectionWatch
from .codec.infer import (
    decode_infer_request,
    encode_infer_result,
    load_json_object,
    parse_header_length,
)
from .codec.v1 import decode_v1_request, encode_v1_result
from .dataplane import DataPlane, ModelSlot
from .errors import (
    BadRequest,
    ClientDisconnected,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ServerError,
)
from .logs import LimitWarnings
from .metrics import WorkerMetrics
from .request_body import BodyBudget, BodyClaim, decode_content, read_body
from .shadow import SHADOW_HEADER, MirrorCopy
from .tensors import InferRequest

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Params = dict[str, str]
T = TypeVar("T")

INLINE_DECODE_BYTES = 256 * 1024
"""Bodies up to this size are decoded on the event loop (well under a millisecond); larger
or compressed ones in the decode thread."""

# Every route the server answers: (method, path template, handler name).
# "{name}" matches one path segment; "{name}:suffix" one segment ending in ":suffix".
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/", "v1_live"),
    ("GET", "/v2/health/live", "live"),
    ("GET", "/v2/health/ready", "ready"),
    ("GET", "/v2", "server_metadata"),
    ("GET", "/v2/models/{model}", "model_metadata"),
    ("GET", "/v2/models/{model}/versions/{version}", "model_metadata"),
    ("GET", "/v2/models/{model}/ready", "model_ready"),
    ("GET", "/v2/models/{model}/versions/{version}/ready", "model_ready"),
    ("POST", "/v2/models/{model}/infer", "infer"),
    ("POST", "/v2/models/{model}/versions/{version}/infer", "infer"),
    ("POST", "/v2/repository/index", "repository_index"),
    ("POST", "/v2/repository/models/{model}/load", "repository_load"),
    ("POST", "/v2/repository/models/{model}/unload", "repository_unload"),
    ("GET", "/v1/models", "v1_models"),
    ("GET", "/v1/models/{model}", "v1_model"),
    ("POST", "/v1/models/{model}:predict", "v1_predict"),
]

JSON = b"application/json"
_Segment = tuple[str, str, str]  # (kind, value or param name, suffix)


class Router:
    """Matches a method and path against ``ROUTES``; caches what it has matched."""

    def __init__(self, routes: list[tuple[str, str, str]]) -> None:
        self._by_length: dict[int, list[tuple[str, list[_Segment], str]]] = {}
        for method, template, handler in routes:
            segments = [self._compile(part) for part in template.strip("/").split("/") if part]
            self._by_length.setdefault(len(segments), []).append((method, segments, handler))
        self._cache: dict[tuple[str, str], tuple[str, Params]] = {}

    @staticmethod
    def _compile(part: str) -> _Segment:
        if part.startswith("{"):
            name, _, suffix = part[1:].partition("}")
            return ("param", name, suffix)
        return ("literal", part, "")

    def match(self, method: str, path: str) -> tuple[str, Params]:
        """The handler name and path parameters; raises NotFound or MethodNotAllowed."""
        cached = self._cache.get((method, path))
        if cached is not None:
            return cached
        if path == "/":
            parts: list[str] = []
        elif not path.startswith("/") or path.endswith("/") or "//" in path:
            raise NotFound(f"no route for {method} {path}")  # "/v2/" is not "/v2": no guessing
        else:
            parts = path[1:].split("/")
        allowed: list[str] = []
        for route_method, segments, handler in self._by_length.get(len(parts), []):
            params = self._match_segments(segments, parts)
            if params is None:
                continue
            if route_method != method:
                allowed.append(route_method)
                continue
            if len(self._cache) > 1024:
                self._cache.clear()  # bounded: arbitrary paths must not grow memory
            self._cache[(method, path)] = (handler, params)
            return handler, params
        if allowed:
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}; use {' or '.join(sorted(set(allowed)))}",
                tuple(sorted(set(allowed))),
            )
        raise NotFound(f"no route for {method} {path}")

    @staticmethod
    def _match_segments(segments: list[_Segment], parts: list[str]) -> Params | None:
        params: Params = {}
        for (kind, value, suffix), part in zip(segments, parts, strict=True):
            if kind == "literal":
                if part != value:
                    return None
            elif suffix:
                if not part.endswith(suffix) or len(part) == len(suffix):
                    return None
                params[value] = part[: -len(suffix)]
            else:
                params[value] = part
        return params


class RestApp:
    """The ASGI application of one worker."""

    def __init__(
        self,
        dataplane: DataPlane,
        metrics: WorkerMetrics,
        *,
        max_request_bytes: int,
        max_inflight_body_bytes: int | None = None,
        warnings: LimitWarnings | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.budget = BodyBudget(max_inflight_body_bytes or 4 * max_request_bytes, warnings)
        # One thread: big decodes wait for each other instead of all competing with the
        # event loop for the interpreter at once. Started now, not from the loop later.
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self._decoder.submit(int).result()
        self.router = Router(ROUTES)
        self._simple: dict[str, Callable[[Params, bytes | None], tuple[int, Any]]] = {
            "v1_live": lambda p, b: (200, {"status": "alive"}),
            "live": lambda p, b: (200, {"live": True}),
            "ready": self._ready,
            "server_metadata": lambda p, b: (200, dataplane.server_metadata()),
            "model_metadata": lambda p, b: (
                200,
                dataplane.model_metadata(p["model"], p.get("version")),
            ),
            "model_ready": self._model_ready,
            "repository_index": self._repository_index,
            "repository_load": self._repository_load,
            "repository_unload": self._repository_unload,
            "v1_models": lambda p, b: (200, {"models": [dataplane.slot.name]}),
            "v1_model": self._v1_model,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        claim = BodyClaim(self.budget)
        try:
            handler, params = self.router.match(scope["method"], scope["path"])
            if handler == "infer":
                await self._infer(scope, receive, send, params, "v2", claim)
            elif handler == "v1_predict":
                await self._infer(scope, receive, send, params, "v1", claim)
            else:
                body = None
                if scope["method"] == "POST":
                    body = await self._read_body(scope, receive, claim)
                status, payload = self._simple[handler](params, body)
                await _send(send, status, orjson.dumps(payload))
        except ServerError as exc:
            await _send_error(send, exc)
        except Exception:
            log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
            await _send(send, 500, b'{"error":"internal server error; see the server log"}')
        finally:
            claim.release()

    # -- small handlers --------------------------------------------------------------
    def _ready(self, params: Params, body: bytes | None) -> tuple[int, Any]:
        ready = self.dataplane.ready()
        return (200 if ready else 503), {"ready": ready}

    def _model_ready(self, params: Params, body: bytes | None) -> tuple[int, Any]:
        ready = self.dataplane.model_ready(params["model"], params.get("version"))
        return (200 if ready else 503), {"name": params["model"], "ready": ready}

    def _v1_model(self, params: Params, body: bytes | None) -> tuple[int, Any]:
        ready = self.dataplane.model_ready(params["model"])
        return (200 if ready else 503), {"name": params["model"], "ready": ready}

    def _repository_index(self, params: Params, body: bytes | None) -> tuple[int, Any]:
        ready_only = False
        if body:
            doc = load_json_object(body)
            flag = doc.get("ready", False)
            if type(flag) is not bool:
                raise BadRequest("'ready' must be true or false")
            ready_only = flag
        return 200, self.dataplane.repository_index(ready_only)

    def _repository_load(self, params: Params, body: bytes | None) -> tuple[int, Any]:
        self.dataplane.repository_load(params["model"])
        return 200, {}

    def _repository_unload(self, params: Params, body: bytes | None) -> tuple[int, Any]:
        self.dataplane.repository_unload(params["model"])
        return 200, {}

    # -- inference -------------------------------------------------------------------
    async def _infer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        params: Params,
        protocol: str,
        claim: BodyClaim,
    ) -> None:
        started = time.perf_counter()
        name = params["model"]
        headers = _headers(scope)
        if protocol == "v2" and b"inference-header-content-length" in headers:
            protocol = "v2-binary"
        label = name if self.dataplane.knows(name) else ""
        # A mirrored copy is never mirrored onward, and is counted apart from client traffic.
        shadow = SHADOW_HEADER in headers
        mirror = None if shadow else self.dataplane.mirror
        pairing = mirror.sample() if mirror is not None else None
        keep = pairing.outputs if pairing is not None else ()
        metrics = self.metrics
        metrics.request_started(label)
        status = 500
        try:
            slot = self.dataplane.ready_model(name, params.get("version"))
            batcher = slot.batcher
            assert batcher is not None
            batcher.expect()
            try:
                body = await read_body(receive, headers, self.max_request_bytes, claim)
                if len(body) <= INLINE_DECODE_BYTES and b"content-encoding" not in headers:
                    request = self._decode(protocol, body, headers, slot)
                else:  # a big decode in the loop would stall every connection of the worker
                    request = await asyncio.get_running_loop().run_in_executor(
                        self._decoder, self._decode, protocol, body, headers, slot
                    )
            finally:
                batcher.arrived()
            # A request whose client goes away while it waits is cancelled (and leaves the
            # model's queue, see Batcher) and ends as 499.
            extensions = scope.get("extensions")
            watch = extensions.get(DISCONNECT_EXTENSION) if extensions else None
            if watch is None:
                result = await _watching_disconnect(
                    receive, self.dataplane.infer(slot, request, shadow=shadow, keep=keep)
                )
            else:
                task = asyncio.current_task()
                watch.tasks.add(task)
                try:
                    result = await self.dataplane.infer(slot, request, shadow=shadow, keep=keep)
                except asyncio.CancelledError:
                    if not watch.lost:
                        raise
                    task.uncancel()  # type: ignore[union-attr]
                    raise ClientDisconnected(
                        "client disconnected while its request waited"
                    ) from None
                finally:
                    watch.tasks.discard(task)
            if protocol == "v1":
                rows = request.inputs[0].array.shape[0] if request.inputs[0].array.ndim else 1
                await _send(send, 200, encode_v1_result(result, rows))
            else:
                payload, json_length = encode_infer_result(result)
                if json_length is None:
                    await _send(send, 200, payload)
                else:
                    await _send(
                        send,
                        200,
                        payload,
                        b"application/octet-stream",
                        [(b"inference-header-content-length", str(json_length).encode())],
                    )
            status = 200
            if mirror is not None and result.kept is not None:  # after the client's answer
                mirror.offer(MirrorCopy(slot.name, request.inputs, result.kept))
        except ServerError as exc:
            status = exc.status
            await _send_error(send, exc)
        except Exception:
            log.exception("unexpected error during inference on model '%s'", name)
            await _send(send, 500, b'{"error":"internal server error; see the server log"}')
        finally:
            metrics.request_done(label, protocol, status, time.perf_counter() - started, shadow)

    def _decode(
        self, protocol: str, body: bytes, headers: dict[bytes, bytes], slot: ModelSlot
    ) -> InferRequest:
        body = decode_content(body, headers, self.max_request_bytes)
        if protocol == "v1":
            return decode_v1_request(body, self.dataplane.model_inputs(slot.name))
        length = headers.get(b"inference-header-content-length")
        header_length = parse_header_length(
            None if length is None else length.decode("latin-1"), len(body)
        )
        return decode_infer_request(body, header_length, slot.signature)

    async def _read_body(
        self,
        scope: Scope,
        receive: Receive,
        claim: BodyClaim,
        headers: dict[bytes, bytes] | None = None,
    ) -> bytes:
        if headers is None:
            headers = _headers(scope)
        body = await read_body(receive, headers, self.max_request_bytes, claim)
        return decode_content(body, headers, self.max_request_bytes)


async def _watching_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``, unless the client goes first (a task waits on ``receive``: the body
    has been read, so only a disconnect comes); then as ``_infer`` with the extension."""
    task = asyncio.current_task()
    assert task is not None
    watch = ConnectionWatch()
    watch.tasks.add(task)
    watcher = asyncio.ensure_future(receive())

    def on_message(done: asyncio.Future[Message]) -> None:
        if not done.cancelled() and done.result().get("type") == "http.disconnect":
            watch.connection_lost()

    watcher.add_done_callback(on_message)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.lost:
            task.uncancel()
            raise ClientDisconnected("client disconnected while its request waited") from None
        raise
    finally:
        watcher.remove_done_callback(on_message)
        watcher.cancel()


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, exc: ServerError) -> None:
    extra: list[tuple[bytes, bytes]] = []
    if isinstance(exc, MethodNotAllowed):
        extra.append((b"allow", ", ".join(exc.allowed).encode()))
    if isinstance(exc, PayloadTooLarge | Overloaded):
        # Stop reading a body we will not use: close (lingering) instead of draining it.
        extra.append((b"connection", b"close"))
    if isinstance(exc, Overloaded):
        extra.append((b"retry-after", b"1"))
    await _send(send, exc.status, orjson.dumps({"error": exc.message}), JSON, extra)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
