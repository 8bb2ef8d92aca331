"""The HTTP layer in-process: every route, status codes, headers and error bodies."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldeploy_server.errors import MethodNotAllowed, NotFound
from modeldeploy_server.rest import ROUTES, Router
from tests.support.mutations import VALID_REQUESTS, mutated_request

from .conftest import AsgiClient, make_app

ROW = [0.1, 0.2, 0.3, 0.4]


def _infer_body(data: object = None, **extra: object) -> dict[str, object]:
    return {
        "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": data or ROW}],
        **extra,
    }


@pytest.fixture(scope="module")
def client(models: dict[str, Path], loop: asyncio.AbstractEventLoop) -> AsgiClient:
    return make_app(loop, models["classifier"], "rf", max_request_bytes=64 * 1024)[0]


# -- routing ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "template", "handler"), ROUTES)
def test_every_route_matches(method: str, template: str, handler: str) -> None:
    path = template.replace("{model}", "rf").replace("{version}", "1")
    matched, params = Router(ROUTES).match(method, path)
    assert matched == handler
    assert set(params) == {p for p in ("model", "version") if "{" + p + "}" in template}


def test_router_refuses_unknown_paths_and_methods() -> None:
    router = Router(ROUTES)
    assert router.match("POST", "/v1/models/a:b:predict") == ("v1_predict", {"model": "a:b"})
    for path in ("/v2/", "/v3", "//v2", "/v2/models/rf/infer/x", "/v1/models/:predict"):
        with pytest.raises((NotFound, MethodNotAllowed)):
            router.match("POST" if "predict" in path else "GET", path)
    with pytest.raises(MethodNotAllowed) as raised:
        router.match("GET", "/v2/models/rf/infer")
    assert raised.value.allowed == ("POST",)


def test_405_names_the_allowed_method(client: AsgiClient) -> None:
    response = client.request("DELETE", "/v2/health/live")
    assert response.status == 405
    assert response.headers[b"allow"] == b"GET"
    assert "DELETE is not allowed" in response.json()["error"]


def test_404_for_unknown_paths_and_models(client: AsgiClient) -> None:
    assert client.get("/nothing").status == 404
    response = client.post("/v2/models/other/infer", _infer_body())
    assert response.status == 404
    assert response.json() == {"error": "model 'other' is not served here; this server serves 'rf'"}
    assert client.get("/v2/models/rf/versions/9").status == 404


# -- health, metadata, repository -------------------------------------------------------


def test_health_and_metadata_bodies(client: AsgiClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/").json() == {"status": "alive"}
    assert client.get("/v2/models/rf/ready").json() == {"name": "rf", "ready": True}
    assert client.get("/v2/models/rf/versions/1/ready").status == 200
    assert client.get("/v1/models/rf").json() == {"name": "rf", "ready": True}
    assert client.get("/v1/models").json() == {"models": ["rf"]}
    server = client.get("/v2").json()
    assert server["name"] == "modeldeploy-server"
    assert "binary_tensor_data" in server["extensions"]
    assert client.get("/v2/models/rf").json()["inputs"][0]["shape"] == [-1, 4]


def test_repository_endpoints(client: AsgiClient) -> None:
    index = client.request("POST", "/v2/repository/index")
    assert index.json() == [{"name": "rf", "version": "1", "state": "READY", "reason": ""}]
    assert client.post("/v2/repository/index", {"ready": True}).json()[0]["state"] == "READY"
    assert client.post("/v2/repository/index", {"ready": 3}).status == 400
    assert client.request("POST", "/v2/repository/models/rf/load").status == 200
    assert client.request("POST", "/v2/repository/models/rf/unload").status == 403
    assert client.request("POST", "/v2/repository/models/x/load").status == 404


# -- inference ----------------------------------------------------------------------------


def test_json_infer_echoes_id_and_selects_outputs(client: AsgiClient) -> None:
    response = client.post(
        "/v2/models/rf/infer", _infer_body(id="req-1", outputs=[{"name": "label"}])
    )
    assert response.status == 200
    assert response.headers[b"content-type"] == b"application/json"
    doc = response.json()
    assert doc["id"] == "req-1" and doc["model_name"] == "rf"
    assert [o["name"] for o in doc["outputs"]] == ["label"]


def test_binary_output_on_request(client: AsgiClient) -> None:
    response = client.post(
        "/v2/models/rf/infer", _infer_body(parameters={"binary_data_output": True})
    )
    assert response.headers[b"content-type"] == b"application/octet-stream"
    length = int(response.headers[b"inference-header-content-length"])
    header = orjson.loads(response.body[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [8, 12]
    assert len(response.body) == length + 20
    probabilities = np.frombuffer(response.body[length + 8 :], "<f4")
    assert probabilities.sum() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies(client: AsgiClient, encoding: str) -> None:
    raw = orjson.dumps(_infer_body())
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    response = client.request("POST", "/v2/models/rf/infer", body, {"content-encoding": encoding})
    assert response.status == 200, response.body


def test_bad_compression(client: AsgiClient) -> None:
    response = client.request("POST", "/v2/models/rf/infer", b"xx", {"content-encoding": "br"})
    assert response.status == 415
    response = client.request("POST", "/v2/models/rf/infer", b"xx", {"content-encoding": "gzip"})
    assert response.status == 400 and "not valid gzip data" in response.json()["error"]
    bomb = gzip.compress(b" " * (1 << 20))  # 1 MiB of spaces, far over the 64 KiB limit
    response = client.request("POST", "/v2/models/rf/infer", bomb, {"content-encoding": "gzip"})
    assert response.status == 413


def test_body_over_the_limit_is_refused_before_reading(client: AsgiClient) -> None:
    response = client.request("POST", "/v2/models/rf/infer", b"x" * (65 * 1024))
    assert response.status == 413
    assert response.headers[b"connection"] == b"close"
    assert "exceeds the limit of 65536 bytes" in response.json()["error"]


def test_a_body_in_chunks(client: AsgiClient) -> None:
    body = orjson.dumps(_infer_body())
    assert client.request("POST", "/v2/models/rf/infer", body, chunks=5).status == 200


def test_v1_predict(client: AsgiClient) -> None:
    response = client.post("/v1/models/rf:predict", {"instances": [ROW, ROW]})
    assert response.status == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == {"label", "probabilities"}
    assert client.post("/v1/models/rf:predict", {"instances": [[1, 2]]}).status == 400


def test_metrics_count_requests_by_protocol_and_code(
    models: dict[str, Path], loop: asyncio.AbstractEventLoop
) -> None:
    client, _, metrics = make_app(loop, models["regressor"], "reg")
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    client.post("/v2/models/reg/infer", body)
    client.post("/v2/models/reg/infer", {"inputs": []})
    client.post("/v2/models/nope/infer", body)
    header = orjson.dumps({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 16}}]})  # fmt: skip
    client.request(
        "POST",
        "/v2/models/reg/infer",
        header + np.array(ROW, "<f4").tobytes(),
        {"inference-header-content-length": str(len(header))},
    )
    client.post("/v1/models/reg:predict", {"instances": [ROW]})
    client.get("/v2/health/ready")  # health checks are not inference requests
    assert metrics.requests == {
        ("reg", "v2", 200): 1,
        ("reg", "v2", 400): 1,
        ("", "v2", 404): 1,
        ("reg", "v2-binary", 200): 1,
        ("reg", "v1", 200): 1,
    }
    assert metrics.inflight == {"reg": 0, "": 0}
    assert sum(metrics.request_duration[("reg", "v2")].counts) == 2
    assert sum(metrics.inference_duration["reg"].counts) == 3


def test_a_loading_model_answers_503(
    models: dict[str, Path], loop: asyncio.AbstractEventLoop
) -> None:
    from modeldeploy_server.dataplane import BatchingOptions, DataPlane, ModelSlot
    from modeldeploy_server.metrics import WorkerMetrics
    from modeldeploy_server.rest import RestApp

    plane = DataPlane(ModelSlot("rf", None), WorkerMetrics(), BatchingOptions())
    client = AsgiClient(RestApp(plane, plane.metrics, max_request_bytes=1024), loop)
    assert client.get("/v2/health/live").status == 200
    ready = client.get("/v2/health/ready")
    assert (ready.status, ready.json()) == (503, {"ready": False})
    assert client.get("/v2/models/rf/ready").status == 503
    response = client.post("/v2/models/rf/infer", _infer_body())
    assert response.status == 503
    assert response.json() == {"error": "model 'rf' is not ready: waiting for the model file"}
    assert client.get("/v2/models/rf").status == 503


# -- anything at all: no 5xx, always a JSON error -----------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)  # fmt: skip
tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["X", "Y", ""]) | json_values,
        "shape": st.lists(st.integers(-3, 10**12), max_size=4) | json_values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "FP16", "x"]),
        "data": json_values | st.lists(st.floats(allow_nan=False, width=32), max_size=8),
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-2, 64)})
        | json_values,
    },
)
request_docs = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(tensor, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": json_values}), max_size=2) | json_values,
        "id": json_values,
        "parameters": json_values,
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    doc=request_docs,
    tail=st.binary(max_size=40),
    header=st.none() | st.integers(-5, 500).map(str) | st.text(max_size=4),
    path=st.sampled_from(
        ["/v2/models/rf/infer", "/v1/models/rf:predict", "/v2/models/rf/versions/1/infer"]
    ),
)
def test_malformed_requests_never_get_a_5xx(
    client: AsgiClient, doc: object, tail: bytes, header: str | None, path: str
) -> None:
    raw = json.dumps(doc).encode() + (tail if header is not None else b"")
    headers = {} if header is None else {"inference-header-content-length": header}
    response = client.request("POST", path, raw, headers)
    assert response.status in (200, 400, 413), response.body
    if response.status != 200:
        assert isinstance(response.json()["error"], str)


@pytest.fixture(scope="module")
def fuzz_clients(models: dict[str, Path], loop: asyncio.AbstractEventLoop) -> dict[str, AsgiClient]:
    return {name: make_app(loop, models[name], name)[0] for name in VALID_REQUESTS}


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), model=st.sampled_from(sorted(VALID_REQUESTS)), binary_out=st.booleans())
def test_mutated_valid_requests_never_get_a_5xx(
    fuzz_clients: dict[str, AsgiClient], data: st.DataObject, model: str, binary_out: bool
) -> None:
    doc = data.draw(mutated_request(VALID_REQUESTS[model]))
    if binary_out and isinstance(doc, dict):
        doc.setdefault("parameters", {"binary_data_output": True})
    response = fuzz_clients[model].request(
        "POST", f"/v2/models/{model}/infer", json.dumps(doc).encode()
    )
    assert response.status in (200, 400), response.body
    if response.status == 400:
        assert isinstance(response.json()["error"], str)
