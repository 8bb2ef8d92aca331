"""Reconcile one ModelDeployment: children to their desired state, then a truthful status."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modeldeploy.api import (
    ABORT_ANNOTATION,
    API_VERSION,
    KIND,
    PROMOTE_ANNOTATION,
    ConditionType,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
)
from modeldeploy.builders import CANARY, STABLE, deployment_name
from modeldeploy.builders.names import name_of, namespace_of
from modeldeploy.config import OperatorConfig
from modeldeploy.kube import Kube
from modeldeploy.policy import check_policy, policy_message
from modeldeploy.reconcilers.children import MayExist, reconcile_children, serving_pods
from modeldeploy.reconcilers.observed_status import (
    Observed,
    compute_status,
    invalid_status,
    transitions,
)
from modeldeploy.reconcilers.rollout_children import plan_rollout, routing_error, with_routing_error

__all__ = ["EventSink", "MayExist", "Outcome", "plain", "reconcile", "write_status"]

log = logging.getLogger("modeldeploy.reconcile")

EventSink = Callable[[str, str, str], None]
"""(type Normal|Warning, reason, message) -> posts an Event about the ModelDeployment."""


@dataclass
class Outcome:
    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    status_written: bool = False
    phase: Phase | None = None
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    """The status now stored on the object."""
    requeue_after: float | None = None
    """Seconds after which the object must be reconciled again even if nothing changes
    (a rollout's next analysis run, the end of a timed pause); None when events suffice."""


def plain(value: Any) -> Any:
    """Plain dicts and lists from kopf's mapping views (or anything mapping-like)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _validation_message(error: ValidationError) -> str:
    parts = []
    for problem in error.errors()[:5]:
        where = ".".join(str(p) for p in problem["loc"])
        parts.append(f"{where}: {problem['msg']}")
    return "the spec is invalid: " + "; ".join(parts)


def _stored(status: dict[str, Any]) -> ModelDeploymentStatus | None:
    """The stored status, read through the API model; None if it cannot be (the API server
    validates status too, so only a hand-edited object gets here): nothing of it is kept."""
    try:
        return ModelDeploymentStatus.model_validate(status)
    except ValidationError:
        return None


def write_status(
    kube: Kube,
    body: dict[str, Any],
    status: ModelDeploymentStatus,
    emit: EventSink,
) -> bool:
    """Write ``status`` if it differs from the stored one (one request); post an Event per
    condition transition. Returns whether anything was written.

    The one place status is serialised (``to_dict``: camelCase, unset fields left out): the
    stored status and the new one are compared as the API stores them, so an unchanged world
    writes nothing."""
    previous = body.get("status") or {}
    wire = status.to_dict()
    if wire == previous:
        return False
    meta = body["metadata"]
    # Null what this status drops, even if the remembered previous status lacked it.
    dropped = (set(previous) | {"canary", "stable", "history"}) - set(wire)
    patch = {**dict.fromkeys(dropped), **wire}
    kube.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], patch)
    before = (_stored(previous) or ModelDeploymentStatus()).conditions
    was_true = {c.type for c in before or [] if c.status == "True"}
    watched = (ConditionType.READY, ConditionType.DEGRADED)
    changed = transitions(before, status.conditions or [])
    # A problem that Ready reports too (a rollback: Ready turns False with its reason) is
    # told once, as the Degraded Warning.
    warned = {c.reason for c in changed if c.type == ConditionType.DEGRADED and c.status == "True"}
    for condition in changed:
        kind, state = condition.type, condition.status
        if kind == ConditionType.DEGRADED and state == "True":
            emit("Warning", condition.reason, condition.message)
        elif kind == ConditionType.READY and condition.reason in warned:
            continue
        elif kind == ConditionType.READY and state == "True":
            emit("Normal", condition.reason, condition.message)
        elif kind in watched and kind in was_true:
            # Lost readiness, or recovered from a problem: worth an Event. A new object's
            # first "not ready yet" is not.
            emit("Normal", condition.reason, condition.message)
    return True


def clear_rollout_annotations(kube: Kube, md: ModelDeployment) -> None:
    """Remove the promote/abort annotations once acted on, so they act exactly once."""
    annotations = md.metadata.get("annotations") or {}
    patch = {k: None for k in (PROMOTE_ANNOTATION, ABORT_ANNOTATION) if k in annotations}
    if patch:
        kube.patch(
            API_VERSION, KIND, namespace_of(md), name_of(md), {"metadata": {"annotations": patch}}
        )


def _refuse(kube: Kube, raw: dict[str, Any], emit: EventSink, reason: str, message: str) -> Outcome:
    """Report a spec the operator will not act on (Failed, Degraded with ``reason``, a
    Warning Event on the transition) and leave its children as they are."""
    generation = int(raw["metadata"].get("generation", 0))
    status = invalid_status(generation, message, _stored(raw.get("status") or {}), reason=reason)
    outcome = Outcome(phase=Phase.FAILED, status=status)
    outcome.status_written = write_status(kube, raw, status, emit)
    return outcome


def reconcile(
    body: Mapping[str, Any],
    kube: Kube,
    settings: OperatorConfig,
    emit: EventSink,
    *,
    known_status: ModelDeploymentStatus | None = None,
    may_exist: MayExist | None = None,
) -> Outcome:
    """One level-based pass over a ModelDeployment. Raises only for transient API errors.

    ``known_status`` is the status this operator last wrote, fresher than a cached ``body``;
    ``may_exist`` says which unwanted children need not be read to know they are absent.
    """
    raw = plain(body)
    if known_status is not None:
        raw["status"] = known_status.to_dict()
    try:
        md = ModelDeployment.model_validate(raw)
    except ValidationError as error:
        return _refuse(kube, raw, emit, "InvalidSpec", _validation_message(error))
    violations = check_policy(md, settings)
    if violations:
        # Before any child is built or read: a refused spec changes nothing in the cluster.
        return _refuse(kube, raw, emit, "PolicyViolation", policy_message(violations))

    outcome = Outcome()

    previous = md.status or ModelDeploymentStatus()
    now = datetime.now(UTC)
    plan = plan_rollout(md, kube, settings, previous, now)
    children = reconcile_children(
        md,
        kube,
        settings,
        deployments=plan.deployments,
        service=plan.service,
        shadow_config=plan.shadow_config,
        extra=plan.extra,
        absent=plan.absent,
        may_exist=may_exist,
    )
    problem = routing_error(children.refusals)
    if problem is not None:  # reported as the rollout's problem, not as a refused child
        plan = with_routing_error(plan, md, previous, problem)
    outcome.applied, outcome.deleted = children.applied, children.deleted
    deployment = children.objects.get(deployment_name(md, STABLE))
    canary = children.objects.get(deployment_name(md, CANARY))
    seen = Observed(
        deployment=deployment,
        canary=canary if plan.decision.canary_target is not None else None,
        refused=children.refused(except_kind="HTTPRoute" if problem else None),
        rollout=plan.decision,
    )
    ready = (deployment or {}).get("status", {}).get("readyReplicas", 0)
    wanted = (deployment or {}).get("spec", {}).get("replicas", 1)
    if deployment is not None and ready < wanted:
        seen.pods = serving_pods(kube, md)
    status = compute_status(md, seen, previous, now=now)
    told: set[tuple[str, str]] = set()

    def emit_once(kind: str, reason: str, message: str) -> None:
        """One Event per kind and reason in a pass: a rollback's Warning says what the
        Degraded condition's Warning says already."""
        if (kind, reason) not in told:
            told.add((kind, reason))
            emit(kind, reason, message)

    outcome.status_written = write_status(kube, raw, status, emit_once)
    for kind, reason, message in plan.decision.events:
        emit_once(kind, reason, message)
    if plan.decision.clear_annotations:
        clear_rollout_annotations(kube, md)
    outcome.phase, outcome.status = status.phase, status
    outcome.requeue_after = plan.decision.requeue_after
    if outcome.applied or outcome.deleted or outcome.status_written:
        log.info(
            "reconciled",
            extra={
                "namespace": namespace_of(md),
                "modeldeployment": name_of(md),
                "applied": outcome.applied,
                "deleted": outcome.deleted,
                "phase": outcome.phase,
            },
        )
    return outcome
