"""The rollout's side of a reconcile: observe the tracks (their Deployments, their model
metadata until the contract is checked, the analysis from Prometheus), run one tick of the step
function, and turn its decision into the desired children (Deployments per track, the Service,
and per-track Services and the HTTPRoute for Gateway API routing)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from modeldeploy.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    ModelDeployment,
    ModelDeploymentStatus,
    ModelStatus,
)
from modeldeploy.builders import (
    CANARY,
    STABLE,
    Track,
    build_deployment,
    build_route,
    build_service,
    build_shadow_config,
    deployment_name,
    service_name,
)
from modeldeploy.builders.names import LABEL_DEPLOYMENT, LABEL_TRACK, name_of, namespace_of
from modeldeploy.builders.route import ROUTE_API_VERSION
from modeldeploy.config import OperatorConfig
from modeldeploy.kube import Kube
from modeldeploy.reconcilers.children import Refusal
from modeldeploy.reconcilers.observed_status import deployment_counts
from modeldeploy.reconcilers.pods import serving_address
from modeldeploy.rollout import Decision, Observations, advance, analysis_due
from modeldeploy.rollout.analysis import Prometheus, measure
from modeldeploy.rollout.contract import (
    ContractError,
    ContractReading,
    MetadataSource,
    ModelContract,
    ServerMetadata,
)
from modeldeploy.rollout.plan import (
    analysis_window,
    desired_model,
    model_key,
    same_model,
    template_hash,
)

__all__ = [
    "TARGET_ANNOTATION",
    "RolloutChildren",
    "plan_rollout",
    "routing_error",
    "with_routing_error",
]

TARGET_ANNOTATION = "serving.modeldeploy.io/target"
"""On each serving Deployment: ``model_key`` of the model and settings it runs."""

NO_PROMETHEUS = (
    "no Prometheus to read the analysis from: set spec.rollout.analysis.prometheus.address "
    "or the operator's --prometheus-address (MODELDEPLOY_PROMETHEUS_ADDRESS)"
)


@dataclass
class RolloutChildren:
    """A tick's decision and the children it asks for."""

    decision: Decision
    observations: Observations
    deployments: list[dict[str, Any]]
    service: dict[str, Any] | None = None
    """The main Service; it selects only the stable track while the canary has no traffic."""
    shadow_config: dict[str, Any] | None = None
    """The ConfigMap the stable pods read, for a rollout with shadow steps: the canary
    Service during a shadow step, else nothing to mirror to."""
    extra: list[dict[str, Any]] = field(default_factory=list)
    """Per-track Services and the HTTPRoute (Gateway API routing)."""
    absent: list[tuple[str, str, str]] = field(default_factory=list)
    """(apiVersion, kind, name) of children that must not exist."""
    canary_deployment: dict[str, Any] | None = None
    """The canary Deployment as observed before this tick."""


def _flag(md: ModelDeployment, annotation: str) -> bool:
    annotations = md.metadata.get("annotations") or {}
    return str(annotations.get(annotation, "")).strip().lower() == "true"


def serving(md: ModelDeployment, target: ModelStatus) -> ModelDeployment:
    """``md`` as it would be if its spec named ``target``'s model."""
    model = md.spec.model.model_copy(
        update={"uri": target.uri, "sha256": target.sha256, "version": target.version}
    )
    return md.model_copy(update={"spec": md.spec.model_copy(update={"model": model})})


def _runs(deployment: dict[str, Any] | None, *, complete: bool) -> str | None:
    """The target key a Deployment runs (all its pods ready and updated, and no pod of an
    older template left, when ``complete``)."""
    if deployment is None:
        return None
    key = (deployment["metadata"].get("annotations") or {}).get(TARGET_ANNOTATION)
    if not complete:
        return key
    want, ready, updated, _, observed = deployment_counts(deployment)
    pods = int(deployment.get("status", {}).get("replicas", 0))
    done = observed and updated >= want and ready >= want and pods <= want
    return key if done else None


