"""The ONNX Runtime adapter: the only module that imports onnxruntime.

Sessions are built from the verified bytes (so what was hashed is what runs), with a
bounded intra-op thread pool and spinning off: a pod's CPU limit, not the host's core
count, decides how much CPU the model may use.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..codec.datatypes import NUMPY_DTYPES, ONNX_TO_DATATYPE
from ..errors import BadRequest, InferenceFailed, ModelLoadError
from ..tensors import TensorSpec

log = logging.getLogger(__name__)

PLATFORM = "onnxruntime_onnx"


def _dims(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple):
        return ()
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _specs(args: list[ort.NodeArg], kind: str) -> list[TensorSpec]:
    specs = []
    for arg in args:
        datatype = ONNX_TO_DATATYPE.get(arg.type)
        if datatype is None:
            hint = (
                " (a scikit-learn classifier converted with ZipMap: convert it with "
                "options {'zipmap': False})"
                if arg.type.startswith("seq(map")
                else ""
            )
            raise ModelLoadError(
                f"{kind} '{arg.name}' has type {arg.type}; only tensors of the Open Inference "
                f"Protocol's datatypes can be served{hint}"
            )
        specs.append(TensorSpec(arg.name, datatype, _dims(arg.shape)))
    return specs


def session_options(threads: int) -> ort.SessionOptions:
    """Options for one worker: ``threads`` intra-op threads, no spinning, no inter-op pool."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class OnnxModel:
    """An ONNX file served with onnxruntime's CPU execution provider."""

    platform = PLATFORM

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        version: str | None = None,
        sha256: str | None = None,
        threads: int = 1,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.expected_sha256 = sha256.lower() if sha256 else None
        self.sha256: str | None = None
        self.threads = threads
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.batchable = False
        self.warmup_seconds: float | None = None
        self._session: ort.InferenceSession | None = None
        self._string_inputs: frozenset[str] = frozenset()

    def load(self) -> None:
        """Read the file, verify its sha256, build the session and warm it up."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise ModelLoadError(f"model file {self.path} does not exist") from None
        except OSError as exc:
            raise ModelLoadError(f"model file {self.path} cannot be read: {exc}") from None
        digest = hashlib.sha256(data).hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise ModelLoadError(
                f"sha256 mismatch for {self.path}: expected {self.expected_sha256}, "
                f"file has {digest}; refusing to serve it"
            )
        self.sha256 = digest
        try:
            session = ort.InferenceSession(
                data, session_options(self.threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelLoadError(
                f"onnxruntime cannot load {self.path}: {_first_line(exc)}"
            ) from None
        self.inputs = _specs(session.get_inputs(), "input")
        self.outputs = _specs(session.get_outputs(), "output")
        self.batchable = all(
            len(spec.shape) >= 1 and spec.shape[0] == -1 for spec in self.inputs + self.outputs
        )
        self._string_inputs = frozenset(s.name for s in self.inputs if s.datatype == "BYTES")
        self._session = session
        self._warm_up()

    def _warm_up(self) -> None:
        # The first run pays for lazy initialisation; users should not (MLServer #1134).
        feed: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == "BYTES":
                feed[spec.name] = np.full(shape, "", dtype=object)
            else:
                feed[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
        assert self._session is not None
        timings = []
        try:
            for _ in range(4):  # the first run is the slow one; keep the steady state
                started = time.perf_counter()
                self._session.run(None, feed)
                timings.append(time.perf_counter() - started)
        except Exception as exc:  # a model may reject zeros; serving still works
            log.info("warm-up run skipped: %s", _first_line(exc))
            return
        self.warmup_seconds = min(timings[1:])

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """Run the session; onnxruntime errors become ``InferenceFailed`` (400)."""
        session = self._session
        if session is None:
            raise InferenceFailed(f"model '{self.name}' is not loaded")
        if self._string_inputs:
            inputs = {
                name: _as_strings(array, name) if name in self._string_inputs else array
                for name, array in inputs.items()
            }
        try:
            return session.run(outputs, inputs)
        except Exception as exc:
            raise InferenceFailed(
                f"model '{self.name}' could not run on these inputs: {_first_line(exc)}"
            ) from None

    def unload(self) -> None:
        """Drop the session."""
        self._session = None


def _as_strings(array: np.ndarray, name: str) -> np.ndarray:
    flat = array.reshape(-1)
    if not any(isinstance(item, bytes) for item in flat):
        return array
    try:
        strings = [item.decode("utf-8") if isinstance(item, bytes) else item for item in flat]
    except UnicodeDecodeError:
        raise BadRequest(
            f"input '{name}': the model takes text and an element is not valid UTF-8"
        ) from None
    result = np.empty(len(strings), dtype=object)
    result[:] = strings
    return result.reshape(array.shape)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    return message[:500]
