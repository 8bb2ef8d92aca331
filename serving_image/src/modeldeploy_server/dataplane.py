"""The data plane: health, metadata, repository and inference, independent of transport.

It holds the served model's state (waiting for its file, loading, ready, failed), checks
every decoded request against the model's signature (names, datatypes, shapes) with
messages that name the input, and hands valid requests to the model's batcher. The HTTP
layer only maps what this module returns or raises onto status codes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from . import __version__
from .batching import Batcher
from .errors import BadRequest, Forbidden, ModelLoadError, ModelNotReady, NotFound
from .metrics import WorkerMetrics
from .monitor import ModelMonitor, build_monitor
from .profile import Profile
from .quality import QualityOptions
from .runtime import Model
from .shadow import ShadowMirror
from .tensors import InferRequest, InferResult, Signature, Tensor, TensorSpec
from .types import (
    ModelMetadataResponse,
    RepositoryIndexItem,
    ServerMetadataResponse,
    TensorMetadata,
)

log = logging.getLogger(__name__)

SERVER_NAME = "modeldeploy-server"
EXTENSIONS = ["binary_tensor_data", "model_repository", "parameters"]


class ModelState(StrEnum):
    """Where the served model is in its life."""

    PENDING = "PENDING"  # waiting for the model file (remote download)
    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"


@dataclass(frozen=True)
class BatchingOptions:
    """How the batcher of a loaded model behaves."""

    max_batch_size: int = 32
    max_delay: float = 0.002
    inline_threshold: float = 0.001


@dataclass(frozen=True)
class ModelIdentity:
    """What ``modeldeploy_model_info`` reports."""

    uri: str
    sha256: str = ""
    version: str = ""


class ModelSlot:
    """The one model this server serves, through its states."""

    def __init__(self, name: str, version: str | None) -> None:
        self.name = name
        self.version = version
        self.state = ModelState.PENDING
        self.reason = "waiting for the model file"
        self.model: Model | None = None
        self.batcher: Batcher | None = None
        self.input_specs: dict[str, TensorSpec] = {}
        self.signature = Signature(name, {}, ())
        self.output_names: list[str] = []
        self.output_datatypes: dict[str, str] = {}
        self.monitor: ModelMonitor | None = None


class DataPlane:
    """Everything the protocol can ask, for one model."""

    def __init__(
        self,
        slot: ModelSlot,
        metrics: WorkerMetrics,
        batching: BatchingOptions,
        quality: QualityOptions | None = None,
    ) -> None:
        self.slot = slot
        self.metrics = metrics
        self.batching = batching
        self.quality = quality or QualityOptions()
        self.draining = False
        self._settled = asyncio.Event()
        self.mirror: ShadowMirror | None = None
        """Set by the wiring when this server mirrors requests to a shadow (canary)."""
        self.peers_ready = True
        """False while other workers of the same server may still be loading (the
        supervisor sets it): readiness is the pod's, not one worker's."""

    # -- lifecycle ---------------------------------------------------------------------
    async def load(
        self, model: Model, identity: ModelIdentity, profile: Profile | None = None
    ) -> None:
        """Load ``model`` in a thread (the loop keeps answering health checks).

        With a training ``profile``, the model is only served if the profile describes it.
        """
        slot = self.slot
        slot.state = ModelState.LOADING
        slot.reason = "loading"
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(None, model.load)
        except ModelLoadError as exc:
            self.fail(str(exc))
            return
        except Exception as exc:  # a bug or an unexpected runtime error: still not ready
            log.exception("model load failed unexpectedly")
            self.fail(f"unexpected error while loading: {type(exc).__name__}: {exc}")
            return
        seconds = time.perf_counter() - started
        try:
            monitor = build_monitor(slot.name, model, profile, self.quality)
        except ModelLoadError as exc:
            model.unload()
            self.fail(str(exc))
            return
        warmup = getattr(model, "warmup_seconds", None)
        if self.mirror is not None:
            self.mirror.attach(model.outputs, profile)
        slot.model = model
        slot.monitor = self.metrics.quality = monitor
        slot.input_specs = {spec.name: spec for spec in model.inputs}
        slot.signature = Signature.of(slot.name, model.inputs, model.outputs)
        slot.output_names = [spec.name for spec in model.outputs]
        slot.output_datatypes = {spec.name: spec.datatype for spec in model.outputs}
        slot.batcher = Batcher(
            model,
            self.metrics,
            max_batch_size=self.batching.max_batch_size,
            max_delay=self.batching.max_delay,
            inline_threshold=self.batching.inline_threshold,
            initial_seconds_per_row=warmup or 0.0,
        )
        sha256 = getattr(model, "sha256", None) or identity.sha256
        self.metrics.model_loaded(
            slot.name, seconds, identity.uri, sha256, identity.version or (slot.version or "")
        )
        slot.state = ModelState.READY
        slot.reason = ""
        self._settled.set()
        log.info(
            "model ready",
            extra={
                "fields": {
                    "model": slot.name,
                    "load_seconds": round(seconds, 4),
                    "sha256": sha256,
                    "batchable": model.batchable,
                    "inputs": [[s.name, s.datatype, list(s.shape)] for s in model.inputs],
                    "outputs": [[s.name, s.datatype, list(s.shape)] for s in model.outputs],
                    "monitoring": monitor.describe() if monitor is not None else None,
                }
            },
        )

    def fail(self, reason: str) -> None:
        """The model cannot be served; readiness stays false and says why."""
        self.slot.state = ModelState.FAILED
        self.slot.reason = reason
        self._settled.set()
        log.error("model not served: %s", reason, extra={"fields": {"model": self.slot.name}})

    async def settled(self) -> bool:
        """Wait until the model is loaded (True) or has failed to load (False)."""
        await self._settled.wait()
        return self.slot.state is ModelState.READY

    def start_draining(self) -> None:
        """Readiness turns false; requests still in flight (and new ones) are served."""
        self.draining = True

    def close(self) -> None:
        """Stop the batcher's thread and drop the model."""
        slot = self.slot
        if slot.batcher is not None:
            slot.batcher.close()
        if slot.model is not None:
            slot.model.unload()

    # -- health and metadata -------------------------------------------------------------
    def ready(self) -> bool:
        """Server readiness: the model is loaded (in every worker) and not draining."""
        return self.slot.state is ModelState.READY and self.peers_ready and not self.draining

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``."""
        return ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        ).model_dump()

    def _slot(self, name: str, version: str | None) -> ModelSlot:
        slot = self.slot
        if name != slot.name:
            raise NotFound(f"model '{name}' is not served here; this server serves '{slot.name}'")
        if version is not None and version != self.version_of(slot):
            raise NotFound(
                f"model '{name}' has no version '{version}'; versions: ['{self.version_of(slot)}']"
            )
        return slot

    @staticmethod
    def version_of(slot: ModelSlot) -> str:
        """The served version ("1" when none was configured, as Triton numbers them)."""
        return slot.version or "1"

    def knows(self, name: str) -> bool:
        """True when ``name`` is the served model (metric labels use only known names)."""
        return name == self.slot.name

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether the model can serve; raises ``NotFound`` for an unknown model."""
        slot = self._slot(name, version)
        return slot.state is ModelState.READY and self.peers_ready and not self.draining

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Model metadata from the ONNX graph (``-1`` marks dynamic dimensions)."""
        slot = self._slot(name, version)
        model = self._require_ready(slot)

        def tensors(specs: list[TensorSpec]) -> list[TensorMetadata]:
            return [
                TensorMetadata(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in specs
            ]

        return ModelMetadataResponse(
            name=slot.name,
            versions=[self.version_of(slot)],
            platform=model.platform,
            inputs=tensors(model.inputs),
            outputs=tensors(model.outputs),
        ).model_dump(exclude_none=True)

    def model_inputs(self, name: str, version: str | None = None) -> list[TensorSpec]:
        """The inputs of a ready model (for codecs that need them, such as KServe v1)."""
        return self._require_ready(self._slot(name, version)).inputs

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """``POST /v2/repository/index``."""
        slot = self.slot
        state = {
            ModelState.READY: "READY",
            ModelState.FAILED: "UNAVAILABLE",
            ModelState.LOADING: "LOADING",
            ModelState.PENDING: "LOADING",
        }[slot.state]
        if ready_only and state != "READY":
            return []
        item = RepositoryIndexItem(
            name=slot.name, version=self.version_of(slot), state=state, reason=slot.reason
        )
        return [item.model_dump()]

    def repository_load(self, name: str) -> None:
        """Loading is idempotent for the served model: it succeeds once the model is ready."""
        self._require_ready(self._slot(name, None))

    def repository_unload(self, name: str) -> None:
        """Refused: the server serves one model fixed at start (the operator manages it)."""
        self._slot(name, None)
        raise Forbidden(
            f"model '{name}' cannot be unloaded: this server serves one model, chosen at start; "
            "change the ModelDeployment instead"
        )

    def _require_ready(self, slot: ModelSlot) -> Model:
        if slot.state is not ModelState.READY or slot.model is None:
            raise ModelNotReady(f"model '{slot.name}' is not ready: {slot.reason}")
        return slot.model

    # -- inference -----------------------------------------------------------------------
    def ready_model(self, name: str, version: str | None) -> ModelSlot:
        """The slot of a model that can take an infer request now (else 404 / 503)."""
        slot = self._slot(name, version)
        self._require_ready(slot)
        return slot

    async def infer(
        self,
        slot: ModelSlot,
        request: InferRequest,
        *,
        shadow: bool = False,
        keep: tuple[str, ...] = (),
    ) -> InferResult:
        """Check ``request`` against the model, queue it and wait for its outputs.

        ``shadow``: a mirrored copy, left out of the data-quality metrics; ``keep``: outputs
        to return in ``InferResult.kept`` as well (what the shadow mirror compares).

        Everything up to queueing runs synchronously in the caller's loop turn, so a
        request is queued in the turn that decoded it (see ``Batcher.expect``).
        """
        batcher = slot.batcher
        assert batcher is not None
        inputs, rows = self._check_inputs(slot, request.inputs)
        names, binary = self._select_outputs(slot, request)
        # A mirrored copy's inputs are the stable's live traffic, already checked there, so
        # the data-quality counters leave them out; its predictions are counted, since they are
        # what the canary answers on live rows (what prediction-drift compares during a shadow
        # step, when the canary answers no client).
        monitor = slot.monitor
        kept = None
        if monitor is None and not keep:
            arrays = await batcher.submit(inputs, names, rows)
        else:
            if monitor is not None and not shadow:
                monitor.check(inputs)
            # The predictions (and what the mirror compares) are computed even when the
            # client asked for other outputs.
            wanted = monitor.prediction_output if monitor is not None else None
            run = list(names)
            for extra in (wanted, *keep):
                if extra is not None and extra not in run:
                    run.append(extra)
            arrays = await batcher.submit(inputs, run, rows)
            if monitor is not None:
                monitor.observe(run, arrays)
            if keep:
                kept = {name: arrays[run.index(name)] for name in keep}
            arrays = arrays[: len(names)]
        datatypes = slot.output_datatypes
        return InferResult(
            model_name=slot.name,
            model_version=self.version_of(slot),
            outputs=[Tensor(n, datatypes[n], a) for n, a in zip(names, arrays, strict=True)],
            binary=binary,
            id=request.id,
            kept=kept,
        )

    def _check_inputs(self, slot: ModelSlot, tensors: list[Tensor]) -> tuple[dict[str, Any], int]:
        specs = slot.input_specs
        signature = slot.signature
        signature.check_input_count(len(tensors))
        for tensor in tensors:  # the codec checked these already; other callers may not
            signature.check_input(tensor.name, tensor.datatype, tensor.array.shape)
        if len(tensors) != len(specs):
            given = {t.name for t in tensors}
            missing = [
                f"'{s.name}' ({s.datatype} {list(s.shape)})"
                for s in specs.values()
                if s.name not in given
            ]
            raise BadRequest(f"missing input {', '.join(missing)} for model '{slot.name}'")
        rows = -1
        for tensor in tensors:
            shape = tensor.array.shape
            if shape:
                rows = shape[0] if rows in (-1, shape[0]) else 0
        # rows 0: the inputs disagree on (or have no) batch dimension; such a request runs alone.
        return {t.name: t.array for t in tensors}, max(rows, 0)

    def _select_outputs(
        self, slot: ModelSlot, request: InferRequest
    ) -> tuple[list[str], list[bool]]:
        default = request.binary_output
        if request.outputs is None:
            return list(slot.output_names), [default] * len(slot.output_names)
        names: list[str] = []
        binary: list[bool] = []
        for output in request.outputs:
            slot.signature.check_output(output.name)
            names.append(output.name)
            binary.append(default if output.binary is None else output.binary)
        return names, binary