def desired_deployment(
    md: ModelDeployment,
    track: Track,
    target: ModelStatus,
    settings: OperatorConfig,
    replicas: int | None,
    existing: dict[str, Any] | None,
) -> dict[str, Any]:
    """The Deployment of one track running ``target``.

    A target whose serving settings are no longer in the spec (the pod template changed while
    the stable track keeps the old one) keeps the pod template it runs now."""
    desired = build_deployment(serving(md, target), track, settings, replicas=replicas)
    stale = target.template_hash is not None and target.template_hash != template_hash(md)
    if stale and existing is not None:
        desired["spec"]["template"] = copy.deepcopy(existing["spec"]["template"])
    desired["metadata"].setdefault("annotations", {})[TARGET_ANNOTATION] = model_key(target)
    return desired


def _read_track(
    md: ModelDeployment, kube: Kube, track: Track, source: MetadataSource
) -> ModelContract:
    """The contract of one Ready pod of ``track`` (the first by name)."""
    selector = f"{LABEL_DEPLOYMENT}={name_of(md)},{LABEL_TRACK}={track}"
    pods = sorted(
        kube.list("v1", "Pod", namespace_of(md), selector),
        key=lambda pod: str(pod["metadata"].get("name")),
    )
    for pod in pods:
        address = serving_address(pod)
        if address is None:
            continue
        try:
            return source.read(address, md.served_model_name)
        except ContractError as error:
            raise ContractError(
                f"{track} pod {pod['metadata'].get('name')} ({address}): {error}"
            ) from error
    raise ContractError(f"no Ready {track} pod with an address to read")


def read_contract(
    md: ModelDeployment,
    kube: Kube,
    status: ModelDeploymentStatus,
    canary_now: dict[str, Any] | None,
    source: MetadataSource,
) -> ContractReading | None:
    """Both tracks' model metadata while the canary's contract is unchecked; None when it is
    checked already, or while the canary Deployment still has pods of another model."""
    canary = status.canary
    if canary is None or canary.contract is not None or canary.state == "Promoting":
        return None
    key = model_key(canary)
    if not same_model(canary, desired_model(md)):
        return None
    if _runs(canary_now, complete=True) != key:
        return None
    try:
        return ContractReading(
            stable=_read_track(md, kube, STABLE, source),
            canary=_read_track(md, kube, CANARY, source),
        )
    except ContractError as error:
        return ContractReading(error=f"cannot read the model metadata of the {error}")


def plan_rollout(
    md: ModelDeployment,
    kube: Kube,
    settings: OperatorConfig,
    status: ModelDeploymentStatus,
    now: datetime,
    metadata: MetadataSource | None = None,
) -> RolloutChildren:
    """Observe, decide, and build what this tick asks for (``metadata`` reads a serving pod's
    model metadata; by default over HTTP from the pod's address)."""
    namespace = namespace_of(md)
    stable_now = kube.get("apps/v1", "Deployment", namespace, deployment_name(md, STABLE))
    canary_now = None
    if status.canary is not None:
        canary_now = kube.get("apps/v1", "Deployment", namespace, deployment_name(md, CANARY))
    autoscaling = md.spec.autoscaling
    if autoscaling is not None:
        current = (stable_now or {}).get("spec", {}).get("replicas")
        total = int(current if current is not None else autoscaling.min_replicas)
    else:
        total = md.spec.replicas
    obs = Observations(
        now=now,
        stable_replicas=total,
        autoscaled=autoscaling is not None,
        stable_runs=_runs(stable_now, complete=True),
        promote=_flag(md, PROMOTE_ANNOTATION),
        abort=_flag(md, ABORT_ANNOTATION),
    )
    if status.canary is not None and _runs(canary_now, complete=False) == model_key(status.canary):
        obs.canary_ready = int((canary_now or {}).get("status", {}).get("readyReplicas", 0))
    if obs.canary_ready > 0 and md.spec.rollout.strategy == "Canary":
        source = metadata or ServerMetadata(settings.server_http_port, settings.server_metrics_port)
        obs.contract = read_contract(md, kube, status, canary_now, source)
    analysis = md.spec.rollout.analysis
    if analysis is not None and md.spec.rollout.strategy == "Canary":
        address = analysis.prometheus.address if analysis.prometheus else None
        address = address or settings.prometheus_address
        if not address:
            obs.analysis_error = NO_PROMETHEUS
        if analysis_due(md, status, now) and obs.canary_ready > 0:
            prometheus = Prometheus(address) if address else None
            window = analysis_window(md, status, now)
            obs.analysis = measure(
                md,
                prometheus,
                now,
                window=window,
                unavailable=NO_PROMETHEUS,
                shadowing=status.canary is not None and status.canary.state == "Shadowing",
                versions=(_version(status.canary), _version(status.stable)),
            )
            if not obs.analysis:
                obs.analysis = None  # only shadow metrics, and no shadow step under way
    decision = advance(md, status, obs)
    return _children(md, settings, decision, obs, stable_now, canary_now)


