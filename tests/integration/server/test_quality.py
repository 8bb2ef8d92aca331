"""Model-aware monitoring in a real server process, over real HTTP, with real onnxruntime:
inputs checked against a training profile, drift scored, predictions counted, bad inputs
refused under the reject policy, and a profile for another model refused at start."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.profiles import (
    build_profile,
    classifier_training_rows,
    regressor_training_rows,
)

from .conftest import ServerProcess

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(server: ServerProcess) -> Samples:
    text = requests.get(server.metrics_url, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _json_body(rows: np.ndarray) -> bytes:
    return orjson.dumps({"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32",
                                     "data": rows.reshape(-1).tolist()}]})  # fmt: skip


def _binary_body(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    header = orjson.dumps({"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}]})  # fmt: skip
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def _labels(server: ServerProcess, rows: np.ndarray) -> list[int]:
    # A new connection per request: with several workers, requests land on all of them.
    response = requests.post(
        f"{server.url}/v2/models/m/infer", data=_json_body(rows), timeout=10,
        headers={"Connection": "close"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    return [int(label) for label in outputs["label"]]


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_issues_and_drift_per_feature_and_predictions_per_class(
    models: dict[str, Path], new_server: Any, tmp_path: Path
) -> None:
    rows = classifier_training_rows()
    doc = build_profile(rows, models["classifier"])
    profile = _write(tmp_path / "model.profile.json", doc)
    server: ServerProcess = new_server(
        models["classifier"], "--workers", "2", "--profile-uri", profile.as_uri(),
        "--drift-window", "200",
    ).wait_ready()  # fmt: skip
    features = [f["name"] for f in doc["features"]]
    before = _scrape(server)
    assert all(_value(before, "modeldeploy_feature_values_total", feature=f) == 0 for f in features)

    predicted: Counter[int] = Counter()
    for start in range(0, len(rows), 20):  # the training rows: in range by construction
        predicted.update(_labels(server, rows[start : start + 20]))
    calm = _scrape(server)
    for feature in features:
        assert _value(calm, "modeldeploy_feature_values_total", feature=feature) == len(rows)
        assert _value(calm, "modeldeploy_feature_issues_total", feature=feature) == 0
        assert _value(calm, "modeldeploy_feature_drift_psi", feature=feature) < 0.1
    for label, count in predicted.items():
        assert _value(calm, "modeldeploy_predictions_total", **{"class": str(label)}) == count

    # Shift two features by three training standard deviations; leave the others alone.
    shifted = rows.copy()
    for column in (0, 2):
        shifted[:, column] += 3 * rows[:, column].std()
    for start in range(0, len(shifted), 20):
        predicted.update(_labels(server, shifted[start : start + 20]))
    for start in range(0, 100, 20):
        predicted.update(_labels(server, shifted[start : start + 20]))
    sent = np.concatenate([shifted, shifted[:100]])
    drifted = _scrape(server)
    for column, feature in enumerate(features):
        spec = doc["features"][column]
        outside = int(((sent[:, column] < spec["min"]) | (sent[:, column] > spec["max"])).sum())
        issues = _value(drifted, "modeldeploy_feature_issues_total", feature=feature,
                        issue="out_of_range")  # fmt: skip
        assert issues == outside, feature
        assert _value(drifted, "modeldeploy_feature_issues_total", feature=feature,
                      issue="missing") == 0  # fmt: skip
        psi = _value(drifted, "modeldeploy_feature_drift_psi", feature=feature)
        if column in (0, 2):
            assert outside > 0 and psi > 0.25, (feature, psi)
            assert psi > _value(calm, "modeldeploy_feature_drift_psi", feature=feature)
        else:
            assert outside == 0 and psi < 0.1, (feature, psi)
    assert _value(drifted, "modeldeploy_feature_values_total", feature="f1") == 2 * len(rows) + 100
    for label, count in predicted.items():
        assert _value(drifted, "modeldeploy_predictions_total", **{"class": str(label)}) == count
    labels = {"deployment": "m", "track": "stable", "model": "m", "feature": "f0"}
    assert frozenset(labels.items()) in {
        ls for n, ls in drifted if n == "modeldeploy_feature_drift_psi"
    }


def test_reject_refuses_inputs_outside_the_profile_and_keeps_serving(
    models: dict[str, Path], new_server: Any, tmp_path: Path
) -> None:
    rows = classifier_training_rows()
    doc = build_profile(rows, models["classifier"])
    profile = _write(tmp_path / "model.profile.json", doc)
    server: ServerProcess = new_server(
        models["classifier"], "--profile-uri", str(profile), "--quality-policy", "reject"
    ).wait_ready()
    bad = rows[:3].copy()
    bad[2, 1] = 1e6
    response = server.post("/v2/models/m/infer", data=_json_body(bad))
    assert response.status_code == 422
    error = response.json()["error"]
    assert "feature 'f1' (column 1) in row 2 is 1e+06, outside the training range" in error
    missing = rows[:1].copy()
    missing[0, 3] = np.nan  # JSON has no NaN: the binary extension carries it
    body, headers = _binary_body(missing)
    response = server.post("/v2/models/m/infer", data=body, headers=headers)
    assert response.status_code == 422
    assert "feature 'f3' (column 3) in row 0 is missing (NaN)" in response.json()["error"]
    assert server.post("/v2/models/m/infer", data=_json_body(rows[:3])).status_code == 200
    assert server.get("/v2/health/ready").status_code == 200
    samples = _scrape(server)
    assert _value(samples, "modeldeploy_requests_total", code="422") == 2
    assert _value(samples, "modeldeploy_requests_total", code="200") == 1
    assert _value(samples, "modeldeploy_feature_issues_total", feature="f1",
                  issue="out_of_range") == 1  # fmt: skip
    assert _value(samples, "modeldeploy_feature_issues_total", feature="f3", issue="missing") == 1


def test_predictions_are_counted_without_a_profile(servers: dict[str, ServerProcess]) -> None:
    classifier = servers["classifier"]
    before = _scrape(classifier)
    rows = classifier_training_rows()[:40]
    response = classifier.post("/v2/models/classifier/infer", data=_json_body(rows))
    labels = Counter(response.json()["outputs"][0]["data"])
    after = _scrape(classifier)
    for label, count in labels.items():
        name, key = "modeldeploy_predictions_total", {"class": str(label)}
        assert _value(after, name, **key) - _value(before, name, **key) == count
    assert not any(n.startswith("modeldeploy_feature_") for n, _ in after)  # no profile

    regressor = servers["regressor"]
    before = _scrape(regressor)
    rows = regressor_training_rows()[:30]
    response = regressor.post("/v2/models/regressor/infer", data=_json_body(rows))
    values = np.array(response.json()["outputs"][0]["data"])
    after = _scrape(regressor)
    name = "modeldeploy_prediction_value_bucket"
    for bound in ("-1.0", "0.0", "1.0", "+Inf"):
        delta = _value(after, name, le=bound) - _value(before, name, le=bound)
        assert delta == (values <= float(bound)).sum(), bound


def test_a_regressor_profile_sets_the_prediction_buckets(
    models: dict[str, Path], new_server: Any, tmp_path: Path
) -> None:
    rows = regressor_training_rows()
    doc = build_profile(rows, models["regressor"])
    profile = _write(tmp_path / "model.profile.json", doc)
    server: ServerProcess = new_server(
        models["regressor"], "--profile-uri", profile.as_uri()
    ).wait_ready()
    assert server.post("/v2/models/m/infer", data=_json_body(rows)).status_code == 200
    samples = _scrape(server)
    name = "modeldeploy_prediction_value_bucket"
    buckets = {dict(ls)["le"]: v for (n, ls), v in samples.items() if n == name}
    edges = doc["prediction"]["histogram"]["edges"]
    assert set(buckets) == {repr(float(e)) for e in edges} | {"+Inf"}
    assert buckets["+Inf"] == buckets[repr(float(edges[-1]))] == len(rows)


class _ProfileHandler(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def profile_over_http() -> Iterator[tuple[type[_ProfileHandler], str]]:
    handler = type("Handler", (_ProfileHandler,), {})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/model.profile.json"
    httpd.shutdown()
    httpd.server_close()


def test_a_remote_profile_is_fetched_and_verified(
    models: dict[str, Path], new_server: Any, tmp_path: Path, profile_over_http: Any
) -> None:
    handler, url = profile_over_http
    handler.body = json.dumps(
        build_profile(classifier_training_rows(), models["classifier"])
    ).encode()
    digest = hashlib.sha256(handler.body).hexdigest()
    cache = str(tmp_path / "cache")
    good: ServerProcess = new_server(
        models["classifier"], "--profile-uri", url, "--profile-sha256", digest,
        "--model-cache-dir", cache,
    ).wait_ready()  # fmt: skip
    assert any(e.get("message") == "profile placed" for e in good.log_entries())
    wrong: ServerProcess = new_server(
        models["classifier"], "--profile-uri", url, "--profile-sha256", "0" * 64,
        "--model-cache-dir", cache,
    )  # fmt: skip
    reason = _refusal(wrong)
    assert reason.startswith("cannot fetch the training profile (digest-mismatch)")


def _refusal(server: ServerProcess, timeout: float = 60.0) -> str:
    """The reason a server gives for not serving its model (it stays up, not ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        try:
            index = requests.post(f"{server.url}/v2/repository/index", timeout=5).json()
        except requests.ConnectionError:
            index = []
        if index and index[0]["state"] == "UNAVAILABLE":
            assert server.get("/v2/health/ready").status_code == 503
            return str(index[0]["reason"])
        time.sleep(0.05)
    pytest.fail(f"the model was never refused:\n{server.log()}")


def test_a_profile_of_another_model_is_refused_at_start(
    models: dict[str, Path], new_server: Any, tmp_path: Path
) -> None:
    model_digest = hashlib.sha256(models["classifier"].read_bytes()).hexdigest()
    doc = build_profile(classifier_training_rows(), models["classifier"])
    doc["model"]["sha256"] = other = hashlib.sha256(b"another model").hexdigest()
    profile = _write(tmp_path / "model.profile.json", doc)
    server: ServerProcess = new_server(models["classifier"], "--profile-uri", profile.as_uri())
    reason = _refusal(server)
    assert reason == (
        "the training profile does not describe this model: the profile is for model sha256 "
        f"{other}, the served model has sha256 {model_digest}"
    )
    response = server.get("/v2/models/m")
    assert response.status_code == 503 and other in response.json()["error"]
    errors = [e for e in server.log_entries() if e.get("level") == "error"]
    assert any(other in e["message"] and model_digest in e["message"] for e in errors)

    doc["model"]["sha256"] = model_digest
    doc["features"][1]["histogram"]["fractions"] = [0.5] * 10
    broken: ServerProcess = new_server(
        models["classifier"], "--profile-uri", str(_write(tmp_path / "broken.json", doc))
    )
    assert _refusal(broken).endswith(
        "features[1].histogram.fractions: must sum to 1, they sum to 5"
    )
