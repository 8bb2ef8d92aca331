"""`helm install` as a platform team runs it: the operator is a pod on the real node, acting
with the chart's ServiceAccount and RBAC, and a ModelDeployment applied afterwards is served
by real pods that it built."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from modeldeploy_dev.cluster.network import NODE_NAME
from tests.integration.chart.conftest import CHART, Helm
from tests.integration.node.conftest import StoredModel
from tests.integration.node.test_serving import infer, pods_of, serve


@pytest.fixture
def release(
    cluster: Any, helm: Helm, node_namespace: str, modeldeployment_crd: str
) -> Iterator[str]:
    """The chart installed with the images built from this checkout, watching the test's
    namespace; uninstalled afterwards."""
    name = f"op-{uuid.uuid4().hex[:6]}"
    release_namespace = cluster.create_namespace(f"{name}-system")
    repository, tag = cluster.images.ref("OPERATOR").rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag},
        "operator": {"serverImage": cluster.images.ref("SERVER")},
        "watchNamespaces": [node_namespace],
    }
    helm.run(
        "install", name, str(CHART), "-n", release_namespace, "--wait", "--timeout", "3m",
        "-f", helm.values_file(values), timeout=240,
    )  # fmt: skip
    yield release_namespace
    helm.run("uninstall", name, "-n", release_namespace, "--wait", check=False)
    cluster.kubectl("delete", "namespace", release_namespace, "--wait=false", check=False)


def test_the_charts_operator_pod_serves_a_model_on_real_pods(
    cluster: Any,
    release: str,
    node_namespace: str,
    classifier_in_store: StoredModel,
) -> None:
    operator_pods = json.loads(cluster.kubectl("get", "pods", "-n", release, "-o", "json").stdout)[
        "items"
    ]
    [pod] = operator_pods
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["containerStatuses"][0]["ready"]
    account = pod["spec"]["serviceAccountName"]
    assert account and account != "default"

    serve(cluster, node_namespace, classifier_in_store)
    [serving] = pods_of(cluster, node_namespace)
    assert serving["spec"]["containers"][0]["image"] == cluster.images.ref("SERVER")
    answer = infer(cluster, node_namespace, [[5.1, 3.5, 1.4, 0.2]])
    assert answer["model_name"] == "iris"
    # The operator's own log, from its pod: it acted as the chart's ServiceAccount.
    logs = cluster.kubectl("logs", pod["metadata"]["name"], "-n", release).stdout
    assert "iris" in logs
