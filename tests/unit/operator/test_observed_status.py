"""Status from observations: conditions, phase, transitions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from modeldeploy.api import ModelDeployment, ModelDeploymentStatus, ModelStatus
from modeldeploy.reconcilers.observed_status import (
    Observed,
    compute_status,
    invalid_status,
    transitions,
)


def md() -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": 4},
            "spec": {
                "model": {"uri": "https://m.example.com/a.onnx", "version": "7"},
                "replicas": 2,
            },
        }
    )


def deployment(
    ready: int, updated: int = 2, replicas: int = 2, **conditions: Any
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 3},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 3,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": updated,
            "conditions": [{"type": k, **v} for k, v in conditions.items()],
        },
    }


T1, T2, T3 = (datetime(2026, 1, 1, 12, 0, second, tzinfo=UTC) for second in (1, 2, 3))


def conditions(status: ModelDeploymentStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions or []}


def test_all_ready_is_ready_and_records_the_stable_model() -> None:
    status = compute_status(md(), Observed(deployment=deployment(2)), None, now=T1)
    assert status.phase == "Ready"
    assert conditions(status) == {
        "Ready": ("True", "ModelServing"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert status.observed_generation == 4
    assert status.stable is not None and status.stable.template_hash is not None
    assert status.stable.model_dump(exclude={"template_hash"}, exclude_none=True) == {
        "uri": "https://m.example.com/a.onnx",
        "version": "7",
    }
    assert len(status.stable.template_hash) == 16
    assert status.selector == "serving.modeldeploy.io/deployment=iris"
    assert all(c.observed_generation == 4 for c in status.conditions or [])


def test_partly_ready_is_progressing_and_nothing_ready_is_pending() -> None:
    assert compute_status(md(), Observed(deployment=deployment(1)), None).phase == "Progressing"
    pending = compute_status(md(), Observed(deployment=deployment(0, updated=0)), None)
    assert pending.phase == "Pending"
    assert pending.stable is None


def test_unschedulable_pods_degrade_with_the_schedulers_words() -> None:
    pod = {
        "metadata": {"name": "iris-x"},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient cpu.",
                }
            ]
        },
    }
    status = compute_status(md(), Observed(deployment=deployment(0, 0), pods=[pod]), None)
    assert conditions(status)["Degraded"] == ("True", "PodsUnschedulable")
    degraded = status.condition("Degraded")
    assert degraded is not None and "Insufficient cpu" in degraded.message
    assert status.phase == "Degraded"


def test_progress_deadline_and_refused_children() -> None:
    stuck = deployment(
        1,
        Progressing={
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "too slow",
        },
    )
    assert (
        conditions(compute_status(md(), Observed(deployment=stuck), None))["Degraded"][1]
        == "ProgressDeadlineExceeded"
    )
    refused = compute_status(
        md(), Observed(refused=["the API server refused Deployment/iris: bad"]), None
    )
    assert refused.phase == "Failed"
    assert conditions(refused)["Ready"] == ("False", "ChildRefused")


def test_transition_time_moves_only_when_status_flips() -> None:
    first = compute_status(md(), Observed(deployment=deployment(1)), None, now=T1)
    again = compute_status(md(), Observed(deployment=deployment(1)), first, now=T2)
    assert again == first  # nothing changed: identical status, no write
    later = compute_status(md(), Observed(deployment=deployment(2)), first, now=T3)
    times = {c.type: c.last_transition_time for c in later.conditions or []}
    assert times["Ready"] == T3 and times["Available"] == T1
    changed = {c.type for c in transitions(first.conditions, later.conditions or [])}
    assert changed == {"Ready", "Progressing"}


def test_invalid_spec_is_failed_and_keeps_what_was_there() -> None:
    previous = ModelDeploymentStatus(stable=ModelStatus(uri="x"), phase="Ready")
    status = invalid_status(5, "spec.replicas: bad", previous, now=T1)
    assert status.phase == "Failed"
    assert status.stable == ModelStatus(uri="x")
    assert conditions(status)["Degraded"] == ("True", "InvalidSpec")
