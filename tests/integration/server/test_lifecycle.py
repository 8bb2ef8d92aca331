"""Lifecycle of a real server process: drain on SIGTERM under load, refusing bad models,
and metrics summed correctly over two workers."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
import requests

from modeldeploy_server.runtime.onnx import session_options

from .conftest import ServerProcess, free_port, server_command

pytestmark = pytest.mark.integration


def _iterations_taking(model: Path, seconds: float) -> int:
    """How many iterations make one run of the spinner last about ``seconds`` here and now."""
    session = ort.InferenceSession(str(model), session_options(1))
    feed = {"X": np.ones((1, 4), np.float32), "iterations": np.array([200])}
    session.run(None, feed)
    started = time.perf_counter()
    session.run(None, feed)
    per_iteration = (time.perf_counter() - started) / 200
    return max(200, int(seconds / per_iteration))


def _spin_body(iterations: int, rows: int = 1) -> bytes:
    return orjson.dumps({"inputs": [
        {"name": "X", "shape": [rows, 4], "datatype": "FP32", "data": [1.0] * (4 * rows)},
        {"name": "iterations", "shape": [1], "datatype": "INT64", "data": [iterations]},
    ]})  # fmt: skip


def _metric(server: ServerProcess, name: str, **labels: str) -> float:
    return server.metric(name, **labels)


def test_sigterm_drains_under_load(models: dict[str, Path], new_server: Any) -> None:
    # --inline-inference-ms 0: the spinner's run time depends on a value, not on rows.
    server: ServerProcess = new_server(models["spinner"], "--workers", "2", "--drain-delay", "2",
                                       "--graceful-timeout", "60", "--inline-inference-ms", "0",
                                       name="spin")  # fmt: skip
    server.wait_ready()
    url = server.url + "/v2/models/spin/infer"
    slow = _spin_body(_iterations_taking(models["spinner"], 0.6))
    quick = _spin_body(1)
    slow_results: list[tuple[int, float, Any]] = []
    load_statuses: list[int] = []
    load_errors: list[str] = []
    stop_load = threading.Event()

    def slow_request() -> None:
        response = requests.post(url, data=slow, timeout=120)
        output = response.json()["outputs"][0]["data"] if response.ok else None
        slow_results.append((response.status_code, time.monotonic(), output))

    def load() -> None:
        session = requests.Session()
        while not stop_load.is_set():
            try:
                load_statuses.append(session.post(url, data=quick, timeout=60).status_code)
            except requests.ConnectionError as exc:  # once the listener is closed
                load_errors.append(type(exc).__name__)
                session = requests.Session()
                time.sleep(0.05)

    threads = [threading.Thread(target=slow_request) for _ in range(4)]
    threads += [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while _metric(server, "modeldeploy_inflight_requests") < 4:  # the slow ones are in flight
        assert time.monotonic() < deadline, "requests never got in flight"
        time.sleep(0.05)

    sigterm_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    ready = requests.get(server.url + "/v2/health/ready", timeout=5)
    while ready.status_code != 503 and time.monotonic() - sigterm_at < 1.0:
        ready = requests.get(server.url + "/v2/health/ready", timeout=5)
    assert (ready.status_code, ready.json()) == (503, {"ready": False}), (
        "readiness did not turn false at once"
    )
    assert server.get("/v2/health/live").status_code == 200  # still serving while draining

    assert server.process.wait(90) == 0
    stop_load.set()
    for thread in threads:
        thread.join(30)
    assert [status for status, _, _ in slow_results] == [200] * 4
    assert all(output == [4.0] for _, _, output in slow_results)
    assert any(done > sigterm_at for _, done, _ in slow_results), "nothing was in flight at SIGTERM"
    assert load_statuses and set(load_statuses) == {200}, set(load_statuses)
    log = server.log()
    assert '"message":"draining"' in log and '"message":"server stopped"' in log


def test_while_draining_each_answer_closes_its_kept_alive_connection(
    models: dict[str, Path], new_server: Any
) -> None:
    """A client on a kept-alive connection is told to reconnect (``Connection: close``) on its
    next answer once the pod drains, so it moves to a pod that stays while this one still
    answers, instead of meeting a connection closed under its next request at shutdown."""
    server: ServerProcess = new_server(models["classifier"], "--drain-delay", "3")
    server.wait_ready()
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}
    url = f"{server.url}/v2/models/{server.name}/infer"
    with requests.Session() as client:
        before = client.post(url, json=body, timeout=5)
        assert before.status_code == 200
        assert before.headers.get("connection", "").lower() != "close"
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while requests.get(server.url + "/v2/health/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "readiness did not turn false"
        during = [client.post(url, json=body, timeout=5) for _ in range(3)]
    assert [r.status_code for r in during] == [200, 200, 200]
    assert all(r.headers.get("connection", "").lower() == "close" for r in during), [
        dict(r.headers) for r in during
    ]
    assert server.process.wait(30) == 0


def test_the_grace_period_bounds_shutdown(models: dict[str, Path], new_server: Any) -> None:
    server: ServerProcess = new_server(models["spinner"], "--graceful-timeout", "1",
                                       "--inline-inference-ms", "0", name="spin")  # fmt: skip
    server.wait_ready()
    body = _spin_body(_iterations_taking(models["spinner"], 8.0))
    outcome: list[object] = []

    def too_slow() -> None:
        try:
            response = requests.post(server.url + "/v2/models/spin/infer", data=body, timeout=60)
            outcome.append(response.status_code)
        except requests.RequestException as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=too_slow)
    thread.start()
    deadline = time.monotonic() + 30
    while _metric(server, "modeldeploy_inflight_requests") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0
    assert time.monotonic() - started < 5.0  # 1 s of grace, not the 8 s the request needed
    thread.join(30)
    assert outcome and outcome[0] != 200


@pytest.mark.parametrize("problem", ["digest", "missing", "corrupt"])
def test_a_bad_model_is_refused_and_the_reason_reported(
    models: dict[str, Path], new_server: Any, tmp_path: Path, problem: str
) -> None:
    path, args, reason = models["regressor"], ["--sha256", "0" * 64], "sha256 mismatch"
    if problem == "missing":
        path, args, reason = tmp_path / "nope.onnx", [], "does not exist"
    elif problem == "corrupt":
        path = tmp_path / "corrupt.onnx"
        path.write_bytes(b"\x08\x07garbage")
        args, reason = [], "onnxruntime cannot load"
    server: ServerProcess = new_server(path, *args, name="reg")
    metadata = server.wait_for("/v2/models/reg", 503)
    deadline = time.monotonic() + 30
    while reason not in metadata.json()["error"]:  # first "loading", then the reason
        assert time.monotonic() < deadline, metadata.text
        time.sleep(0.05)
        metadata = server.get("/v2/models/reg")
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/health/ready").json() == {"ready": False}
    infer = server.post("/v2/models/reg/infer", json={"inputs": []})
    assert infer.status_code == 503 and reason in infer.json()["error"]
    index = server.post("/v2/repository/index").json()
    assert index[0]["state"] == "UNAVAILABLE" and reason in index[0]["reason"]
    errors = [e for e in server.log_entries() if e.get("level") == "error"]
    assert errors and reason in errors[0]["message"]
    assert server.stop() == 0


def test_two_workers_share_the_port_and_metrics_are_summed(
    models: dict[str, Path], new_server: Any
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--workers", "2", name="clf",
                                       env={"MODELDEPLOY_DEPLOYMENT_NAME": "iris",
                                            "MODELDEPLOY_TRACK": "canary"})  # fmt: skip
    server.wait_ready()
    deadline = time.monotonic() + 30
    while (
        _metric(server, "modeldeploy_model_info") < 1
        or 'worker="1"' not in requests.get(server.metrics_url, timeout=10).text
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    body = {
        "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]
    }
    sent = 60
    for _ in range(sent):  # a new connection each time: the kernel spreads them over workers
        assert (
            requests.post(server.url + "/v2/models/clf/infer", json=body, timeout=10).status_code
            == 200
        )
    requests.post(server.url + "/v2/models/clf/infer", json={"inputs": []}, timeout=10)
    labels = {"deployment": "iris", "track": "canary", "model": "clf"}
    assert (
        _metric(server, "modeldeploy_requests_total", code="200", protocol="v2", **labels) == sent
    )
    assert _metric(server, "modeldeploy_requests_total", code="400", protocol="v2", **labels) == 1
    assert _metric(server, "modeldeploy_request_duration_seconds_count", **labels) == sent + 1
    assert _metric(server, "modeldeploy_batch_size_count", **labels) == sent
    assert _metric(server, "modeldeploy_inflight_requests", **labels) == 0
    assert _metric(server, "modeldeploy_model_info", **labels) == 1  # one model, not one per worker
    digest = hashlib.sha256(models["classifier"].read_bytes()).hexdigest()
    assert _metric(server, "modeldeploy_model_info", sha256=digest) == 1
    assert _metric(server, "modeldeploy_model_load_duration_seconds", **labels) > 0
    for worker in ("0", "1"):
        assert _metric(server, "modeldeploy_worker_resident_memory_bytes", worker=worker) > 10e6
    assert server.stop() == 0


def test_a_taken_port_is_refused_not_shared(models: dict[str, Path], new_server: Any) -> None:
    first: ServerProcess = new_server(models["regressor"], name="first")
    first.wait_ready()
    command = server_command(models["regressor"], "second", first.http_port, free_port())
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert (
        "cannot bind the HTTP port" in result.stderr and "Address already in use" in result.stderr
    )
    assert first.get("/v2/models/first/ready").status_code == 200
