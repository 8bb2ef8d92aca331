"""Small Kubernetes manifests the control-plane tests apply."""

from __future__ import annotations

from typing import Any


def deployment(
    name: str, *, replicas: int = 1, cpu: str = "100m", annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Deployment of a placeholder image (KWOK runs no containers)."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations or {}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": f"example.invalid/{name}:1",
                            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


def cpu_hpa(name: str, *, utilization: int, max_replicas: int = 4) -> dict[str, Any]:
    """An autoscaling/v2 HPA of Deployment ``name`` on CPU utilization."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": utilization},
                    },
                }
            ],
        },
    }
