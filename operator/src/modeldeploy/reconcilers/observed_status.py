"""Status that tells the truth: computed from what the children report, never assumed.

Pure functions: observations in, a status dict out. Conditions keep their
``lastTransitionTime`` unless their status flips, so an unchanged world yields an identical
status and the reconciler writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.builders.names import name_of, namespace_of, service_name
from modeldeploy.reconcilers.pods import pod_problems
from modeldeploy.rollout import Decision, Target
from modeldeploy.rollout.plan import iso

CONDITION_TYPES = ("Ready", "Available", "Progressing", "Degraded")


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
    status: str
    reason: str
    message: str


def now_iso() -> str:
    return iso(datetime.now(UTC))


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


def judge(md: ModelDeployment, seen: Observed) -> dict[str, Verdict]:
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
    serving = rollout.stable_target.describe() if rollout else md.spec.model.uri

    verdicts: dict[str, Verdict] = {}
    if problems:
        verdicts["Degraded"] = Verdict("True", problems[0][0], "; ".join(m for _, m in problems))
    else:
        verdicts["Degraded"] = Verdict("False", "AsExpected", "Nothing is wrong.")

    if available > 0:
        verdicts["Available"] = Verdict(
            "True", "MinimumReplicasAvailable", f"{available} pod(s) are serving the model."
        )
    else:
        verdicts["Available"] = Verdict("False", "NoReplicasAvailable", "No pod is serving yet.")

    done = seen.deployment is not None and observed and updated >= desired and ready >= desired
    if rollout is not None and rollout.progressing is not None:
        verdicts["Progressing"] = Verdict("True", *rollout.progressing)
    elif done:
        verdicts["Progressing"] = Verdict(
            "False", "RolloutComplete", f"All {desired} pod(s) run the current model."
        )
    elif problems and seen.deployment is None:
        verdicts["Progressing"] = Verdict("False", problems[0][0], problems[0][1])
    else:
        verdicts["Progressing"] = Verdict(
            "True",
            "RolloutInProgress",
            f"{updated} of {desired} pod(s) updated, {ready} ready.",
        )

    if done and not problems:
        verdicts["Ready"] = Verdict(
            "True",
            "ModelServing",
            f"{ready} of {desired} pod(s) ready; serving {serving}.",
        )
    elif problems:
        verdicts["Ready"] = Verdict("False", problems[0][0], problems[0][1])
    else:
        verdicts["Ready"] = Verdict(
            "False", "PodsNotReady", f"{ready} of {desired} pod(s) ready, {updated} updated."
        )
    return verdicts


def phase_of(verdicts: dict[str, Verdict], seen: Observed) -> str:
    """The one-word summary (see ``modeldeploy.api.Phase``)."""
    degraded = verdicts["Degraded"].status == "True"
    available = verdicts["Available"].status == "True"
    if degraded and not available and (seen.invalid_spec or seen.refused):
        return "Failed"
    if degraded:
        return "Degraded"
    canary = seen.rollout.canary if seen.rollout else None
    if canary:
        return "Paused" if canary.get("state") == "Paused" else "Progressing"
    if verdicts["Ready"].status == "True":
        return "Ready"
    return "Progressing" if available else "Pending"


def merge_conditions(
    previous: list[dict[str, Any]] | None,
    verdicts: dict[str, Verdict],
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """New conditions; ``lastTransitionTime`` moves only when a condition's status flips."""
    old = {c["type"]: c for c in previous or []}
    merged = []
    for kind in CONDITION_TYPES:
        verdict = verdicts[kind]
        before = old.get(kind)
        since = (
            before["lastTransitionTime"] if before and before["status"] == verdict.status else now
        )
        merged.append(
            {
                "type": kind,
                "status": verdict.status,
                "observedGeneration": generation,
                "lastTransitionTime": since,
                "reason": verdict.reason,
                "message": verdict.message[:1024],
            }
        )
    return merged


def compute_status(
    md: ModelDeployment,
    seen: Observed,
    previous: dict[str, Any] | None,
    *,
    now: str | None = None,
) -> dict[str, Any]:
    """The full ``.status`` for ``md``; previous rollout fields are carried over untouched."""
    previous = dict(previous or {})
    now = now or now_iso()
    verdicts = judge(md, seen)
    generation = int(md.metadata.get("generation", 0))
    desired, ready, _, _, _ = deployment_counts(seen.deployment)
    canary_desired, canary_ready, _, _, _ = deployment_counts(seen.canary)
    if seen.rollout is not None:
        kept = {
            "stable": seen.rollout.stable,
            "canary": seen.rollout.canary,
            "history": seen.rollout.history,
        }
        status: dict[str, Any] = {k: v for k, v in kept.items() if v}
    else:
        status = {k: previous[k] for k in ("stable", "canary", "history") if previous.get(k)}
    selector = ",".join(
        f"{k}={v}" for k, v in sorted({"serving.modeldeploy.io/deployment": name_of(md)}.items())
    )
    port = md.spec.service.port
    status.update(
        {
            "observedGeneration": generation,
            "phase": phase_of(verdicts, seen),
            "conditions": merge_conditions(previous.get("conditions"), verdicts, generation, now),
            "replicas": desired + canary_desired,
            "readyReplicas": ready + canary_ready,
            "selector": selector,
            "url": f"http://{service_name(md)}.{namespace_of(md)}.svc.cluster.local:{port}",
        }
    )
    rolling = md.spec.rollout.strategy != "Canary"
    if verdicts["Ready"].status == "True" and (rolling or "stable" not in status):
        # Rolling: the stable track is whatever is ready. Canary: only the first model is
        # recorded here; later ones become stable by promotion.
        status["stable"] = Target.of_spec(md).to_status()
    return status


def transitions(
    previous: list[dict[str, Any]] | None, current: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Conditions whose status or reason changed: each deserves an Event."""
    old = {c["type"]: (c["status"], c["reason"]) for c in previous or []}
    return [c for c in current if old.get(c["type"]) != (c["status"], c["reason"])]


def invalid_status(
    generation: int,
    message: str,
    previous: dict[str, Any] | None,
    *,
    now: str | None = None,
    reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """Status of an object the operator will not act on: Failed, with the reason (InvalidSpec:
    it cannot be parsed; PolicyViolation: the operator's policy refuses it), nothing else
    touched (children of an earlier acceptable spec keep serving)."""
    previous = dict(previous or {})
    verdicts = {
        "Ready": Verdict("False", reason, message),
        "Available": Verdict("Unknown", reason, "The spec cannot be acted on."),
        "Progressing": Verdict("False", reason, message),
        "Degraded": Verdict("True", reason, message),
    }
    status = {k: v for k, v in previous.items() if k not in ("conditions", "phase")}
    status.update(
        {
            "observedGeneration": generation,
            "phase": "Failed",
            "conditions": merge_conditions(
                previous.get("conditions"), verdicts, generation, now or now_iso()
            ),
        }
    )
    return status
