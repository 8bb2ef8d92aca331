"""Every bad request gets a 4xx with a JSON error naming the problem; the server keeps serving.

The last test throws random malformed requests (hypothesis) at a real server process.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.mutations import VALID_REQUESTS, mutated_binary_request, mutated_request

from .conftest import ServerProcess

pytestmark = pytest.mark.integration

URL = "/v2/models/classifier/infer"


def _input(**overrides: Any) -> dict[str, Any]:
    tensor = {"name": "X", "shape": [2, 4], "datatype": "FP32", "data": [0.5] * 8}
    tensor.update(overrides)
    return tensor


CASES: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("unknown model", "/v2/models/nope/infer", orjson.dumps({"inputs": [_input()]}), {}, 404,
     "model 'nope' is not served here"),
    ("unknown route", "/v2/modelz/classifier/infer", b"{}", {}, 404, "no route for POST"),
    ("unparseable JSON", URL, b'{"inputs": [', {}, 400, "not valid JSON"),
    ("not UTF-8", URL, b'{"id": "\xff"}', {}, 400, "not valid JSON"),
    ("JSON of the wrong shape", URL, b'{"inputs": {"name": "X"}}', {}, 400,
     "'inputs' must be a non-empty array"),
    ("a list body", URL, b"[1, 2]", {}, 400, "must be a JSON object"),
    ("missing input", "/v2/models/mixed/infer",
     orjson.dumps({"inputs": [{"name": "age", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}),
     {}, 400, "missing input 'income'"),
    ("unknown input", URL, orjson.dumps({"inputs": [_input(name="Z")]}), {}, 400,
     "unknown input 'Z'; model 'classifier' has inputs ['X']"),
    ("unknown output", URL, orjson.dumps({"inputs": [_input()], "outputs": [{"name": "nope"}]}),
     {}, 400, "unknown output 'nope'"),
    ("datatype mismatch", URL, orjson.dumps({"inputs": [_input(datatype="FP64")]}), {}, 400,
     "has datatype FP64; model 'classifier' expects FP32"),
    ("unknown datatype", URL, orjson.dumps({"inputs": [_input(datatype="FLOAT32")]}), {}, 400,
     "'datatype' 'FLOAT32' is not one of"),
    ("shape vs data", URL, orjson.dumps({"inputs": [_input(shape=[3, 4])]}), {}, 400,
     "'shape' [3, 4] needs 12 elements but 'data' has 8"),
    ("shape vs model", URL, orjson.dumps({"inputs": [_input(shape=[4, 2])]}), {}, 400,
     "has shape [4, 2]; model 'classifier' expects [-1, 4]"),
    ("nested data vs shape", URL,
     orjson.dumps({"inputs": [_input(data=[[0.5] * 3] * 2, shape=[2, 3])]}),
     {}, 400, "has shape [2, 3]"),
    ("ragged nesting", URL, orjson.dumps({"inputs": [_input(data=[[1, 2, 3, 4], [1, 2, 3]])]}),
     {}, 400, "nested 'data' does not match 'shape' [2, 4]"),
    ("negative shape", URL, orjson.dumps({"inputs": [_input(shape=[-2, 4])]}), {}, 400,
     "negative dimension"),
    ("absurd shape", URL, orjson.dumps({"inputs": [_input(shape=[2**40, 2**40])]}), {}, 400,
     "more elements than the request could carry"),
    ("string in numbers", URL, orjson.dumps({"inputs": [_input(data=[0.5] * 7 + ["1"])]}), {},
     400, "element 7 of 'data' is a string"),
    ("null in numbers", URL, orjson.dumps({"inputs": [_input(data=[None] + [0.5] * 7)]}), {}, 400,
     "element 0 of 'data' is null"),
    ("deeply nested JSON", URL, b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}, 400,
     "not valid JSON"),
    ("header length past the body", URL, b'{"inputs": []}',
     {"Inference-Header-Content-Length": "500"},
     400, "Inference-Header-Content-Length is 500 but the body has 14 bytes"),
    ("header length not a number", URL, b"{}", {"Inference-Header-Content-Length": "x"}, 400,
     "must be an integer"),
    ("header length in non-ASCII digits", URL, b"{}",
     {"Inference-Header-Content-Length": "\u00b2"}, 400, "must be an integer"),
    ("binary input without the binary header", URL,
     orjson.dumps({"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32",
                               "parameters": {"binary_data_size": 32}}]}),
     {}, 400, "'binary_data_size' 32 runs past the end of the body"),
    ("wrong method", "/v2/health/ready", b"{}", {}, 405, "POST is not allowed on /v2/health/ready"),
]  # fmt: skip


def _binary_case(size: int, tail: bytes) -> tuple[bytes, dict[str, str]]:
    tensor = {
        "name": "X",
        "shape": [2, 4],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    }
    header = orjson.dumps({"inputs": [tensor]})
    return header + tail, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_request_gets_a_4xx_naming_the_problem(
    servers: dict[str, ServerProcess],
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    server = servers["mixed"] if path.startswith("/v2/models/mixed") else servers["classifier"]
    if path == "/v2/health/ready":
        response = server.post(path, data=body)
    else:
        response = server.post(path, data=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert message in error
    assert "Traceback" not in error


@pytest.mark.parametrize(
    ("size", "tail", "message"),
    [
        (32, b"\0" * 16, "'binary_data_size' 32 runs past the end of the body"),
        (16, b"\0" * 16, "'binary_data_size' is 16 bytes but 'shape' [2, 4] of FP32 needs 32"),
        (
            32,
            b"\0" * 40,
            "carries 40 bytes of binary data but the inputs' 'binary_data_size' add up to 32",
        ),
    ],
)
def test_inconsistent_binary_headers(
    servers: dict[str, ServerProcess], size: int, tail: bytes, message: str
) -> None:
    body, headers = _binary_case(size, tail)
    response = servers["classifier"].post(URL, data=body, headers=headers)
    assert response.status_code == 400 and message in response.json()["error"]


def test_the_server_keeps_serving_after_bad_requests(servers: dict[str, ServerProcess]) -> None:
    server = servers["classifier"]
    assert server.process.poll() is None
    assert server.get("/v2/health/ready").status_code == 200
    good = server.post(URL, json={"inputs": [_input()]})
    assert good.status_code == 200
    unexpected = [e for e in server.log_entries() if e.get("level") == "error"]
    assert unexpected == []


@pytest.fixture(scope="module")
def small_limit(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = ServerProcess(models["classifier"], tmp_path_factory.mktemp("limit") / "server.log",
                           "--max-request-bytes", "4096", name="classifier")  # fmt: skip
    yield server.wait_ready()
    assert server.stop() == 0


def test_bodies_over_the_limit_get_413(small_limit: ServerProcess) -> None:
    big = orjson.dumps({"inputs": [_input(shape=[300, 4], data=[0.5] * 1200)]})
    assert len(big) > 4096
    response = small_limit.post(URL, data=big)
    assert response.status_code == 413
    assert "exceeds the limit of 4096 bytes" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    response = small_limit.post(URL, data=chunks())
    assert response.status_code == 413
    assert small_limit.post(URL, json={"inputs": [_input()]}).status_code == 200


def test_a_huge_declared_body_is_refused_without_reading_it(small_limit: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", small_limit.http_port), timeout=10) as sock:
        sock.sendall(
            f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10**12}\r\n\r\n".encode()
        )
        started = time.monotonic()
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 413")
    assert time.monotonic() - started < 5


# -- property-based: random malformed requests at a real process --------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)  # fmt: skip
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["X", "x", ""]) | json_values,
        "shape": st.lists(st.integers(-2, 2**62), max_size=5) | json_values,
        "datatype": st.sampled_from(["FP32", "FP16", "INT64", "BYTES", "BOOL", "UINT8", "?"])
        | json_values,
        "data": json_values | st.lists(st.floats(width=32), max_size=12),
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-2, 100)})
        | json_values,
    },
)  # fmt: skip
documents = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(tensors, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": json_values}), max_size=3) | json_values,
        "id": json_values,
        "parameters": json_values,
        "instances": json_values,
    },
)
bodies = documents.map(lambda doc: json.dumps(doc).encode()) | st.binary(max_size=200)
paths = st.sampled_from([
    "/v2/models/classifier/infer", "/v2/models/classifier/versions/1/infer",
    "/v1/models/classifier:predict", "/v2/repository/index", "/v2/models/classifier",
    "/v2/models/classifier/versions/x/infer", "/v2/repository/models/classifier/load",
]) | st.text(alphabet="/v2modelsinfer:%ab", max_size=30).map(lambda p: "/" + p)  # fmt: skip


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    path=paths,
    body=bodies,
    tail=st.binary(max_size=64),
    header_length=st.none() | st.integers(-3, 300) | st.text(max_size=5),
    encoding=st.none() | st.sampled_from(["gzip", "deflate", "identity", "zstd"]),
)
def test_random_malformed_requests_get_4xx_never_5xx(
    servers: dict[str, ServerProcess],
    method: str,
    path: str,
    body: bytes,
    tail: bytes,
    header_length: int | str | None,
    encoding: str | None,
) -> None:
    headers = {"Content-Type": "application/json"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
        body += tail
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    try:
        response = requests.request(
            method, servers["classifier"].url + path, data=body, headers=headers, timeout=10
        )
    except (requests.exceptions.InvalidHeader, UnicodeEncodeError):
        return  # the client refuses to send that header value; nothing reached the server
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), model=st.sampled_from(sorted(VALID_REQUESTS)), binary=st.booleans())
def test_mutated_valid_requests_get_4xx_never_5xx(
    servers: dict[str, ServerProcess], data: st.DataObject, model: str, binary: bool
) -> None:
    url = f"{servers[model].url}/v2/models/{model}/infer"
    if binary:
        body, length = data.draw(mutated_binary_request(VALID_REQUESTS[model]))
        response = requests.post(url, data=body, timeout=10,
                                 headers={"Inference-Header-Content-Length": length})  # fmt: skip
    else:
        doc = data.draw(mutated_request(VALID_REQUESTS[model]))
        response = requests.post(url, data=json.dumps(doc), timeout=10)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert isinstance(response.json()["error"], str)


def test_still_alive_and_clean_after_fuzzing(servers: dict[str, ServerProcess]) -> None:
    for name in ("classifier", *VALID_REQUESTS):
        server = servers[name]
        assert server.get("/v2/health/ready").json() == {"ready": True}
        assert [e for e in server.log_entries() if e.get("level") == "error"] == []


def test_unparseable_http_gets_a_json_400(servers: dict[str, ServerProcess]) -> None:
    with socket.create_connection(
        ("127.0.0.1", servers["classifier"].http_port), timeout=10
    ) as sock:
        sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head
    assert json.loads(body)["error"].startswith("malformed HTTP request")
