"""The contract check on real pods: the operator reads the model metadata of a Ready canary pod
and a Ready stable pod by their pod IPs, and a canary whose model expects 5 features where
stable expects 4 is rolled back before any client reaches it. Clients keep calling the
ModelDeployment's Service all along, and every answer comes from the stable model.

Runs on the local cluster's real node (the images built by ``make images``, models from its
object store).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_dev.cluster.store import ObjectStore
from tests.integration.node.test_serving import routed, service_address
from tests.support.kubectl import apply_md, condition, get
from tests.support.onnx_models import make_classifier
from tests.support.operator_process import OperatorProcess, wait_for

pytestmark = pytest.mark.integration

SMALL = {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}}


def infer(address: str) -> int:
    """One 4-feature request through the Service: the HTTP status (0 for no answer)."""
    body = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}
    request = urllib.request.Request(
        f"{address}/v2/models/iris/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def test_a_real_canary_expecting_five_features_never_reaches_a_client(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    store: ObjectStore,
    tmp_path: Path,
) -> None:
    secret = store.grant(node_namespace)
    four, four_sha = store.upload(make_classifier(tmp_path / "4.onnx"), f"{node_namespace}/4.onnx")
    five, five_sha = store.upload(
        make_classifier(tmp_path / "5.onnx", n_features=5), f"{node_namespace}/5.onnx"
    )
    spec = {
        "model": {"uri": four, "sha256": four_sha, "credentialsSecret": secret},
        "replicas": 1,
        "runtime": {"resources": SMALL},
        "rollout": {"strategy": "Canary", "steps": [{"setWeight": 50}, {"pause": {}}]},
    }
    apply_md(cluster, node_namespace, "iris", spec)
    ready = lambda: condition(get(cluster, "mdep", node_namespace, "iris"), "Ready").get("status")  # noqa: E731
    wait_for(lambda: ready() == "True", 240, "the stable model Ready on the real node")
    address = service_address(cluster, node_namespace)
    wait_for(lambda: routed(address), 60, "the Service to route to the stable pod")

    patch = {"spec": {"model": {"uri": five, "sha256": five_sha}}}
    cluster.kubectl("patch", "mdep", "iris", "-n", node_namespace, "--type=merge",
                    "-p", json.dumps(patch))  # fmt: skip
    answers: Counter[int] = Counter()
    deadline = time.monotonic() + 240
    entry = None
    while entry is None and time.monotonic() < deadline:  # a client, until the rollout ends
        for _ in range(5):
            answers[infer(address)] += 1
        history = (get(cluster, "mdep", node_namespace, "iris") or {}).get("status", {}).get(
            "history"
        ) or []
        entry = history[0] if history else None
        time.sleep(0.2)
    assert entry is not None, "the rollout did not end in 240 s"
    assert (entry["result"], entry["reason"]) == ("RolledBack", "IncompatibleModel"), entry
    assert "input X: shape [-1,4] -> [-1,5]" in entry["message"]
    assert set(answers) == {200}, answers  # the canary answered no client
    described = cluster.kubectl("describe", "mdep", "iris", "-n", node_namespace).stdout
    assert "input X: shape [-1,4] -> [-1,5]" in described
