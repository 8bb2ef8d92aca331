"""Model-aware rollout gates: a canary that answers fast, without errors, and wrongly is rolled
back by the prediction-drift check; a retrained, equivalent model passes the same gate.

Everything is real: scikit-learn models exported by ``modeldeploy export`` (model and training
profile), ``modeldeploy-server`` processes for the stable and canary tracks, a real Prometheus,
and the operator against the real API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.integration.rollout.conftest import (
    NEW,
    OLD,
    finished,
    set_model,
    status_of,
    steady,
    wait_stable,
)
from tests.support.exports import export as exported_with_cli
from tests.support.operator_process import wait_for
from tests.support.prometheus import Prometheus

pytestmark = pytest.mark.integration

IRIS = load_iris()
X, Y = IRIS.data.astype(np.float32), IRIS.target
# Production traffic is rarely balanced: mostly setosa, some versicolor, few virginica.
TRAFFIC = np.concatenate([X[Y == 0][:35], X[Y == 1][:10], X[Y == 2][:5]])


def export(estimator: Any, directory: Path) -> tuple[Path, Path]:
    return exported_with_cli(estimator, X, directory)


def served(model: Path, profile: Path) -> tuple[Path, list[str]]:
    return model, ["--profile-uri", f"file://{profile}"]


class Traffic:
    """Random batches of the (skewed) production traffic, the same for both tracks."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(7)

    def __call__(self) -> dict[str, Any]:
        rows = TRAFFIC[self.rng.integers(0, len(TRAFFIC), size=8)]
        return {
            "inputs": [
                {"name": "X", "shape": list(rows.shape), "datatype": "FP32",
                 "data": rows.ravel().tolist()}
            ]
        }  # fmt: skip


def gated(prometheus: Prometheus) -> dict[str, Any]:
    return {
        "model": {"uri": OLD},
        "replicas": 2,
        "rollout": {
            "strategy": "Canary",
            "steps": [{"setWeight": 50}, {"pause": {"duration": "10s"}}],
            "analysis": {
                "interval": "4s",
                "failureLimit": 2,
                "prometheus": {"address": prometheus.url},
                "metrics": [
                    {"name": "error-rate", "max": 0.01},
                    {"name": "latency-p99", "max": 1.0},
                    {"name": "prediction-drift", "max": 0.2},
                    {"name": "data-quality", "max": 0.05},
                ],
            },
        },
    }


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("versions")
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    # A broken training pipeline: the label encoding is rotated (0->1, 1->2, 2->0).
    wrong = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    return {
        "v1": export(pipeline.fit(X, Y), root / "v1"),
        "wrong": export(wrong.fit(X, (Y + 1) % 3), root / "wrong"),
        "retrained": export(
            RandomForestClassifier(n_estimators=30, random_state=3).fit(X, Y), root / "v2"
        ),
    }


@pytest.fixture
def serving(analysed: Any, prometheus: Prometheus, versions: dict[str, tuple[Path, Path]]) -> Any:
    """``serving(canary_version)``: v1 stable and the given canary served and scraped, the
    operator running, the gated ModelDeployment Ready on v1. Returns the servers."""

    def start(canary: str) -> dict[str, Any]:
        models = {"stable": served(*versions["v1"]), "canary": served(*versions[canary])}
        return dict(analysed(models, gated(prometheus)))

    return start


def test_a_wrong_but_healthy_canary_is_rolled_back_for_prediction_drift(
    cluster: Any, namespace: str, serving: Any
) -> None:
    servers = serving("wrong")

    with steady(servers, Traffic()) as load:
        set_model(cluster, namespace, "iris", NEW)

        entry = wait_for(
            lambda: finished(cluster, namespace, "iris", "RolledBack"), 120, "the rollback"
        )
    assert load.answers[("canary", 200)] > 0 and not any(
        code != 200 for (_, code) in load.answers
    ), load.answers  # healthy: every request answered
    message = entry["message"]
    assert entry["reason"] == "AnalysisFailed", entry
    failed, _, passing = message.partition("passing:")
    assert "prediction-drift = " in failed, message
    for check in ("error-rate", "latency-p99", "data-quality"):
        assert check in passing and check not in failed, message
    described = cluster.kubectl("describe", "mdep", "iris", "-n", namespace).stdout
    assert "prediction-drift" in described


def test_a_retrained_equivalent_model_passes_the_same_gate(
    cluster: Any, namespace: str, serving: Any
) -> None:
    servers = serving("retrained")

    with steady(servers, Traffic()):
        set_model(cluster, namespace, "iris", NEW)
        seen: list[dict[str, Any]] = []

        def watch() -> bool:
            canary = status_of(cluster, namespace, "iris").get("canary") or {}
            seen.extend(canary.get("analysis") or [])
            return bool(seen)

        wait_for(watch, 60, "an analysis run")
        md = wait_stable(cluster, namespace, "iris", NEW, timeout=120)
    assert md["status"]["history"][0]["result"] == "Promoted"
    drift = [r for r in seen if r["name"] == "prediction-drift" and r.get("value") is not None]
    assert drift and all(r["value"] <= 0.2 for r in drift), seen
