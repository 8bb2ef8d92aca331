"""The Argo CD health check, run by a real Lua 5.1 interpreter (Argo CD's gopher-lua is 5.1).

Status samples come from the operator's own status code where it produces them, and are
written by hand for phases it does not produce yet (Paused: canary rollouts).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest

from modeldeploy.api import ModelDeployment
from modeldeploy.reconcilers.observed_status import Observed, compute_status, invalid_status

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "docs" / "argocd-health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD computes them: ``obj`` global, the script's return value."""
    runtime = lua51.LuaRuntime()
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(SCRIPT.read_text())
    return str(result["status"]), str(result["message"])


def model_deployment(generation: int = 3) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": generation},
            "spec": {"model": {"uri": "https://m.example.com/a.onnx"}, "replicas": 2},
        }
    )


def deployment(ready: int, updated: int = 2, **conditions: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": updated,
            "conditions": [{"type": k, **v} for k, v in conditions.items()],
        },
    }


def with_status(status: dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "serving.modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "generation": generation},
        "spec": {"model": {"uri": "https://m.example.com/a.onnx"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def operator_status(seen: Observed, generation: int = 3) -> dict[str, Any]:
    """The status the operator computes, as it stores it (what Argo CD reads)."""
    return compute_status(model_deployment(generation), seen, None, now=NOW).to_dict()


def test_every_pod_ready_for_the_current_generation_is_healthy() -> None:
    status = operator_status(Observed(deployment=deployment(2)))
    verdict, message = health(with_status(status))
    assert verdict == "Healthy"
    assert message == "2 of 2 pod(s) ready; serving https://m.example.com/a.onnx."


def test_a_ready_status_of_an_older_generation_is_still_progressing() -> None:
    status = operator_status(Observed(deployment=deployment(2)), generation=3)
    verdict, message = health(with_status(status, generation=4))
    assert (verdict, message) == (
        "Progressing",
        "Waiting for the operator to act on generation 4",
    )
    del status["observedGeneration"]
    assert health(with_status(status))[0] == "Progressing"


def test_no_status_yet_is_progressing() -> None:
    assert health(with_status(None)) == (
        "Progressing",
        "Waiting for the operator to report a status",
    )
    assert health(with_status({"observedGeneration": 3}))[0] == "Progressing"


def test_pods_coming_up_are_progressing_with_the_operators_words() -> None:
    pending = operator_status(Observed(deployment=deployment(0, updated=0)))
    assert pending["phase"] == "Pending"
    assert health(with_status(pending)) == (
        "Progressing",
        "Pending: 0 of 2 pod(s) updated, 0 ready.",
    )
    rolling = operator_status(Observed(deployment=deployment(1)))
    assert rolling["phase"] == "Progressing"
    assert health(with_status(rolling)) == (
        "Progressing",
        "Progressing: 2 of 2 pod(s) updated, 1 ready.",
    )


def test_a_paused_canary_is_progressing() -> None:
    status = {
        "observedGeneration": 3,
        "phase": "Paused",
        "conditions": [
            {
                "type": "Progressing",
                "status": "True",
                "reason": "CanaryPaused",
                "message": "Canary at 50 %: waiting for promote or abort.",
            }
        ],
    }
    assert health(with_status(status)) == (
        "Progressing",
        "Paused: Canary at 50 %: waiting for promote or abort.",
    )
    del status["conditions"]
    assert health(with_status(status)) == (
        "Progressing",
        "Paused: the canary waits to be promoted or aborted",
    )


def test_a_refused_child_fails_and_is_degraded_with_the_reason() -> None:
    status = operator_status(
        Observed(deployment=None, refused=["the API server refused Deployment/iris: quota"])
    )
    assert status["phase"] == "Failed"
    assert health(with_status(status)) == (
        "Degraded",
        "Failed: the API server refused Deployment/iris: quota",
    )


def test_a_rollout_past_its_deadline_is_degraded() -> None:
    stuck = deployment(
        1,
        Progressing={
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "iris-1" has timed out progressing.',
        },
    )
    status = operator_status(Observed(deployment=stuck))
    assert status["phase"] == "Degraded"
    assert health(with_status(status)) == (
        "Degraded",
        'Degraded: ReplicaSet "iris-1" has timed out progressing.',
    )


def test_an_invalid_spec_is_degraded_with_the_validation_message() -> None:
    status = invalid_status(3, "the spec is invalid: spec.replicas: too big", None, now=NOW)
    assert health(with_status(status.to_dict())) == (
        "Degraded",
        "Failed: the spec is invalid: spec.replicas: too big",
    )


@pytest.mark.parametrize("phase", ["Degraded", "Failed"])
def test_degraded_without_a_condition_still_says_so(phase: str) -> None:
    assert health(with_status({"observedGeneration": 3, "phase": phase})) == (
        "Degraded",
        f"{phase}: no reason reported",
    )


def test_an_unknown_phase_is_unknown_not_healthy() -> None:
    assert health(with_status({"observedGeneration": 3, "phase": "Exploded"})) == (
        "Unknown",
        "Unknown phase Exploded",
    )
