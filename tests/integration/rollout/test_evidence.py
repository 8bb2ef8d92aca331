"""Rollout safety against real servers, a real Prometheus and the real API server: a canary
that breaks its clients is never promoted, and no decision rests on too little evidence.

- a model expecting 5 features where stable expects 4: rolled back before traffic moves;
- a model refusing the datatype clients send (declared a breaking change, so only the
  client-error check can stop it): rolled back, with the counts in the status;
- the same model twice, under light traffic: promoted, no failed run;
- a canary 50% slower than stable: fails maxIncrease 20% while its absolute latency passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.integration.rollout.conftest import (
    NEW,
    OLD,
    set_model,
    spec,
    status_of,
    wait_stable,
)
from tests.support.kubectl import apply_md
from tests.support.load import Load
from tests.support.onnx_models import classifier_data, make_classifier, make_spinner
from tests.support.operator_process import wait_for
from tests.support.prometheus import Prometheus

pytestmark = pytest.mark.integration


def checks(prometheus: Prometheus, *metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "interval": "4s",
        "failureLimit": 2,
        "prometheus": {"address": prometheus.url},
        "metrics": list(metrics),
    }


def watch(cluster: Any, namespace: str, seen: list[dict[str, Any]]) -> Callable[[], Any]:
    """A wait_for check: the finished rollout's history entry, keeping every canary status
    seen on the way (``status.canary`` is gone once the rollout ends)."""

    def check() -> dict[str, Any] | None:
        status = status_of(cluster, namespace, "iris")
        if status.get("canary"):
            seen.append(status["canary"])
        history = status.get("history") or []
        return history[0] if history and history[0]["result"] != "Superseded" else None

    return check


def passthrough(path: Path, datatype: int) -> Path:
    """``Y = X`` with ``X`` [-1, 4] of ``datatype``: a model that only checks what it is sent."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "passthrough",
        [helper.make_tensor_value_info("X", datatype, [None, 4])],
        [helper.make_tensor_value_info("Y", datatype, [None, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_canary_expecting_five_features_is_rolled_back_before_any_traffic_moves(
    cluster: Any, namespace: str, tracks: Any, rollout_operator: Any, tmp_path: Path
) -> None:
    tracks(
        "iris",
        {
            "stable": make_classifier(tmp_path / "four.onnx"),
            "canary": make_classifier(tmp_path / "five.onnx", n_features=5),
        },
    )
    rollout_operator()
    apply_md(cluster, namespace, "iris", spec([{"setWeight": 50}, {"pause": {}}]))
    wait_stable(cluster, namespace, "iris", OLD)

    set_model(cluster, namespace, "iris", NEW)
    seen: list[dict[str, Any]] = []
    entry = wait_for(watch(cluster, namespace, seen), 90, "the end of the rollout")
    assert (entry["result"], entry["reason"]) == ("RolledBack", "IncompatibleModel"), entry
    assert "input X: shape [-1,4] -> [-1,5]" in entry["message"]
    assert seen and all(c["weight"] == 0 for c in seen), seen  # traffic never moved
    described = cluster.kubectl("describe", "mdep", "iris", "-n", namespace).stdout
    assert "IncompatibleModel" in described
    assert "input X: shape [-1,4] -> [-1,5]" in described


def test_a_canary_refusing_a_datatype_stable_accepts_is_rolled_back_by_client_errors(
    cluster: Any,
    namespace: str,
    analysed: Any,
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    # The team declared the change breaking (FP64 -> FP32), but its clients still send FP64:
    # only the client-error check stands between them and the canary.
    servers = analysed(
        {
            "stable": passthrough(tmp_path / "fp64.onnx", TensorProto.DOUBLE),
            "canary": passthrough(tmp_path / "fp32.onnx", TensorProto.FLOAT),
        },
        spec(
            [{"setWeight": 50}, {"pause": {"duration": "60s"}}],
            compatibility="Breaking",
            analysis=checks(
                prometheus,
                {"name": "error-rate", "max": 0.01, "minSamples": 20},
                {"name": "client-error-rate", "maxIncrease": "0.05", "minSamples": 20},
            ),
        ),
    )
    body = {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP64", "data": [0.5] * 8}]}

    with Load(servers, lambda: body, pause=0.02) as load:
        set_model(cluster, namespace, "iris", NEW)
        seen: list[dict[str, Any]] = []
        entry = wait_for(watch(cluster, namespace, seen), 120, "the end of the rollout")
    assert load.answers[("canary", 400)] > 0 and load.answers[("stable", 200)] > 0, load.answers
    assert (entry["result"], entry["reason"]) == ("RolledBack", "AnalysisFailed"), entry
    assert "client-error-rate = 1 (stable 0 + at most 0.05)" in entry["message"]
    assert "requests answered 4xx" in entry["message"]
    contract = next(c["contract"] for c in seen if c.get("contract"))
    assert contract["result"] == "Incompatible"
    assert "input X: datatype FP64 -> FP32" in contract["differences"]
    failed = [
        r
        for c in seen
        for r in c.get("analysis") or ()
        if r["name"] == "client-error-rate" and r["result"] == "Failed"
    ]
    assert failed, seen
    run = failed[-1]
    assert (run["value"], run["stableValue"]) == (1, 0)
    assert run["samples"] >= 20 and run["stableSamples"] >= 20
    assert run["message"] == (
        f"canary {run['samples']} of {run['samples']} requests answered 4xx; "
        f"stable 0 of {run['stableSamples']} requests answered 4xx"
    )


class Rows:
    """Random rows of the classifier's data, from a generator of their own: each track sees
    a different sample of the same traffic, as two sets of pods behind one Service do."""

    def __init__(self, seed: int) -> None:
        self.rows, _ = classifier_data()
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> dict[str, Any]:
        batch = self.rows[self.rng.integers(0, len(self.rows), size=4)]
        return {"inputs": [{"name": "X", "shape": [4, 4], "datatype": "FP32",
                            "data": batch.ravel().tolist()}]}  # fmt: skip


def test_identical_models_under_light_traffic_are_promoted_without_a_false_failure(
    cluster: Any, namespace: str, analysed: Any, prometheus: Prometheus, models: dict[str, Path]
) -> None:
    enough = {"minSamples": 60}  # about 40 requests per track reach a 4 s window
    servers = analysed(
        {"stable": models["classifier"], "canary": models["classifier"]},
        spec(
            [{"setWeight": 50}, {"pause": {"duration": "8s"}}],
            analysis=checks(
                prometheus,
                {"name": "error-rate", "max": 0.01, **enough},
                {"name": "client-error-rate", "maxIncrease": "0.01", **enough},
                {"name": "latency-p99", "max": 1.0, **enough},
                {"name": "prediction-drift", "max": 0.1, **enough},
            ),
        ),
    )
    light = [Load({track: servers[track]}, Rows(seed), pause=0.1)
             for track, seed in (("stable", 1), ("canary", 2))]  # fmt: skip
    with light[0], light[1]:
        set_model(cluster, namespace, "iris", NEW)
        seen: list[dict[str, Any]] = []
        entry = wait_for(watch(cluster, namespace, seen), 150, "the end of the rollout")
    runs = list({(r["name"], r["time"]): r for c in seen for r in c.get("analysis") or ()}.values())
    assert (entry["result"], entry["model"]["uri"]) == ("Promoted", NEW), (entry, runs)
    assert all(c.get("failedChecks", 0) == 0 for c in seen), runs
    passed = [r for r in runs if r["result"] == "Passed"]
    assert {r["name"] for r in passed} == {
        "error-rate", "client-error-rate", "latency-p99", "prediction-drift"
    }  # fmt: skip
    assert all(r["samples"] >= 60 for r in passed), passed
    assert all(r["stableSamples"] >= 60 for r in passed if "stableSamples" in r), passed
    assert not [r for r in runs if r["result"] == "Failed"], runs


STABLE_P99_BUCKET = (0.025, 0.05)
"""The latency histogram bucket (the server's) the stable's requests are made to fall in,
in its middle (0.0375 s), so that the canary's, 1.5 times as long, fall in the next one:
p99s interpolated within one bucket would hide the difference."""


def spin(iterations: int) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4},
            {"name": "iterations", "shape": [1], "datatype": "INT64", "data": [iterations]},
        ]
    }


def calibrated(server: Any, bucket: tuple[float, float]) -> int:
    """Iterations of the spinner that take the server to the middle of ``bucket``, by this
    machine's speed (the median of a few requests)."""
    target = (bucket[0] + bucket[1]) / 2
    probe = 200
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        assert server.post(f"/v2/models/{server.name}/infer", json=spin(probe)).status_code == 200
        timings.append(time.perf_counter() - started)
    return max(1, round(probe * target / sorted(timings)[len(timings) // 2]))


def test_a_canary_half_again_as_slow_fails_max_increase_while_its_latency_passes_max(
    cluster: Any, namespace: str, analysed: Any, prometheus: Prometheus, tmp_path: Path
) -> None:
    # The same contract; the canary's inner state is 147 wide instead of 128: each request
    # costs it about 1.5 times as much (matrix products grow with the width cubed).
    servers = analysed(
        {
            "stable": make_spinner(tmp_path / "stable.onnx", width=128),
            "canary": make_spinner(tmp_path / "canary.onnx", width=147),
        },
        spec(
            [{"setWeight": 50}, {"pause": {"duration": "60s"}}],
            analysis=checks(
                prometheus,
                {"name": "latency-p99", "max": 1.0, "maxIncrease": "20%", "minSamples": 20},
            ),
        ),
    )
    body = spin(calibrated(servers["stable"], STABLE_P99_BUCKET))
    with Load(servers, lambda: body, pause=0.02):
        set_model(cluster, namespace, "iris", NEW)
        seen: list[dict[str, Any]] = []
        entry = wait_for(watch(cluster, namespace, seen), 120, "the end of the rollout")
    runs = {r["time"]: r for c in seen for r in c.get("analysis") or ()}
    assert (entry["result"], entry["reason"]) == ("RolledBack", "AnalysisFailed"), runs
    failed = [r for r in runs.values() if r["result"] == "Failed"]
    assert failed, seen
    for run in failed:
        assert run["value"] <= 1.0  # the absolute bound passes
        assert run["value"] > 1.2 * run["stableValue"]  # the relative one does not
    assert "latency-p99 = " in entry["message"] and "+ at most 20%" in entry["message"]