def _version(model: Any) -> str | None:
    """How a shadow gate's message names a track's model: "v2" for version 2."""
    version = getattr(model, "version", None)
    return f"v{str(version).removeprefix('v')}" if version else None


def with_routing_error(
    plan: RolloutChildren, md: ModelDeployment, status: ModelDeploymentStatus, error: str
) -> RolloutChildren:
    """The same tick decided again knowing the HTTPRoute could not be written: no weight moves.

    The analysis run already made is reused, not read again."""
    obs = replace(plan.observations, routing_error=error)
    plan.decision = advance(md, status, obs)
    plan.observations = obs
    return plan


def _children(
    md: ModelDeployment,
    settings: OperatorConfig,
    decision: Decision,
    obs: Observations,
    stable_now: dict[str, Any] | None,
    canary_now: dict[str, Any] | None,
) -> RolloutChildren:
    deployments = [
        desired_deployment(
            md, STABLE, decision.stable_target, settings, decision.stable_replicas, stable_now
        )
    ]
    absent: list[tuple[str, str, str]] = []
    if decision.canary_target is not None:
        deployments.append(
            desired_deployment(
                md, CANARY, decision.canary_target, settings, decision.canary_replicas, canary_now
            )
        )
    else:
        absent.append(("apps/v1", "Deployment", deployment_name(md, CANARY)))
    # The main Service selects the canary's pods only while traffic is meant to go to them:
    # not before its contract is checked and its first weight set, and not while it is being
    # removed (a rollback narrows the Service in the same pass that deletes the canary).
    sharing = decision.canary_target is not None and decision.weight > 0
    service = build_service(md, settings=settings, only=None if sharing else STABLE)
    extra: list[dict[str, Any]] = []
    route = build_route(md, decision.weight)
    steps = md.spec.rollout.steps or []
    # The stable pods mirror to the canary's own Service during shadow steps: it exists from
    # the start of a rollout that has one, so it has endpoints before the first copy.
    shadowed = decision.canary_target is not None and any(s.shadow for s in steps)
    if route is not None:
        extra += [build_service(md, STABLE, settings), build_service(md, CANARY, settings), route]
    else:
        absent.append(("v1", "Service", service_name(md, STABLE)))
        if shadowed:
            extra.append(build_service(md, CANARY, settings))
        else:
            absent.append(("v1", "Service", service_name(md, CANARY)))
        if md.spec.rollout.strategy == "Canary":
            # Not watched, so read each time: only where a route is likely to have existed
            # (the resync removes one left behind by a change of strategy).
            absent.append((ROUTE_API_VERSION, "HTTPRoute", name_of(md)))
    shadow_config = (
        build_shadow_config(md, decision.mirror) if any(s.shadow for s in steps) else None
    )
    return RolloutChildren(
        decision, obs, deployments, service, shadow_config, extra, absent, canary_now
    )


def routing_error(refusals: list[Refusal]) -> str | None:
    """A user-facing message when the HTTPRoute was refused (e.g. no Gateway API CRDs)."""
    for refusal in refusals:
        if refusal.kind != "HTTPRoute":
            continue
        if refusal.unserved:
            return (
                "the cluster has no Gateway API HTTPRoute (gateway.networking.k8s.io/v1): "
                "install the Gateway API CRDs, or remove spec.rollout.trafficRouting to split "
                "traffic by replica ratio"
            )
        return refusal.message
    return None
