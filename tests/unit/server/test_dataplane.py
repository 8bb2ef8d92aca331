"""The data plane and the ONNX adapter, in-process: states, metadata and request checks."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from modeldeploy_server.dataplane import (
    BatchingOptions,
    DataPlane,
    ModelIdentity,
    ModelSlot,
    ModelState,
)
from modeldeploy_server.errors import BadRequest, Forbidden, ModelNotReady, NotFound
from modeldeploy_server.metrics import WorkerMetrics
from modeldeploy_server.runtime.onnx import OnnxModel
from modeldeploy_server.tensors import InferRequest, RequestedOutput, Tensor
from tests.support.onnx_models import sample_rows


def _loaded(
    path: Path, name: str = "m", sha256: str | None = None
) -> tuple[DataPlane, WorkerMetrics]:
    metrics = WorkerMetrics()
    plane = DataPlane(ModelSlot(name, None), metrics, BatchingOptions())
    asyncio.run(
        plane.load(OnnxModel(name, path, sha256=sha256), ModelIdentity(uri=f"file://{path}"))
    )
    return plane, metrics


def _infer(plane: DataPlane, request: InferRequest, version: str | None = None) -> list[Tensor]:
    async def run() -> list[Tensor]:
        slot = plane.ready_model("m", version)
        return (await plane.infer(slot, request)).outputs

    return asyncio.run(run())


def test_metadata_comes_from_the_onnx_graph(models: dict[str, Path]) -> None:
    plane, metrics = _loaded(models["classifier"])
    assert plane.ready()
    assert plane.model_metadata("m") == {
        "name": "m",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    assert plane.model_metadata("m", "1")["name"] == "m"
    digest = hashlib.sha256(models["classifier"].read_bytes()).hexdigest()
    ((key, value),) = metrics.model_info.items()
    assert key == ("m", f"file://{models['classifier']}", digest, "") and value == 1
    assert metrics.load_seconds["m"] > 0


def test_results_equal_onnxruntime_called_directly(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["classifier"])
    x = sample_rows(5)
    outputs = _infer(plane, InferRequest(inputs=[Tensor("X", "FP32", x)]))
    expected = ort.InferenceSession(str(models["classifier"])).run(None, {"X": x})
    assert [t.name for t in outputs] == ["label", "probabilities"]
    np.testing.assert_array_equal(outputs[0].array, expected[0])
    np.testing.assert_allclose(outputs[1].array, expected[1], rtol=1e-6)


def test_output_selection_and_binary_flags(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["classifier"])
    request = InferRequest(
        inputs=[Tensor("X", "FP32", sample_rows(1))],
        outputs=[RequestedOutput("probabilities", True)],
    )

    async def run() -> tuple[list[str], list[bool]]:
        result = await plane.infer(plane.ready_model("m", None), request)
        return [t.name for t in result.outputs], result.binary

    assert asyncio.run(run()) == (["probabilities"], [True])


@pytest.mark.parametrize(
    ("tensors", "outputs", "message"),
    [
        ([Tensor("Y", "FP32", sample_rows(1))], None,
         r"unknown input 'Y'; model 'm' has inputs \['X'\]"),
        ([Tensor("X", "FP64", sample_rows(1).astype(np.float64))], None,
         "has datatype FP64; model 'm' expects FP32"),
        ([Tensor("X", "FP32", sample_rows(1, 5))], None,
         r"has shape \[1, 5\]; model 'm' expects \[-1, 4\]"),
        ([Tensor("X", "FP32", np.zeros(4, np.float32))], None, r"has shape \[4\]"),
        ([Tensor("X", "FP32", sample_rows(1))], [RequestedOutput("nope")], "unknown output 'nope'"),
    ],
)  # fmt: skip
def test_requests_that_do_not_fit_the_model(
    models: dict[str, Path],
    tensors: list[Tensor],
    outputs: list[RequestedOutput] | None,
    message: str,
) -> None:
    plane, _ = _loaded(models["classifier"])
    with pytest.raises(BadRequest, match=message):
        _infer(plane, InferRequest(inputs=tensors, outputs=outputs))


def test_missing_inputs_are_named(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["mixed"])
    request = InferRequest(inputs=[Tensor("age", "FP32", np.ones((1, 1), np.float32))])
    with pytest.raises(BadRequest, match=r"missing input 'income' \(FP32 \[-1, 1\]\), 'city'"):
        _infer(plane, request)


def test_unknown_model_and_version(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["classifier"])
    with pytest.raises(NotFound, match="model 'other' is not served here"):
        plane.model_ready("other")
    with pytest.raises(NotFound, match="has no version '7'"):
        plane.model_metadata("m", "7")


def test_digest_mismatch_keeps_the_model_unready_and_says_why(models: dict[str, Path]) -> None:
    plane, metrics = _loaded(models["classifier"], sha256="0" * 64)
    assert not plane.ready()
    assert plane.slot.state is ModelState.FAILED
    assert "sha256 mismatch" in plane.slot.reason and "0" * 64 in plane.slot.reason
    with pytest.raises(ModelNotReady, match="sha256 mismatch"):
        plane.ready_model("m", None)
    assert plane.repository_index() == [
        {"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": plane.slot.reason}
    ]
    assert plane.repository_index(ready_only=True) == []
    assert metrics.model_info == {}


def test_a_matching_digest_loads(models: dict[str, Path]) -> None:
    digest = hashlib.sha256(models["regressor"].read_bytes()).hexdigest()
    plane, _ = _loaded(models["regressor"], sha256=digest.upper())
    assert plane.ready()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"not an onnx model", "onnxruntime cannot load")],
)
def test_unloadable_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    plane, _ = _loaded(path)
    assert not plane.ready() and message in plane.slot.reason


def test_zipmap_classifiers_are_refused_with_a_hint(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["zipmap"])
    assert not plane.ready()
    assert "seq(map(int64,tensor(float)))" in plane.slot.reason
    assert "'zipmap': False" in plane.slot.reason


def test_draining_turns_readiness_false_but_keeps_serving(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["regressor"])
    plane.start_draining()
    assert not plane.ready() and not plane.model_ready("m")
    outputs = _infer(plane, InferRequest(inputs=[Tensor("X", "FP32", sample_rows(2))]))
    assert outputs[0].array.shape == (2, 1)


def test_repository_load_is_idempotent_and_unload_refused(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["regressor"])
    plane.repository_load("m")
    with pytest.raises(Forbidden, match="cannot be unloaded"):
        plane.repository_unload("m")
    with pytest.raises(NotFound):
        plane.repository_load("x")


def test_text_inputs_accept_bytes_and_refuse_invalid_utf8(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["text"])
    words = np.array([[b"good"], ["bad"]], dtype=object)
    (label, _probabilities) = _infer(plane, InferRequest(inputs=[Tensor("text", "BYTES", words)]))
    expected = ort.InferenceSession(str(models["text"])).run(
        None, {"text": np.array([["good"], ["bad"]], dtype=object)}
    )
    np.testing.assert_array_equal(label.array, expected[0])
    bad = np.array([[b"\xff"]], dtype=object)
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        _infer(plane, InferRequest(inputs=[Tensor("text", "BYTES", bad)]))


def test_readiness_waits_for_every_worker(models: dict[str, Path]) -> None:
    plane, _ = _loaded(models["regressor"])
    plane.peers_ready = False  # another worker of this server is still loading
    assert not plane.ready() and not plane.model_ready("m")
    outputs = _infer(plane, InferRequest(inputs=[Tensor("X", "FP32", sample_rows(1))]))
    assert outputs[0].array.shape == (1, 1)  # this worker serves what reaches it
    plane.peers_ready = True
    assert plane.ready()
