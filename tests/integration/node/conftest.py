"""Tests on the real node: pods that really run the images built from this repository."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_dev.cluster.network import NODE_NAME
from modeldeploy_dev.cluster.store import ObjectStore
from tests.integration.chart.conftest import helm  # noqa: F401  (the chart tests' helm)
from tests.support.operator_process import OperatorProcess

OPERATOR_USER = "modeldeploy-operator"


@pytest.fixture(scope="session")
def real_node(cluster: Any) -> str:
    """The real node's name, once it reports Ready (``make cluster`` starts it)."""
    node = json.loads(cluster.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", f"node {NODE_NAME} is not Ready: {ready}"
    return NODE_NAME


@pytest.fixture(scope="session")
def store(cluster: Any, real_node: str) -> ObjectStore:
    return ObjectStore(cluster)


@dataclass(frozen=True)
class StoredModel:
    """A model in the object store, readable from the test's namespace."""

    uri: str
    sha256: str
    secret: str


@pytest.fixture
def classifier_in_store(
    store: ObjectStore, node_namespace: str, models: dict[str, Path]
) -> StoredModel:
    """The test classifier uploaded under the test's namespace, with the store's Secret."""
    uri, digest = store.upload(models["classifier"], f"{node_namespace}/classifier.onnx")
    return StoredModel(uri, digest, store.grant(node_namespace))


@pytest.fixture
def node_operator(
    cluster: Any, node_namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator watching the test's namespace, serving with the built server image."""
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    args = [
        "--namespace", node_namespace, "--standalone",
        "--server-image", cluster.images.ref("SERVER"),
    ]  # fmt: skip
    running = OperatorProcess(kubeconfig, args, tmp_path / "operator.log")
    running.start()
    yield running
    running.stop()
