"""The chart's data alerts against live data: a real server with an exported training profile,
scraped by a real Prometheus. Inputs like the training data satisfy neither expression;
inputs shifted away from it raise the drift gauge and satisfy both, for the shifted feature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.integration.chart.conftest import Helm
from tests.support.exports import export
from tests.support.prometheus import Prometheus
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.integration

IRIS = load_iris()
X = IRIS.data.astype(np.float32)


def _expressions(helm: Helm) -> dict[str, str]:
    values = {"metrics": {"prometheusRule": {"enabled": True, "kubeStateMetrics": False}}}
    objects = helm.template("md", "monitoring", values)
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    return {
        r["alert"]: r["expr"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        if "alert" in r
    }


def _send(server: ServerProcess, rows: np.ndarray, batches: int) -> None:
    with requests.Session() as session:
        for start in range(batches):
            batch = rows[(start * 10) % len(rows) :][:10]
            body = {
                "inputs": [
                    {"name": "X", "shape": list(batch.shape), "datatype": "FP32",
                     "data": batch.ravel().tolist()}
                ]
            }  # fmt: skip
            answer = session.post(f"{server.url}/v2/models/iris/infer", json=body, timeout=10)
            assert answer.status_code == 200, answer.text


def test_shifted_inputs_satisfy_the_drift_and_out_of_profile_alerts(
    helm: Helm, prometheus: Prometheus, tmp_path: Path
) -> None:
    alerts = _expressions(helm)
    export(LogisticRegression(max_iter=500).fit(X, IRIS.target), X, tmp_path)
    server = ServerProcess(
        tmp_path / "model.onnx",
        tmp_path / "server.log",
        "--profile-uri",
        str(tmp_path / "model.profile.json"),
        "--drift-window",
        "200",
        name="iris",
        env={"MODELDEPLOY_DEPLOYMENT_NAME": "iris", "MODELDEPLOY_TRACK": "stable"},
    )
    try:
        server.wait_ready()
        prometheus.set_targets([(f"127.0.0.1:{server.metrics_port}", {"namespace": "ml"})])
        prometheus.wait_for_targets()

        # Like the training data: the gauge exists and stays low, no alert expression holds.
        _send(server, X, 30)
        prometheus.wait_for_series("count(modeldeploy_feature_drift_psi) == 4")
        prometheus.wait_for_series("sum(modeldeploy_feature_values_total) >= 1200")
        for name in ("ModelInputDrift", "ModelInputOutOfProfile"):
            assert prometheus.query(alerts[name]) == [], name

        # The third feature (petal length) now arrives in millimetres instead of centimetres.
        shifted = X.copy()
        shifted[:, 2] *= 10
        _send(server, shifted, 40)
        found: dict[str, Any] = {}
        for name in ("ModelInputDrift", "ModelInputOutOfProfile"):
            (series,) = prometheus.wait_for_series(alerts[name], timeout=60)
            found[name] = series["metric"]
        expected = {"namespace": "ml", "deployment": "iris", "track": "stable", "model": "iris"}
        for labels in found.values():
            assert {k: labels[k] for k in expected} == expected
            assert labels["feature"] == "f2"  # fitted on an array: features f0..f3
        assert found["ModelInputOutOfProfile"]["issue"] == "out_of_range"
    finally:
        server.stop()
