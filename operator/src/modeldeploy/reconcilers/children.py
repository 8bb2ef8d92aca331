"""Bring the children of one ModelDeployment to their desired state, in a fixed order.

Service, then the shadow config the stable pods mount, then Deployment(s), then autoscaler and
disruption budget (as KServe's raw-deployment reconciler does). Each child: build (pure),
compare with what exists, apply or do nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from modeldeploy.api import ModelDeployment
from modeldeploy.builders import (
    STABLE,
    build_autoscaler,
    build_deployment,
    build_disruption_budget,
    build_service,
    build_shadow_config,
    deployment_name,
    shadow_config_name,
)
from modeldeploy.builders.deployment import desired_replicas
from modeldeploy.builders.names import LABEL_DEPLOYMENT, LABEL_TRACK, name_of, namespace_of
from modeldeploy.config import OperatorConfig
from modeldeploy.kube import Kube, error_message, is_transient
from modeldeploy.reconcilers.compare import needs_apply, with_hash

log = logging.getLogger("modeldeploy.reconcile")


@dataclass(frozen=True)
class Refusal:
    """A child the API server would not take."""

    kind: str
    message: str
    unserved: bool = False
    """The API server does not serve the kind at all (e.g. its CRD is not installed)."""


@dataclass
class ChildResult:
    """What reconciling the children did and saw."""

    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    def refused(self, *, except_kind: str | None = None) -> list[str]:
        """The messages of the refusals (but those of ``except_kind``)."""
        return [r.message for r in self.refusals if r.kind != except_kind]


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def ensure(kube: Kube, desired: dict[str, Any], result: ChildResult) -> dict[str, Any] | None:
    """Apply ``desired`` if the existing object differs; returns the object as it now is."""
    desired = with_hash(desired)
    meta = desired["metadata"]
    existing = kube.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
    if not needs_apply(desired, existing):
        return existing
    try:
        current = kube.apply(desired)
    except ApiException as error:
        if is_transient(error):
            raise
        unserved = error.status == 404 and not existing
        reason = error_message(error)
        if unserved:
            reason = f"the API server does not serve {desired['apiVersion']} {desired['kind']}"
        message = f"the API server refused {_key(desired)}: {reason}"
        log.warning("child refused", extra={"child": _key(desired), "reason": message})
        result.refusals.append(Refusal(desired["kind"], message, unserved))
        return existing
    result.applied.append(_key(desired))
    return current


MayExist = Callable[[str, str, str], bool]
"""(kind, namespace, name) -> False when the child is known not to exist (no read needed)."""

UNWATCHED_KINDS = frozenset({"HTTPRoute"})
"""Children no watch reports (the Gateway API may not even be installed): always read."""


def _may_exist(
    kube: Kube, md: ModelDeployment, kind: str, name: str, may_exist: MayExist | None
) -> bool:
    """Whether the child exists (the cache's word when there is one, else a read)."""
    if may_exist is not None:
        return may_exist(kind, namespace_of(md), name)
    return kube.get("v1", kind, namespace_of(md), name) is not None


def ensure_absent(
    kube: Kube,
    api_version: str,
    kind: str,
    md: ModelDeployment,
    name: str,
    result: ChildResult,
    may_exist: MayExist | None = None,
) -> None:
    """Delete a child we own that is no longer wanted (e.g. the HPA after autoscaling is unset)."""
    if (
        may_exist is not None
        and kind not in UNWATCHED_KINDS
        and not may_exist(kind, namespace_of(md), name)
    ):
        return
    existing = kube.get(api_version, kind, namespace_of(md), name)
    if existing is None:
        return
    owners = existing["metadata"].get("ownerReferences", [])
    if not any(o.get("uid") == md.metadata.get("uid") for o in owners):
        return  # not ours: leave it alone
    if kube.delete(api_version, kind, namespace_of(md), name):
        result.deleted.append(f"{kind}/{name}")


def reconcile_children(
    md: ModelDeployment,
    kube: Kube,
    settings: OperatorConfig,
    *,
    deployments: list[dict[str, Any]] | None = None,
    service: dict[str, Any] | None = None,
    shadow_config: dict[str, Any] | None = None,
    extra: list[dict[str, Any]] | None = None,
    absent: list[tuple[str, str, str]] | None = None,
    may_exist: MayExist | None = None,
) -> ChildResult:
    """Service, shadow config, Deployment(s), routing, autoscaler, disruption budget: each as
    desired, in this order; then the children that must not exist are deleted.

    ``deployments`` replaces the single stable Deployment when a rollout manages the tracks,
    ``service`` the main Service (the rollout keeps a canary without traffic out of it),
    ``shadow_config`` the ConfigMap the stable pods read, for a rollout with shadow steps
    (without one it is written only to mirror nothing, where it exists; the pods mount it
    as optional, so a ModelDeployment that never shadows has none);
    ``extra`` (per-track Services, the HTTPRoute) is applied after them, so traffic moves only
    to pods that exist; ``absent`` lists (apiVersion, kind, name) of children to remove.
    """
    result = ChildResult()
    current_service = ensure(kube, service or build_service(md, settings=settings), result)
    if current_service is not None:
        result.objects["service"] = current_service
    if shadow_config is not None:
        ensure(kube, shadow_config, result)
    elif _may_exist(kube, md, "ConfigMap", shadow_config_name(md), may_exist):
        # Left by a rollout with shadow steps: the stable pods must mirror nothing now.
        ensure(kube, build_shadow_config(md), result)
    for deployment in deployments or [
        build_deployment(md, STABLE, settings, replicas=desired_replicas(md))
    ]:
        current = ensure(kube, deployment, result)
        if current is not None:
            result.objects[deployment["metadata"]["name"]] = current
    for child in extra or ():
        current = ensure(kube, child, result)
        if current is not None:
            result.objects[_key(child)] = current

    autoscaler = build_autoscaler(md)
    if autoscaler is not None:
        ensure(kube, autoscaler, result)
    else:
        ensure_absent(
            kube,
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            md,
            deployment_name(md, STABLE),
            result,
            may_exist,
        )
    budget = build_disruption_budget(md)
    if budget is not None:
        ensure(kube, budget, result)
    else:
        ensure_absent(kube, "policy/v1", "PodDisruptionBudget", md, name_of(md), result, may_exist)
    for api_version, kind, name in absent or ():
        ensure_absent(kube, api_version, kind, md, name, result, may_exist)
    return result


def serving_pods(kube: Kube, md: ModelDeployment, track: str = STABLE) -> list[dict[str, Any]]:
    """The pods of one track (to explain why they are not ready)."""
    selector = f"{LABEL_DEPLOYMENT}={name_of(md)},{LABEL_TRACK}={track}"
    return kube.list("v1", "Pod", namespace_of(md), selector)
