"""The HorizontalPodAutoscaler (autoscaling/v2) of the stable Deployment."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.builders.names import STABLE, child_metadata, deployment_name


def build_autoscaler(md: ModelDeployment) -> dict[str, Any] | None:
    """The HPA for ``md``, or None when autoscaling is not asked for.

    The CPU target comes first; user metrics and behavior are passed through verbatim (the API
    server validates them as part of the HPA).
    """
    scaling = md.spec.autoscaling
    if scaling is None:
        return None
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": scaling.target_cpu_utilization,
                },
            },
        }
    ]
    metrics += list(scaling.metrics or [])
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment_name(md, STABLE),
        },
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": metrics,
    }
    if scaling.behavior:
        spec["behavior"] = scaling.behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(md, deployment_name(md, STABLE), STABLE),
        "spec": spec,
    }
