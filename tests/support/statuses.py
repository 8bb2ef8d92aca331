"""A status that sets every field of the API, as the operator would store it."""

from __future__ import annotations

from typing import Any

__all__ = ["full_status"]


def full_status() -> dict[str, Any]:
    """A status that sets every field (the API round trips, the status table)."""
    time = "2025-01-02T03:04:05Z"
    model = {"uri": "s3://models/iris/2/model.onnx", "sha256": "b" * 64, "version": "2"}
    return {
        "observedGeneration": 2,
        "phase": "Progressing",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "observedGeneration": 2,
                "reason": "MinimumReplicasReady",
                "message": "2 of 2 pods ready",
                "lastTransitionTime": time,
            }
        ],
        "replicas": 3,
        "readyReplicas": 3,
        "selector": "serving.modeldeploy.io/deployment=case",
        "url": "http://case.default.svc:8080/v2/models/iris",
        "stable": {**model, "templateHash": "abc"},
        "canary": {
            "uri": "s3://models/iris/3/model.onnx",
            "sha256": "a" * 64,
            "version": "3",
            "templateHash": "abc",
            "state": "Paused",
            "weight": 10,
            "stepIndex": 1,
            "failedChecks": 1,
            "passedChecks": 3,
            "analysis": [
                {
                    "name": "error-rate",
                    "value": 0.02,
                    "max": 0.01,
                    "samples": 250,
                    "minSamples": 100,
                    "window": "30s",
                    "result": "Failed",
                    "time": time,
                },
                {
                    "name": "latency-p99",
                    "value": 0.048,
                    "stableValue": 0.04,
                    "max": 0.5,
                    "maxIncrease": "20%",
                    "samples": 250,
                    "stableSamples": 740,
                    "minSamples": 100,
                    "window": "30s",
                    "result": "Passed",
                    "time": time,
                },
                {
                    "name": "prediction-drift",
                    "value": 0.04,
                    "max": 0.1,
                    "pValue": 0.62,
                    "samples": 2000,
                    "stableSamples": 5920,
                    "minSamples": 100,
                    "window": "30s",
                    "result": "Passed",
                    "time": time,
                    "message": "compared 2000 canary and 5920 stable predictions",
                },
                {
                    "name": "custom",
                    "min": 0.5,
                    "max": 2.5,
                    "result": "Inconclusive",
                    "time": time,
                    "message": "no data",
                },
            ],
            "contract": {
                "result": "Incompatible",
                "differences": ["input X: shape [-1,4] -> [-1,5]"],
                "time": time,
            },
            "windowStart": time,
            "startedAt": time,
            "stepStartedAt": time,
        },
        "history": [
            {
                "model": model,
                "result": "Promoted",
                "reason": "AnalysisPassed",
                "message": "all steps passed",
                "startedAt": "2025-01-01T00:00:00Z",
                "time": time,
            }
        ],
    }
