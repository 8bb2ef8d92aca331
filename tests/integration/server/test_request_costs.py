"""Requests that are cheap to send and were expensive to refuse or to serve for nobody, against
real server processes: they are checked against the model before their data is decoded,
big decodes leave the worker answering, and work whose client has gone is not run.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from .conftest import ServerProcess
from .test_lifecycle import _iterations_taking, _spin_body

pytestmark = pytest.mark.integration

URL = "/v2/models/classifier/infer"
ROW = {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0.5, 0.5, 0.5, 0.5]}


def test_a_request_with_more_inputs_than_the_model_is_refused_before_parsing(
    servers: dict[str, ServerProcess],
) -> None:
    inputs = [
        {"name": f"x{i}", "shape": [1], "datatype": "FP32", "data": [0]} for i in range(400_000)
    ]
    response = servers["classifier"].post(URL, data=orjson.dumps({"inputs": inputs}), timeout=60)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "the request names 400000 tensors; model 'classifier' has 1 input and 2 outputs"
    )


def test_a_request_for_more_outputs_than_the_model_has_is_refused_before_parsing(
    servers: dict[str, ServerProcess],
) -> None:
    outputs = [{"name": f"o{i}"} for i in range(2_000_000)]
    body = orjson.dumps({"inputs": [ROW], "outputs": outputs})
    response = servers["classifier"].post(URL, data=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "the request names 2000001 tensors; model 'classifier' has 1 input and 2 outputs"
    )


def test_a_datatype_the_model_does_not_take_is_refused_before_its_data_is_read(
    servers: dict[str, ServerProcess],
) -> None:
    # 4 M empty BYTES elements for an FP32 input, the last one cut off: decoding them would
    # take seconds and end with "cut off"; the signature answers first.
    count = 4_000_000
    tail = struct.pack("<I", 0) * (count - 1) + b"\x00\x00"
    tensor = {"name": "X", "shape": [count // 4, 4], "datatype": "BYTES",
              "parameters": {"binary_data_size": len(tail)}}  # fmt: skip
    header = orjson.dumps({"inputs": [tensor]})
    response = servers["classifier"].post(URL, data=header + tail, timeout=60,
                                          headers={"Inference-Header-Content-Length":
                                                   str(len(header))})  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"] == (
        "input 'X' has datatype BYTES; model 'classifier' expects FP32"
    )


def test_big_decodes_leave_the_worker_answering_probes(
    models: dict[str, Path], new_server: Any
) -> None:
    server: ServerProcess = new_server(models["classifier"], name="classifier")
    server.wait_ready()
    rows = 800_000  # ~17 MB of JSON; only the small output is asked for
    body = orjson.dumps({"inputs": [{"name": "X", "shape": [rows, 4], "datatype": "FP32",
                                      "data": [0.5] * (rows * 4)}],
                         "outputs": [{"name": "label"}]})  # fmt: skip
    statuses: list[int] = []

    def big() -> None:
        for _ in range(2):
            statuses.append(requests.post(server.url + URL, data=body, timeout=120).status_code)

    senders = [threading.Thread(target=big) for _ in range(3)]
    for sender in senders:
        sender.start()
    slowest = 0.0
    probes = 0
    while any(sender.is_alive() for sender in senders) and probes < 2000:
        started = time.monotonic()
        assert server.get("/v2/health/live", timeout=10).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        probes += 1
        time.sleep(0.02)
    for sender in senders:
        sender.join(120)
    assert statuses == [200] * 6
    # A kubelet probe's default timeout is 1 s; the decodes used to hold the loop for seconds.
    assert slowest < 1.0, f"a liveness probe took {slowest:.2f} s"


def test_requests_abandoned_while_queued_are_not_run(
    models: dict[str, Path], new_server: Any
) -> None:
    server: ServerProcess = new_server(models["spinner"], "--inline-inference-ms", "0",
                                       name="spin")  # fmt: skip
    server.wait_ready()
    url = server.url + "/v2/models/spin/infer"
    busy = _spin_body(_iterations_taking(models["spinner"], 3.0))
    first: list[int] = []
    holder = threading.Thread(
        target=lambda: first.append(requests.post(url, data=busy, timeout=120).status_code)
    )
    holder.start()
    deadline = time.monotonic() + 30
    while server.metric("modeldeploy_inflight_requests") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # 20 clients queue a request behind it, each as long, and go away.
    abandoned = 20
    head = f"POST /v2/models/spin/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(busy)}\r\n\r\n"
    for _ in range(abandoned):
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
            sock.sendall(head.encode() + busy)
            time.sleep(0.05)
    holder.join(120)
    assert first == [200]
    deadline = time.monotonic() + 30
    while server.metric("modeldeploy_requests_total", code="499") < abandoned:
        assert time.monotonic() < deadline, server.metric("modeldeploy_requests_total")
        time.sleep(0.1)
    # Only the first request ever ran: the abandoned ones left the queue.
    assert server.metric("modeldeploy_inference_duration_seconds_count") == 1
    assert server.metric("modeldeploy_inflight_requests") == 0
