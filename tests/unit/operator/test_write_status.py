"""Writing status: serialised once, written only when it differs from the stored one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from modeldeploy.api import ModelDeployment, ModelDeploymentStatus
from modeldeploy.kube import Kube
from modeldeploy.reconcilers import write_status
from modeldeploy.reconcilers.observed_status import Observed, compute_status
from tests.support.statuses import full_status

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class StatusKube:
    """Records the status patches the reconciler sends."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.patches.append(status)
        return {}


def body(status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "iris", "namespace": "ml", "generation": 2}}
    if status is not None:
        obj["status"] = status
    return obj


def write(
    stored: dict[str, Any] | None, status: ModelDeploymentStatus
) -> tuple[bool, list[dict[str, Any]], list[tuple[str, str, str]]]:
    kube, events = StatusKube(), []
    written = write_status(
        cast(Kube, kube), body(stored), status, lambda *event: events.append(event)
    )
    return written, kube.patches, events


def ready_status() -> ModelDeploymentStatus:
    md = ModelDeployment.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "ml", "generation": 2},
            "spec": {"model": {"uri": "https://m.example.com/a.onnx"}, "replicas": 1},
        }
    )
    deployment = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "updatedReplicas": 1,
        },
    }
    return compute_status(md, Observed(deployment=deployment), None, now=NOW)


def test_a_stored_status_read_back_through_the_models_is_not_written_again() -> None:
    stored = full_status()
    assert ModelDeploymentStatus.model_validate(stored).to_dict() == stored
    written, patches, events = write(stored, ModelDeploymentStatus.model_validate(stored))
    assert (written, patches, events) == (False, [], [])


def test_the_first_status_is_written_once_with_an_event_for_readiness() -> None:
    status = ready_status()
    written, patches, events = write(None, status)
    assert written and len(patches) == 1
    assert patches[0]["conditions"][0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert patches[0]["phase"] == "Ready" and "observedGeneration" in patches[0]
    assert [e[:2] for e in events] == [("Normal", "ModelServing")]
    # stored as written, it is at rest: the next pass writes nothing
    assert write(status.to_dict(), status) == (False, [], [])


def test_fields_the_new_status_drops_are_nulled_in_the_patch() -> None:
    stored = full_status()
    written, [patch], _ = write(stored, ready_status())
    assert written
    assert patch["canary"] is None and patch["history"] is None
    assert patch["stable"]["uri"] == "https://m.example.com/a.onnx"
    # never stored, but a remembered status may lack them: nulled all the same
    _, [patch], _ = write({}, ready_status().model_copy(update={"stable": None}))
    assert patch["stable"] is None and patch["canary"] is None and patch["history"] is None


def test_a_rollback_is_one_warning_not_also_a_ready_event() -> None:
    """A rollback turns Ready False and Degraded True, both with its reason and message: the
    Degraded Warning tells it; Ready adds no Event."""
    before = ready_status()
    after = ready_status()
    message = "Rolled back v2: shadow-slice-agreement = 0 (min 0.95)"
    conditions = []
    for condition in after.conditions or []:
        if condition.type == "Ready":
            condition = condition.model_copy(
                update={"status": "False", "reason": "AnalysisFailed", "message": message}
            )
        if condition.type == "Degraded":
            condition = condition.model_copy(
                update={"status": "True", "reason": "AnalysisFailed", "message": message}
            )
        conditions.append(condition)
    after = after.model_copy(update={"conditions": conditions})
    written, _, events = write(before.to_dict(), after)
    assert written
    assert events == [("Warning", "AnalysisFailed", message)]
