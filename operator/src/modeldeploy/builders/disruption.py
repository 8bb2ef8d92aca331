"""The PodDisruptionBudget of the serving pods, when asked for."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.builders.names import child_metadata, name_of, selector_labels


def build_disruption_budget(md: ModelDeployment) -> dict[str, Any] | None:
    """The PDB covering every serving pod of ``md`` (all tracks), or None."""
    budget = md.spec.disruption_budget
    if budget is None:
        return None
    spec: dict[str, Any] = {"selector": {"matchLabels": selector_labels(md)}}
    if budget.min_available is not None:
        spec["minAvailable"] = budget.min_available
    if budget.max_unavailable is not None:
        spec["maxUnavailable"] = budget.max_unavailable
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(md, name_of(md)),
        "spec": spec,
    }
