"""An HPA really scales a Deployment on CPU usage that KWOK emulates (metrics.k8s.io is real)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.manifests import cpu_hpa, deployment

pytestmark = pytest.mark.integration


def _replicas(cluster: Any, namespace: str) -> int:
    out = cluster.kubectl("get", "deployment", "busy", "-n", namespace, "-o", "json").stdout
    return int(json.loads(out)["spec"]["replicas"])


def test_hpa_scales_a_deployment_on_emulated_cpu(cluster: Any, namespace: str) -> None:
    # KWOK reports this much CPU for each container of the pods.
    busy = deployment("busy", annotations={"kwok.x-k8s.io/usage-cpu": "90m"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(busy))
    hpa = cpu_hpa("busy", utilization=50)
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
