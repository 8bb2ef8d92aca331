"""The Open Inference Protocol over real HTTP, results compared with onnxruntime directly."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from tests.support.onnx_models import sample_rows

from .conftest import ServerProcess

pytestmark = pytest.mark.integration


def _direct(model: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(model)).run(None, feed)


def _binary_request(
    inputs: dict[str, tuple[str, np.ndarray]], **extra: Any
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request body: JSON header, then raw little-endian tensors."""
    entries, blobs = [], []
    for name, (datatype, array) in inputs.items():
        if datatype == "BYTES":
            raw = b"".join(struct.pack("<I", len(s)) + s for s in array.reshape(-1))
        else:
            raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        entries.append({"name": name, "shape": list(array.shape), "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        blobs.append(raw)
    header = orjson.dumps({"inputs": entries, **extra})
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + b"".join(blobs), headers


def _binary_outputs(body: bytes, header_length: int) -> dict[str, Any]:
    header = orjson.loads(body[:header_length])
    offset = header_length
    outputs: dict[str, Any] = {}
    dtypes = {"FP32": "<f4", "FP16": "<f2", "INT64": "<i8", "FP64": "<f8", "BOOL": "?",
              "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8", "INT8": "<i1",
              "INT16": "<i2", "INT32": "<i4"}  # fmt: skip
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            outputs[output["name"]] = output["data"]
            continue
        raw = body[offset : offset + size]
        offset += size
        if output["datatype"] == "BYTES":
            items, at = [], 0
            while at < len(raw):
                (n,) = struct.unpack_from("<I", raw, at)
                items.append(raw[at + 4 : at + 4 + n])
                at += 4 + n
            outputs[output["name"]] = np.array(items, dtype=object).reshape(output["shape"])
        else:
            outputs[output["name"]] = np.frombuffer(raw, dtypes[output["datatype"]]).reshape(
                output["shape"]
            )
    assert offset == len(body)
    return outputs


def test_health_and_metadata(servers: dict[str, ServerProcess]) -> None:
    server = servers["classifier"]
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").json() == {"ready": True}
    assert server.get("/v2/models/classifier/ready").status_code == 200
    assert server.get("/v2/models/classifier/versions/1/ready").status_code == 200
    meta = server.get("/v2/models/classifier").json()
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"][1] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
    assert server.get("/v2/models/classifier/versions/1").json() == meta
    extensions = server.get("/v2").json()["extensions"]
    assert {"binary_tensor_data", "model_repository"} <= set(extensions)


def test_classifier_json_flat_and_nested(
    servers: dict[str, ServerProcess], models: dict[str, Path]
) -> None:
    server = servers["classifier"]
    x = sample_rows(3)
    label, probabilities = _direct(models["classifier"], {"X": x})
    for data in (x.reshape(-1).tolist(), x.tolist()):
        response = server.post(
            "/v2/models/classifier/infer",
            json={
                "id": "r-7",
                "inputs": [{"name": "X", "shape": [3, 4], "datatype": "FP32", "data": data}],
            },
        )
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["id"] == "r-7" and doc["model_name"] == "classifier"
        out = {o["name"]: o for o in doc["outputs"]}
        assert out["label"] == {
            "name": "label",
            "datatype": "INT64",
            "shape": [3],
            "data": label.tolist(),
        }
        assert out["probabilities"]["shape"] == [3, 3]
        np.testing.assert_allclose(
            out["probabilities"]["data"], probabilities.reshape(-1), rtol=1e-6
        )


def test_output_selection_and_parameters(servers: dict[str, ServerProcess]) -> None:
    response = servers["classifier"].post(
        "/v2/models/classifier/infer",
        json={
            "parameters": {"anything": "goes", "priority": 1},
            "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0],
                        "parameters": {"note": "x"}}],
            "outputs": [{"name": "probabilities"}],
        },
    )  # fmt: skip
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities"]


