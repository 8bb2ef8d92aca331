"""The HorizontalPodAutoscaler of a ModelDeployment on real CPU: metrics-server reads the real
kubelet's resource metrics of pods on the real node, and the HPA scales the stable Deployment
up under real load and back down once the load stops, with and without a canary in progress.

During a canary the operator leaves the stable Deployment's replicas to the HPA and sizes the
canary from them, so the two never fight: the stable Deployment's replicas always equal what
the HPA last asked for, and the canary follows its share.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_dev.cluster.gateway import GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_URL
from tests.integration.node.test_serving import SMALL, routed, service_address
from tests.support.kubectl import apply_md, condition, get
from tests.support.operator_process import OperatorProcess, wait_for
from tests.support.traffic import ClosedLoop, record

pytestmark = pytest.mark.integration

NAME = "iris"
MAX_REPLICAS = 3
CANARY_WEIGHT = 50


def spec(model: dict[str, Any], host: str) -> dict[str, Any]:
    return {
        "model": model,
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": MAX_REPLICAS,
            "targetCPUUtilization": 50,
        },
        "runtime": {"resources": SMALL},
        "rollout": {
            "strategy": "Canary",
            "steps": [{"setWeight": CANARY_WEIGHT}, {"pause": {}}],
            "trafficRouting": {
                "gatewayAPI": {
                    "parentRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}],
                    "hostnames": [host],
                }
            },
        },
    }


class Scaling:
    """What the HPA asked for and what the Deployments run, sampled while waiting; a stable
    Deployment whose replicas differ from the HPA's last decision for long would be a fight."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.seen: list[tuple[int, int, int]] = []  # (hpa desired, stable spec, canary spec)

    def sample(self) -> tuple[int, int, int]:
        hpa = get(self.cluster, "hpa", self.namespace, NAME) or {}
        stable = get(self.cluster, "deployment", self.namespace, NAME) or {}
        canary = get(self.cluster, "deployment", self.namespace, f"{NAME}-canary") or {}
        now = (
            int(hpa.get("status", {}).get("desiredReplicas", 0)),
            int(stable.get("spec", {}).get("replicas", 0)),
            int(canary.get("spec", {}).get("replicas", 0)) if canary else 0,
        )
        self.seen.append(now)
        return now

    def until(self, check: Any, timeout: float, what: str) -> None:
        wait_for(lambda: check(*self.sample()), timeout, what)


@pytest.fixture
def versions(store: Any, node_namespace: str, models: dict[str, Path]) -> Any:
    secret = store.grant(node_namespace)

    def model(n: int) -> dict[str, Any]:
        uri, digest = store.upload(models["classifier"], f"{node_namespace}/v{n}.onnx")
        return {"uri": uri, "sha256": digest, "credentialsSecret": secret, "version": f"v{n}"}

    return model


def test_the_hpa_scales_on_real_cpu_with_and_without_a_canary(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    gateway_api: Any,
    versions: Any,
) -> None:
    cluster.restore_gateway()
    host = f"{NAME}.{node_namespace}.example"
    apply_md(cluster, node_namespace, NAME, spec(versions(1), host))
    wait_for(
        lambda: (
            condition(get(cluster, "mdep", node_namespace, NAME), "Ready").get("status") == "True"
        ),
        240,
        "v1 Ready",
    )
    service = service_address(cluster, node_namespace)
    wait_for(lambda: routed(service), 60, "the Service to route")
    scaling = Scaling(cluster, node_namespace)

    # Real load through the Service: the pods' CPU rises far above half their 100m request.
    with ClosedLoop(service, NAME, clients=4, keep_alive=False) as load:
        scaling.until(lambda hpa, stable, _: hpa >= 2 and stable >= 2, 180, "the HPA to scale up")
    assert load.failed == 0, load.summary()
    scaling.until(lambda hpa, stable, _: hpa == 1 and stable == 1, 180, "the HPA to scale down")

    # A canary paused at 50%: the gateway sends it half the load, the stable pods the rest.
    apply_md(cluster, node_namespace, NAME, spec(versions(2), host))
    wait_for(
        lambda: (
            (get(cluster, "mdep", node_namespace, NAME) or {})
            .get("status", {})
            .get("canary", {})
            .get("state")
            == "Paused"
        ),
        180,
        "the canary paused at 50%",
    )
    started, seen_before = time.monotonic(), len(scaling.seen)
    with ClosedLoop(GATEWAY_URL, NAME, host=host, clients=4, keep_alive=False) as load:
        scaling.until(
            lambda hpa, stable, canary: (
                hpa >= 2 and stable == hpa and canary == math.ceil(stable * CANARY_WEIGHT / 100)
            ),
            180,
            "the stable track to scale up and the canary to follow its share",
        )
        up = time.monotonic() - started
    stopped = time.monotonic()
    assert load.failed == 0, load.summary()
    scaling.until(
        lambda hpa, stable, canary: hpa == 1 and stable == 1 and canary == 1,
        180,
        "both tracks back to one pod",
    )
    record(
        "autoscaling", phase="canary paused at 50 %", requests=load.sent, failed=load.failed,
        scale_up_seconds=round(up, 1), scale_down_seconds=round(time.monotonic() - stopped, 1),
        peak=max(s[1] for s in scaling.seen[seen_before:]),
    )  # fmt: skip
    md = get(cluster, "mdep", node_namespace, NAME) or {}
    assert md["status"]["canary"]["state"] == "Paused", md["status"]
    print(f"(hpa desired, stable replicas, canary replicas) sampled: {scaling.seen}")
    # No fight: the HPA alone owns the stable Deployment's replicas (the operator's apply
    # leaves the field out), while the operator owns the canary's.
    stable = json.loads(
        cluster.kubectl(
            "get", "deployment", NAME, "-n", node_namespace, "-o", "json",
            "--show-managed-fields",
        ).stdout
    )  # fmt: skip
    owners = {
        entry["manager"]
        for entry in stable["metadata"]["managedFields"]
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
    }
    assert "modeldeploy" not in owners, owners
