"""Prometheus as on any cluster: it discovers the serving pods on the real node through the
Kubernetes API (the pods the operator annotates), the canary analysis reads it, and the chart's
alerting rules, loaded into it, fire on the pods' own metrics.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_dev.cluster.gateway import GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_URL
from tests.integration.chart.test_alerts import _rules
from tests.integration.node.test_serving import SMALL
from tests.integration.node.test_traffic import canary, stable_on
from tests.support.kubectl import apply_md, get
from tests.support.operator_process import OperatorProcess, wait_for
from tests.support.profiles import build_profile, classifier_training_rows
from tests.support.prometheus import Discovery, Prometheus
from tests.support.traffic import ClosedLoop

pytestmark = pytest.mark.integration

NAME = "iris"
OUT_OF_RANGE = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [90.0] * 4}]}


@pytest.fixture
def prometheus(cluster: Any, node_namespace: str, helm: Any, tmp_path: Path) -> Any:
    """The built Prometheus, discovering the test namespace's pods, with the chart's rules
    (short windows, so that they fire within the test)."""
    rules = _rules(
        helm,
        tmp_path,
        {
            "enabled": True,
            "kubeStateMetrics": False,
            "outOfProfileWindow": "20s",
            "outOfProfileFor": "0s",
        },
    )
    with Prometheus(
        tmp_path / "prometheus",
        binary=cluster.bin_dir / "prometheus",
        kubernetes=Discovery(cluster.kubeconfig, (node_namespace,)),
        rule_files=[rules],
    ) as running:
        yield running


def test_prometheus_discovers_the_pods_the_analysis_reads_it_and_the_chart_alerts_fire(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    gateway_api: Any,
    store: Any,
    models: dict[str, Path],
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    cluster.restore_gateway()
    secret = store.grant(node_namespace)
    profile = tmp_path / "model.profile.json"
    profile.write_text(json.dumps(build_profile(classifier_training_rows(), models["classifier"])))
    profile_uri, _ = store.upload(profile, f"{node_namespace}/model.profile.json")

    def model(n: int) -> dict[str, Any]:
        uri, digest = store.upload(models["classifier"], f"{node_namespace}/v{n}.onnx")
        return {
            "uri": uri,
            "sha256": digest,
            "credentialsSecret": secret,
            "version": f"v{n}",
            "profile": {
                "uri": profile_uri,
                "sha256": hashlib.sha256(profile.read_bytes()).hexdigest(),
            },
        }

    host = f"{NAME}.{node_namespace}.example"
    checks = {
        "interval": "3s",
        "failureLimit": 2,
        "prometheus": {"address": prometheus.url},
        "metrics": [
            {"name": "error-rate", "max": 0.05, "minSamples": 20},
            {"name": "latency-p99", "max": 2.0, "minSamples": 20},
        ],
    }

    def spec(n: int) -> dict[str, Any]:
        return {
            "model": model(n),
            "replicas": 1,
            "runtime": {"resources": SMALL},
            "rollout": {
                "strategy": "Canary",
                "steps": [{"setWeight": 50}, {"pause": {"duration": "12s"}}],
                "analysis": checks,
                "trafficRouting": {
                    "gatewayAPI": {
                        "parentRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}],
                        "hostnames": [host],
                    }
                },
            },
        }

    apply_md(cluster, node_namespace, NAME, spec(1))
    wait_for(lambda: stable_on(cluster, node_namespace, "v1"), 240, "v1 Ready")
    # Discovered through the API: the pod, with its namespace and track as labels.
    pod_targets = lambda: [  # noqa: E731
        t["labels"]
        for t in prometheus.targets()
        if t["health"] == "up" and t["labels"].get("namespace") == node_namespace
    ]
    found = wait_for(pod_targets, 60, "Prometheus to discover and scrape the pod")
    assert {labels.get("track") for labels in found} == {"stable"}, found

    passed: list[int] = []
    with ClosedLoop(GATEWAY_URL, NAME, host=host, clients=2) as load:
        apply_md(cluster, node_namespace, NAME, spec(2))

        def promoted() -> Any:
            md = get(cluster, "mdep", node_namespace, NAME)
            passed.append(int(canary(md).get("passedChecks", 0)))
            return stable_on(cluster, node_namespace, "v2")

        md = wait_for(promoted, 240, "the canary analysed and promoted")
    assert load.failed == 0, load.summary()
    assert max(passed) >= 1, "no analysis run passed before the promotion"
    last = md["status"]["history"][-1]
    assert last["result"] == "Promoted", last
    tracks = {labels.get("track") for labels in pod_targets()}
    assert "stable" in tracks, tracks

    # The chart's out-of-profile alert, evaluated by this Prometheus on the pods' metrics.
    def firing() -> list[dict[str, Any]]:
        return [
            a
            for a in prometheus.alerts()
            if a["labels"].get("alertname") == "ModelInputOutOfProfile"
            and a["labels"].get("namespace") == node_namespace
            and a["state"] == "firing"
        ]

    with ClosedLoop(GATEWAY_URL, NAME, host=host, clients=1, body=OUT_OF_RANGE) as load:
        alerts = wait_for(firing, 90, "ModelInputOutOfProfile to fire")
    assert load.failed == 0, load.summary()
    assert {a["labels"]["issue"] for a in alerts} == {"out_of_range"}, alerts
    assert {a["labels"]["deployment"] for a in alerts} == {NAME}, alerts