def test_binary_in_and_out(servers: dict[str, ServerProcess], models: dict[str, Path]) -> None:
    x = sample_rows(32)
    body, headers = _binary_request({"X": ("FP32", x)}, parameters={"binary_data_output": True})
    response = servers["classifier"].post("/v2/models/classifier/infer", data=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/octet-stream"
    outputs = _binary_outputs(
        response.content, int(response.headers["Inference-Header-Content-Length"])
    )
    label, probabilities = _direct(models["classifier"], {"X": x})
    np.testing.assert_array_equal(outputs["label"], label)
    np.testing.assert_allclose(outputs["probabilities"], probabilities, rtol=1e-6)


def test_binary_per_output_choice(servers: dict[str, ServerProcess]) -> None:
    body, headers = _binary_request(
        {"X": ("FP32", sample_rows(2))},
        outputs=[{"name": "label", "parameters": {"binary_data": True}},
                 {"name": "probabilities", "parameters": {"binary_data": False}}],
    )  # fmt: skip
    response = servers["classifier"].post("/v2/models/classifier/infer", data=body, headers=headers)
    header_length = int(response.headers["Inference-Header-Content-Length"])
    header = orjson.loads(response.content[:header_length])
    assert "data" in header["outputs"][1] and "data" not in header["outputs"][0]
    assert len(response.content) == header_length + 16


def test_json_in_binary_out_and_gzip(servers: dict[str, ServerProcess]) -> None:
    doc = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
           "outputs": [{"name": "variable", "parameters": {"binary_data": True}}]}  # fmt: skip
    response = servers["regressor"].post(
        "/v2/models/regressor/infer",
        data=gzip.compress(orjson.dumps(doc)),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    outputs = _binary_outputs(
        response.content, int(response.headers["Inference-Header-Content-Length"])
    )
    assert outputs["variable"].shape == (1, 1)


def test_regressor(servers: dict[str, ServerProcess], models: dict[str, Path]) -> None:
    x = sample_rows(4, seed=3)
    response = servers["regressor"].post(
        "/v2/models/regressor/infer",
        json={"inputs": [{"name": "X", "shape": [4, 4], "datatype": "FP32", "data": x.tolist()}]},
    )
    (variable,) = response.json()["outputs"]
    (expected,) = _direct(models["regressor"], {"X": x})
    assert variable["shape"] == [4, 1]
    np.testing.assert_allclose(variable["data"], expected.reshape(-1), rtol=1e-6)


def test_several_inputs_including_bytes(
    servers: dict[str, ServerProcess], models: dict[str, Path]
) -> None:
    age = np.array([[25.0], [61.0]], np.float32)
    income = np.array([[30.0], [120.0]], np.float32)
    city = np.array([["nice"], ["paris"]], dtype=object)
    expected = _direct(models["mixed"], {"age": age, "income": income, "city": city})
    doc = {"inputs": [
        {"name": "age", "shape": [2, 1], "datatype": "FP32", "data": age.tolist()},
        {"name": "income", "shape": [2, 1], "datatype": "FP32",
         "data": income.reshape(-1).tolist()},
        {"name": "city", "shape": [2, 1], "datatype": "BYTES", "data": ["nice", "paris"]},
    ]}  # fmt: skip
    response = servers["mixed"].post("/v2/models/mixed/infer", json=doc)
    out = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert out["label"] == expected[0].tolist()
    np.testing.assert_allclose(out["probabilities"], expected[1].reshape(-1), rtol=1e-6)
    body, headers = _binary_request(
        {"age": ("FP32", age), "income": ("FP32", income),
         "city": ("BYTES", np.array([[b"nice"], [b"paris"]], dtype=object))},
        parameters={"binary_data_output": True},
    )  # fmt: skip
    response = servers["mixed"].post("/v2/models/mixed/infer", data=body, headers=headers)
    outputs = _binary_outputs(
        response.content, int(response.headers["Inference-Header-Content-Length"])
    )
    np.testing.assert_array_equal(outputs["label"], expected[0])


def test_fp16_json_and_binary(servers: dict[str, ServerProcess]) -> None:
    x = np.array([[0.5, 1.5, -2.0, 1000.0]], np.float16)
    response = servers["fp16"].post(
        "/v2/models/fp16/infer",
        json={"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP16", "data": x.tolist()}]},
    )
    assert response.json()["outputs"][0]["data"] == (x * 2).reshape(-1).tolist()
    body, headers = _binary_request({"X": ("FP16", x)}, parameters={"binary_data_output": True})
    response = servers["fp16"].post("/v2/models/fp16/infer", data=body, headers=headers)
    outputs = _binary_outputs(
        response.content, int(response.headers["Inference-Header-Content-Length"])
    )
    np.testing.assert_array_equal(outputs["Y"], x * 2)


EVERY_TYPE = {
    "BOOL": np.array([[True, False]]),
    "UINT8": np.array([[0, 255]], np.uint8),
    "UINT16": np.array([[0, 65535]], np.uint16),
    "UINT32": np.array([[0, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 2**64 - 1]], np.uint64),
    "INT8": np.array([[-128, 127]], np.int8),
    "INT16": np.array([[-(2**15), 2**15 - 1]], np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1]], np.int64),
    "FP16": np.array([[0.25, -65504]], np.float16),
    "FP32": np.array([[1e-30, -3.5]], np.float32),
    "FP64": np.array([[1e-300, 2.5]], np.float64),
    "BYTES": np.array([[b"caf\xc3\xa9", b""]], dtype=object),
}


