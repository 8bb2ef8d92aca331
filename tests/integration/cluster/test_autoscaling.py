"""An HPA really scales a Deployment on CPU usage that KWOK emulates (metrics.k8s.io is real)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _deployment(cpu_usage: str) -> dict[str, Any]:
    labels = {"app": "busy"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "busy"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    # KWOK reports this much CPU for each container of the pod.
                    "annotations": {"kwok.x-k8s.io/usage-cpu": cpu_usage},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "example.invalid/busy:1",
                            "resources": {"requests": {"cpu": "100m"}},
                        }
                    ]
                },
            },
        },
    }


def _replicas(cluster: Any, namespace: str) -> int:
    out = cluster.kubectl("get", "deployment", "busy", "-n", namespace, "-o", "json").stdout
    return int(json.loads(out)["spec"]["replicas"])


def test_hpa_scales_a_deployment_on_emulated_cpu(cluster: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(_deployment("90m")))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "busy"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50},
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(hpa))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and _replicas(cluster, namespace) < 2:
        time.sleep(1)
    scaled = _replicas(cluster, namespace)
    status = cluster.kubectl("get", "hpa", "busy", "-n", namespace, "-o", "yaml").stdout
    assert scaled >= 2, f"the HPA did not scale up (replicas {scaled}):\n{status}"
    # The resource-metrics API answers for the pods, as `kubectl top` shows.
    top = cluster.kubectl(
        "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
    )
    assert json.loads(top.stdout)["items"]
