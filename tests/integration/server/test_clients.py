"""Existing clients, used as their users use them, against the server unchanged.

tritonclient.http (binary by default, and JSON) and the KServe SDK's REST client (v2
JSON and binary, and v1).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.support.onnx_models import sample_rows

from .conftest import ServerProcess

pytestmark = pytest.mark.integration

tritonclient_http = pytest.importorskip("tritonclient.http")
kserve = pytest.importorskip("kserve")


def _direct(model: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(model)).run(None, feed)


@pytest.fixture
def triton(servers: dict[str, ServerProcess]) -> object:
    def client(name: str) -> object:
        return tritonclient_http.InferenceServerClient(url=f"127.0.0.1:{servers[name].http_port}")

    return client


def test_tritonclient_health_and_metadata(triton: object) -> None:
    client = triton("classifier")  # type: ignore[operator]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("classifier")
    assert client.is_model_ready("classifier", model_version="1")
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata("classifier")
    assert metadata["inputs"][0] == {"name": "X", "datatype": "FP32", "shape": [-1, 4]}
    assert client.get_model_repository_index()[0]["name"] == "classifier"


@pytest.mark.parametrize("binary_inputs", [True, False])
@pytest.mark.parametrize("binary_outputs", [True, False, None])
def test_tritonclient_infer(
    triton: object, models: dict[str, Path], binary_inputs: bool, binary_outputs: bool | None
) -> None:
    client = triton("classifier")  # type: ignore[operator]
    x = sample_rows(5, seed=4)
    infer_input = tritonclient_http.InferInput("X", list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x, binary_data=binary_inputs)
    outputs = None
    if binary_outputs is not None:  # None: no outputs named, the client asks for binary
        outputs = [
            tritonclient_http.InferRequestedOutput("label", binary_data=binary_outputs),
            tritonclient_http.InferRequestedOutput("probabilities", binary_data=binary_outputs),
        ]
    result = client.infer("classifier", [infer_input], outputs=outputs, request_id="t-1")
    label, probabilities = _direct(models["classifier"], {"X": x})
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)
    assert result.get_response()["id"] == "t-1"


def test_tritonclient_bytes_fp16_and_compression(triton: object, models: dict[str, Path]) -> None:
    text = triton("text")  # type: ignore[operator]
    words = np.array([[b"good"], [b"awful"]], dtype=object)
    infer_input = tritonclient_http.InferInput("text", [2, 1], "BYTES")
    infer_input.set_data_from_numpy(words)
    result = text.infer("text", [infer_input], request_compression_algorithm="gzip",
                        response_compression_algorithm="deflate")  # fmt: skip
    expected = _direct(models["text"], {"text": np.array([["good"], ["awful"]], dtype=object)})
    np.testing.assert_array_equal(result.as_numpy("label"), expected[0])

    fp16 = triton("fp16")  # type: ignore[operator]
    x = np.array([[1.5, -2.0, 0.0, 8.0]], np.float16)
    infer_input = tritonclient_http.InferInput("X", [1, 4], "FP16")
    infer_input.set_data_from_numpy(x)
    np.testing.assert_array_equal(fp16.infer("fp16", [infer_input]).as_numpy("Y"), x * 2)


def test_tritonclient_sees_our_error_messages(triton: object) -> None:
    client = triton("classifier")  # type: ignore[operator]
    infer_input = tritonclient_http.InferInput("X", [1, 3], "FP32")
    infer_input.set_data_from_numpy(np.zeros((1, 3), np.float32))
    from tritonclient.utils import InferenceServerException

    with pytest.raises(
        InferenceServerException, match=r"has shape \[1, 3\]; model 'classifier' expects \[-1, 4\]"
    ):
        client.infer("classifier", [infer_input])


def _kserve_client(protocol: str) -> object:
    return kserve.InferenceRESTClient(kserve.RESTConfig(protocol=protocol, timeout=10))


def test_kserve_rest_client_v2(servers: dict[str, ServerProcess], models: dict[str, Path]) -> None:
    base = servers["classifier"].url
    x = sample_rows(3, seed=5)
    label, probabilities = _direct(models["classifier"], {"X": x})

    async def run() -> None:
        client = _kserve_client("v2")
        try:
            assert await client.is_server_live(base) is True  # type: ignore[attr-defined]
            assert await client.is_server_ready(base) is True  # type: ignore[attr-defined]
            assert await client.is_model_ready(base, "classifier") is True  # type: ignore[attr-defined]
            for binary in (False, True):
                infer_input = kserve.InferInput("X", list(x.shape), "FP32")
                infer_input.set_data_from_numpy(x, binary_data=binary)
                request = kserve.InferRequest(
                    model_name="classifier",
                    infer_inputs=[infer_input],
                    request_id="k-1",
                    parameters={"binary_data_output": binary},
                )
                response = await client.infer(base, request, model_name="classifier")  # type: ignore[attr-defined]
                by_name = {o.name: o.as_numpy() for o in response.outputs}
                np.testing.assert_array_equal(by_name["label"], label)
                np.testing.assert_allclose(by_name["probabilities"], probabilities, rtol=1e-6)
                assert response.id == "k-1"
        finally:
            await client.close()  # type: ignore[attr-defined]

    asyncio.run(run())


def test_kserve_rest_client_v1(servers: dict[str, ServerProcess], models: dict[str, Path]) -> None:
    base = servers["regressor"].url
    x = sample_rows(2, seed=6)
    (expected,) = _direct(models["regressor"], {"X": x})

    async def run() -> None:
        client = _kserve_client("v1")
        try:
            assert await client.is_server_live(base) is True  # type: ignore[attr-defined]
            assert await client.is_model_ready(base, "regressor") is True  # type: ignore[attr-defined]
            result = await client.infer(base, {"instances": x.tolist()}, model_name="regressor")  # type: ignore[attr-defined]
            np.testing.assert_allclose(result["predictions"], expected, rtol=1e-6)
        finally:
            await client.close()  # type: ignore[attr-defined]

    asyncio.run(run())


def test_kserve_client_raises_on_our_errors(servers: dict[str, ServerProcess]) -> None:
    import httpx

    async def run() -> None:
        client = _kserve_client("v2")
        try:
            infer_input = kserve.InferInput("nope", [1], "FP32")
            infer_input.set_data_from_numpy(np.zeros(1, np.float32), binary_data=False)
            request = kserve.InferRequest(model_name="classifier", infer_inputs=[infer_input])
            with pytest.raises(httpx.HTTPStatusError, match="unknown input 'nope'"):
                await client.infer(servers["classifier"].url, request, model_name="classifier")  # type: ignore[attr-defined]
        finally:
            await client.close()  # type: ignore[attr-defined]

    asyncio.run(run())
