"""The operator's policy: what a ModelDeployment may ask for through the operator's identity.

An author who may create ModelDeployments but not pods still chooses, through the operator,
the serving pods' image, ServiceAccount, PriorityClass and tolerations, the Secrets their
environment reads and the type of their Service. The platform team bounds these choices with
``settings.Policy`` (the chart's ``policy`` values). ``check_policy`` is pure: a spec in, the
rules it breaks out. The reconciler calls it before it writes any child; a spec that breaks a
rule gets nothing created or changed, and its status names the rule and the value.

Rules are named as the chart's values are (``policy.allowedImages``), so that the author can
tell the platform team which one stands in the way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from modeldeploy.api import ModelDeployment, parse_quantity
from modeldeploy.config import OperatorConfig

__all__ = ["Violation", "check_policy", "image_allowed", "policy_message"]

SYSTEM_PRIORITY_PREFIX = "system-"
"""Kubernetes reserves this prefix for its built-in PriorityClasses (system-cluster-critical,
system-node-critical), which may preempt almost anything on a node."""
TOLERATIONS_ALLOWED = {
    "None": "no tolerations",
    "Keyed": "tolerations that name the taint key they tolerate (a toleration without a key "
    "tolerates every taint)",
}
DOWNWARD_API_SOURCES = frozenset({"fieldRef", "resourceFieldRef"})
"""valueFrom sources that read the pod itself, not a Secret or ConfigMap: always allowed."""


@dataclass(frozen=True)
class Violation:
    """One rule of the policy a spec breaks."""

    rule: str
    """The policy value, as the chart names it (``policy.allowedImages``)."""
    field: str
    """Where the spec asks for it (``spec.runtime.image``)."""
    value: str
    """What the spec asks for."""
    allowed: str
    """What the rule allows, in words."""

    def message(self) -> str:
        return f"{self.field} {self.value!r} is refused by {self.rule}: {self.allowed}"


def image_allowed(image: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``image`` is one of ``allowed`` or under one of them.

    An entry is a registry (``registry.example.com``), a repository path or an image: it
    matches itself, and names that continue it after a '/', ':' or '@', so that
    ``registry.example.com`` does not match ``registry.example.com.attacker.io/x`` (it does
    match the same host's other ports). An entry ending in '/' matches every name that starts
    with it. Names are compared as written: ``nginx`` is not ``docker.io/library/nginx``.
    """
    for entry in allowed:
        if image == entry:
            return True
        if image.startswith(entry) and (entry.endswith("/") or image[len(entry)] in "/:@"):
            return True
    return False


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names)


def _image(md: ModelDeployment, settings: OperatorConfig) -> Iterator[Violation]:
    allowed = settings.policy.allowed_images
    image = md.spec.runtime.image if md.spec.runtime else None
    if allowed and image and image != settings.server_image and not image_allowed(image, allowed):
        yield Violation(
            "policy.allowedImages",
            "spec.runtime.image",
            image,
            f"images under {_listed(allowed)} (or none: the operator's serving image)",
        )


def _service_account(md: ModelDeployment, settings: OperatorConfig) -> Iterator[Violation]:
    allowed = settings.policy.allowed_service_accounts
    template = md.spec.pod_template
    account = template.service_account_name if template else None
    if allowed and account and account not in allowed:
        yield Violation(
            "policy.allowedServiceAccounts",
            "spec.podTemplate.serviceAccountName",
            account,
            f"one of {_listed(allowed)} (or none: the namespace's default)",
        )


def _priority_class(md: ModelDeployment, settings: OperatorConfig) -> Iterator[Violation]:
    allowed = settings.policy.allowed_priority_classes
    template = md.spec.pod_template
    name = template.priority_class_name if template else None
    if name and (name not in allowed if allowed else name.startswith(SYSTEM_PRIORITY_PREFIX)):
        yield Violation(
            "policy.allowedPriorityClasses",
            "spec.podTemplate.priorityClassName",
            name,
            f"one of {_listed(allowed)}"
            if allowed
            else f"any PriorityClass but the built-in {SYSTEM_PRIORITY_PREFIX}* ones unless listed",
        )


def _env_value_from(md: ModelDeployment, settings: OperatorConfig) -> Iterator[Violation]:
    if settings.policy.allow_env_value_from or not md.spec.runtime:
        return
    for variable in md.spec.runtime.env or ():
        source: Any = (variable.model_extra or {}).get("valueFrom") or {}
        kinds = sorted(set(source) - DOWNWARD_API_SOURCES) if isinstance(source, dict) else []
        if kinds:
            yield Violation(
                "policy.allowEnvValueFrom",
                f"spec.runtime.env[{variable.name}].valueFrom",
                kinds[0],
                "no Secret or ConfigMap references (fieldRef and resourceFieldRef only)",
            )


def _load_balancer(md: ModelDeployment, settings: OperatorConfig) -> Iterator[Violation]:
    if not settings.policy.allow_load_balancer and md.spec.service.type == "LoadBalancer":
        yield Violation(
            "policy.allowLoadBalancer", "spec.service.type", "LoadBalancer", "ClusterIP or NodePort"
        )


def _tolerations(md: ModelDeployment, settings: OperatorConfig) -> Iterator[Violation]:
    rule = settings.policy.tolerations
    template = md.spec.pod_template
    for index, toleration in enumerate((template.tolerations if template else None) or ()):
        if rule == "None" or (rule == "Keyed" and not toleration.get("key")):
            yield Violation(
                "policy.tolerations",
                f"spec.podTemplate.tolerations[{index}]",
                json.dumps(toleration, sort_keys=True, separators=(",", ":")),
                TOLERATIONS_ALLOWED[rule],
            )


def _model_size(md: ModelDeployment, settings: OperatorConfig) -> Iterator[Violation]:
    cap = settings.policy.max_model_size
    given = md.spec.model.size_limit
    if cap and given is not None and parse_quantity(given) > parse_quantity(cap):
        yield Violation("policy.maxModelSize", "spec.model.sizeLimit", str(given), f"at most {cap}")


RULES: tuple[Callable[[ModelDeployment, OperatorConfig], Iterator[Violation]], ...] = (
    _image,
    _service_account,
    _priority_class,
    _env_value_from,
    _load_balancer,
    _tolerations,
    _model_size,
)


def check_policy(md: ModelDeployment, settings: OperatorConfig) -> list[Violation]:
    """Every rule of ``settings.policy`` that ``md`` breaks, in the order of the spec."""
    return [violation for rule in RULES for violation in rule(md, settings)]


def policy_message(violations: list[Violation]) -> str:
    """The status message of a refused spec: each broken rule with the offending value."""
    return "refused by the operator's policy, nothing is created or changed: " + "; ".join(
        v.message() for v in violations
    )