@pytest.mark.parametrize("encoding", ["json", "binary"])
def test_every_datatype_round_trips(servers: dict[str, ServerProcess], encoding: str) -> None:
    server = servers["identity"]
    if encoding == "json":
        inputs = []
        for datatype, array in EVERY_TYPE.items():
            data = (
                [b.decode() for b in array.reshape(-1)] if datatype == "BYTES" else array.tolist()
            )
            inputs.append(
                {
                    "name": f"in_{datatype.lower()}",
                    "shape": [1, 2],
                    "datatype": datatype,
                    "data": data,
                }
            )
        response = server.post("/v2/models/identity/infer", data=orjson.dumps({"inputs": inputs}))
        assert response.status_code == 200, response.text
        out = {o["name"]: o for o in response.json()["outputs"]}
        for datatype, array in EVERY_TYPE.items():
            got = out[f"out_{datatype.lower()}"]
            assert got["datatype"] == datatype and got["shape"] == [1, 2]
            if datatype == "BYTES":
                assert got["data"] == [b.decode() for b in array.reshape(-1)]
            else:  # compare as the datatype: FP32 text is the shortest float32 round trip
                np.testing.assert_array_equal(np.array(got["data"], array.dtype), array.reshape(-1))
    else:
        body, headers = _binary_request(
            {f"in_{d.lower()}": (d, a) for d, a in EVERY_TYPE.items()},
            parameters={"binary_data_output": True},
        )
        response = server.post("/v2/models/identity/infer", data=body, headers=headers)
        assert response.status_code == 200, response.text
        outputs = _binary_outputs(
            response.content, int(response.headers["Inference-Header-Content-Length"])
        )
        for datatype, array in EVERY_TYPE.items():
            np.testing.assert_array_equal(outputs[f"out_{datatype.lower()}"], array)


def test_kserve_v1(servers: dict[str, ServerProcess], models: dict[str, Path]) -> None:
    server = servers["regressor"]
    assert server.get("/v1/models/regressor").json() == {"name": "regressor", "ready": True}
    x = sample_rows(2)
    response = server.post("/v1/models/regressor:predict", json={"instances": x.tolist()})
    (expected,) = _direct(models["regressor"], {"X": x})
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)
    mixed = servers["mixed"].post(
        "/v1/models/mixed:predict",
        json={"instances": [{"age": [30.0], "income": [50.0], "city": ["lyon"]}]},
    )
    assert mixed.status_code == 200, mixed.text
    assert set(mixed.json()["predictions"][0]) == {"label", "probabilities"}


def test_repository_index(servers: dict[str, ServerProcess]) -> None:
    server = servers["text"]
    assert server.post("/v2/repository/index", json={}).json() == [
        {"name": "text", "version": "1", "state": "READY", "reason": ""}
    ]
    assert server.post("/v2/repository/models/text/load").status_code == 200
    unload = server.post("/v2/repository/models/text/unload")
    assert unload.status_code == 403 and "cannot be unloaded" in unload.json()["error"]


def test_expect_100_continue_and_pipelining(servers: dict[str, ServerProcess]) -> None:
    """Raw HTTP/1.1: the interim 100 arrives before the body is sent; pipelined requests
    on one connection are answered in order."""
    import socket

    body = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                                     "data": [1, 2, 3, 4]}]})  # fmt: skip
    head = (f"POST /v2/models/regressor/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")  # fmt: skip
    with socket.create_connection(
        ("127.0.0.1", servers["regressor"].http_port), timeout=10
    ) as sock:
        sock.sendall((head + "Expect: 100-continue\r\n\r\n").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK")
        sock.sendall(((head + "\r\n").encode() + body) * 3)  # three at once
        replies = b""
        while replies.count(b"HTTP/1.1 200 OK") < 3:
            chunk = sock.recv(65536)
            assert chunk, replies
            replies += chunk
        assert replies.count(b'"model_name":"regressor"') == 3


def test_answers_match_the_protocol_types(servers: dict[str, ServerProcess]) -> None:
    """Every JSON answer validates against the pydantic models of the protocol."""
    from modeldeploy_server import types

    server = servers["classifier"]
    types.HealthLiveResponse.model_validate(server.get("/v2/health/live").json())
    types.HealthReadyResponse.model_validate(server.get("/v2/health/ready").json())
    types.ServerMetadataResponse.model_validate(server.get("/v2").json())
    types.ModelMetadataResponse.model_validate(server.get("/v2/models/classifier").json())
    for item in server.post("/v2/repository/index").json():
        types.RepositoryIndexItem.model_validate(item)
    request = types.InferenceRequest(
        id="typed",
        inputs=[types.RequestInput(name="X", shape=[1, 4], datatype="FP32", data=[1, 2, 3, 4])],
        outputs=[types.RequestOutput(name="probabilities")],
    )
    answer = server.post(
        "/v2/models/classifier/infer", data=request.model_dump_json(exclude_none=True)
    )
    response = types.InferenceResponse.model_validate(answer.json())
    assert response.id == "typed" and [o.name for o in response.outputs] == ["probabilities"]
    types.ErrorResponse.model_validate(server.post("/v2/models/classifier/infer", data=b"{").json())
    types.V1ModelResponse.model_validate(server.get("/v1/models/classifier").json())
    predict = server.post("/v1/models/classifier:predict", json={"instances": [[1, 2, 3, 4]]})
    types.V1PredictResponse.model_validate(predict.json())
