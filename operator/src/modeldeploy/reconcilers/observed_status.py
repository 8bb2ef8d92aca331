"""Status that tells the truth: computed from what the children report, never assumed.

Pure functions: observations in, a ``ModelDeploymentStatus`` out. Conditions keep their
``lastTransitionTime`` unless their status flips, so an unchanged world yields an identical
status and the reconciler writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from modeldeploy.api import (
    Condition,
    ConditionType,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
)
from modeldeploy.builders.names import name_of, namespace_of, service_name
from modeldeploy.reconcilers.pods import pod_problems
from modeldeploy.rollout import Decision
from modeldeploy.rollout.plan import describe_model, desired_model
from modeldeploy.rollout.state import stamp


@dataclass
class Observed:
    """What the reconciler saw of the children this time."""

    deployment: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    """The canary Deployment, while a rollout wants one."""
    pods: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Messages of children the API server refused."""
    invalid_spec: str | None = None
    """Why the spec could not be parsed (objects admitted before a stricter schema)."""
    rollout: Decision | None = None
    """This tick's rollout decision (stable/canary/history and rollout conditions)."""


@dataclass(frozen=True)
class Verdict:
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


def _deployment_condition(deployment: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in deployment.get("status", {}).get("conditions", []):
        if condition.get("type") == kind:
            return dict(condition)
    return None


def deployment_counts(deployment: dict[str, Any] | None) -> tuple[int, int, int, int, bool]:
    """(desired, ready, updated, available, observed) of a Deployment."""
    if deployment is None:
        return 0, 0, 0, 0, False
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    desired = int(spec.get("replicas", 1))
    observed = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
    return (
        desired,
        int(status.get("readyReplicas", 0)),
        int(status.get("updatedReplicas", 0)),
        int(status.get("availableReplicas", 0)),
        observed,
    )


def judge(md: ModelDeployment, seen: Observed) -> dict[ConditionType, Verdict]:
    """The four conditions, decided from the observations."""
    desired, ready, updated, available, observed = deployment_counts(seen.deployment)
    problems: list[tuple[str, str]] = []
    if seen.invalid_spec:
        problems.append(("InvalidSpec", seen.invalid_spec))
    if seen.refused:
        problems.append(("ChildRefused", "; ".join(seen.refused)))
    problems += pod_problems(seen.pods)
    progressing = _deployment_condition(seen.deployment or {}, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        problems.append(("ProgressDeadlineExceeded", str(progressing.get("message", ""))))
    failure = _deployment_condition(seen.deployment or {}, "ReplicaFailure")
    if failure and failure.get("status") == "True":
        problems.append(("ReplicaFailure", str(failure.get("message", ""))))
    rollout = seen.rollout
    if rollout is not None and rollout.degraded is not None:
        problems.append(rollout.degraded)
    serving = describe_model(rollout.stable_target) if rollout else md.spec.model.uri

    verdicts: dict[ConditionType, Verdict] = {}
    if problems:
        verdicts[ConditionType.DEGRADED] = Verdict(
            "True", problems[0][0], "; ".join(m for _, m in problems)
        )
    else:
        verdicts[ConditionType.DEGRADED] = Verdict("False", "AsExpected", "Nothing is wrong.")

    if available > 0:
        verdicts[ConditionType.AVAILABLE] = Verdict(
            "True", "MinimumReplicasAvailable", f"{available} pod(s) are serving the model."
        )
    else:
        verdicts[ConditionType.AVAILABLE] = Verdict(
            "False", "NoReplicasAvailable", "No pod is serving yet."
        )

    done = seen.deployment is not None and observed and updated >= desired and ready >= desired
    if rollout is not None and rollout.progressing is not None:
        verdicts[ConditionType.PROGRESSING] = Verdict("True", *rollout.progressing)
    elif done:
        verdicts[ConditionType.PROGRESSING] = Verdict(
            "False", "RolloutComplete", f"All {desired} pod(s) run the current model."
        )
    elif problems and seen.deployment is None:
        verdicts[ConditionType.PROGRESSING] = Verdict("False", problems[0][0], problems[0][1])
    else:
        verdicts[ConditionType.PROGRESSING] = Verdict(
            "True",
            "RolloutInProgress",
            f"{updated} of {desired} pod(s) updated, {ready} ready.",
        )

    if done and not problems:
        verdicts[ConditionType.READY] = Verdict(
            "True",
            "ModelServing",
            f"{ready} of {desired} pod(s) ready; serving {serving}.",
        )
    elif problems:
        verdicts[ConditionType.READY] = Verdict("False", problems[0][0], problems[0][1])
    else:
        verdicts[ConditionType.READY] = Verdict(
            "False", "PodsNotReady", f"{ready} of {desired} pod(s) ready, {updated} updated."
        )
    return verdicts


def phase_of(verdicts: dict[ConditionType, Verdict], seen: Observed) -> Phase:
    """The one-word summary (see ``modeldeploy.api.Phase``)."""
    degraded = verdicts[ConditionType.DEGRADED].status == "True"
    available = verdicts[ConditionType.AVAILABLE].status == "True"
    if degraded and not available and (seen.invalid_spec or seen.refused):
        return Phase.FAILED
    if degraded:
        return Phase.DEGRADED
    canary = seen.rollout.canary if seen.rollout else None
    if canary is not None:
        return Phase.PAUSED if canary.state == "Paused" else Phase.PROGRESSING
    if verdicts[ConditionType.READY].status == "True":
        return Phase.READY
    return Phase.PROGRESSING if available else Phase.PENDING


def merge_conditions(
    previous: list[Condition] | None,
    verdicts: dict[ConditionType, Verdict],
    generation: int,
    now: datetime,
) -> list[Condition]:
    """New conditions; ``lastTransitionTime`` moves only when a condition's status flips."""
    old = {c.type: c for c in previous or []}
    merged = []
    for kind in ConditionType:
        verdict = verdicts[kind]
        before = old.get(kind)
        since = before.last_transition_time if before and before.status == verdict.status else now
        merged.append(
            Condition(
                type=kind.value,
                status=verdict.status,
                observed_generation=generation,
                last_transition_time=since,
                reason=verdict.reason,
                message=verdict.message[:1024],
            )
        )
    return merged


def compute_status(
    md: ModelDeployment,
    seen: Observed,
    previous: ModelDeploymentStatus | None,
    *,
    now: datetime | None = None,
) -> ModelDeploymentStatus:
    """The full ``.status`` for ``md``; previous rollout fields are carried over untouched."""
    previous = previous or ModelDeploymentStatus()
    now = stamp(now or datetime.now(UTC))
    verdicts = judge(md, seen)
    generation = int(md.metadata.get("generation", 0))
    desired, ready, _, _, _ = deployment_counts(seen.deployment)
    canary_desired, canary_ready, _, _, _ = deployment_counts(seen.canary)
    kept = seen.rollout or previous
    selector = ",".join(
        f"{k}={v}" for k, v in sorted({"serving.modeldeploy.io/deployment": name_of(md)}.items())
    )
    port = md.spec.service.port
    status = ModelDeploymentStatus(
        observed_generation=generation,
        phase=phase_of(verdicts, seen),
        conditions=merge_conditions(previous.conditions, verdicts, generation, now),
        replicas=desired + canary_desired,
        ready_replicas=ready + canary_ready,
        selector=selector,
        url=f"http://{service_name(md)}.{namespace_of(md)}.svc.cluster.local:{port}",
        stable=kept.stable,
        canary=kept.canary,
        history=kept.history or None,
    )
    rolling = md.spec.rollout.strategy != "Canary"
    if verdicts[ConditionType.READY].status == "True" and (rolling or status.stable is None):
        # Rolling: the stable track is whatever is ready. Canary: only the first model is
        # recorded here; later ones become stable by promotion.
        status.stable = desired_model(md)
    return status


def transitions(previous: list[Condition] | None, current: list[Condition]) -> list[Condition]:
    """Conditions whose status or reason changed: each deserves an Event."""
    old = {c.type: (c.status, c.reason) for c in previous or []}
    return [c for c in current if old.get(c.type) != (c.status, c.reason)]


def invalid_status(
    generation: int,
    message: str,
    previous: ModelDeploymentStatus | None,
    *,
    now: datetime | None = None,
    reason: str = "InvalidSpec",
) -> ModelDeploymentStatus:
    """Status of an object the operator will not act on: Failed, with the reason (InvalidSpec:
    it cannot be parsed; PolicyViolation: the operator's policy refuses it), nothing else
    touched (children of an earlier acceptable spec keep serving)."""
    previous = previous or ModelDeploymentStatus()
    verdicts = {
        ConditionType.READY: Verdict("False", reason, message),
        ConditionType.AVAILABLE: Verdict("Unknown", reason, "The spec cannot be acted on."),
        ConditionType.PROGRESSING: Verdict("False", reason, message),
        ConditionType.DEGRADED: Verdict("True", reason, message),
    }
    conditions = merge_conditions(
        previous.conditions, verdicts, generation, stamp(now or datetime.now(UTC))
    )
    return previous.model_copy(
        update={"observed_generation": generation, "phase": Phase.FAILED, "conditions": conditions}
    )
