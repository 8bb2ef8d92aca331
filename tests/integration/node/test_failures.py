"""Failure paths on real pods: what breaks in the pod is named in the ModelDeployment's
status, its Events and `kubectl describe`, and a lost pod comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeldeploy_dev.cluster.store import ObjectStore
from tests.integration.node.conftest import StoredModel
from tests.integration.node.test_serving import NAME, pods_of, ready_md, serve, serving_spec
from tests.support import onnx_models
from tests.support.kubectl import apply_md, condition, get
from tests.support.operator_process import OperatorProcess, wait_for


def degraded(cluster: Any, namespace: str, reason: str) -> dict[str, Any] | None:
    md = get(cluster, "mdep", namespace, NAME)
    found = condition(md, "Degraded")
    return md if found.get("status") == "True" and found.get("reason") == reason else None


def test_a_wrong_digest_fails_the_init_container_and_degrades_naming_it(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    classifier_in_store: StoredModel,
) -> None:
    stored = classifier_in_store
    wrong = ("0" if stored.sha256[0] != "0" else "1") + stored.sha256[1:]
    apply_md(cluster, node_namespace, NAME, serving_spec(stored.uri, wrong, stored.secret))
    md = wait_for(lambda: degraded(cluster, node_namespace, "ModelFetchFailed"), 180, "Degraded")
    message = condition(md, "Degraded")["message"]
    assert "init container fetch-model failed" in message
    assert "sha256 mismatch" in message and wrong in message
    assert md["status"]["phase"] == "Degraded"
    described = cluster.kubectl("describe", "mdep", NAME, "-n", node_namespace).stdout
    assert "ModelFetchFailed" in described and "fetch-model" in described
    # Nothing serves a model that failed its check.
    [pod] = pods_of(cluster, node_namespace)
    assert not any(c.get("ready") for c in pod["status"].get("containerStatuses", []))


def test_a_missing_object_degrades_with_the_stores_answer(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    classifier_in_store: StoredModel,
) -> None:
    uri = f"s3://models/{node_namespace}/absent.onnx"  # beside the classifier: the bucket exists
    spec = serving_spec(uri, "a" * 64, classifier_in_store.secret)
    apply_md(cluster, node_namespace, NAME, spec)
    md = wait_for(lambda: degraded(cluster, node_namespace, "ModelFetchFailed"), 180, "Degraded")
    message = condition(md, "Degraded")["message"]
    assert "fetch-model" in message and "absent.onnx" in message


def test_a_deleted_pod_is_replaced_and_serves_again(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    classifier_in_store: StoredModel,
) -> None:
    serve(cluster, node_namespace, classifier_in_store)
    [first] = pods_of(cluster, node_namespace)
    cluster.kubectl("delete", "pod", first["metadata"]["name"], "-n", node_namespace)

    def replaced() -> bool:
        pods = pods_of(cluster, node_namespace)
        fresh = [p for p in pods if p["metadata"]["uid"] != first["metadata"]["uid"]]
        return bool(fresh) and all(
            c.get("ready") for p in fresh for c in p["status"].get("containerStatuses", [{}])
        )

    wait_for(replaced, 240, "a replacement pod Ready")
    md = wait_for(lambda: ready_md(cluster, node_namespace), 60, "the ModelDeployment Ready")
    assert md["status"]["readyReplicas"] == 1


def test_a_model_too_big_for_the_memory_limit_is_oom_killed_and_said_so(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    store: ObjectStore,
    tmp_path: Path,
) -> None:
    # 64 MiB of weights, loaded by a server limited to 128 MiB in all.
    big = onnx_models.make_slow(tmp_path / "big.onnx", width=4096, layers=1)
    uri, digest = store.upload(big, f"{node_namespace}/big.onnx")
    spec = serving_spec(uri, digest, store.grant(node_namespace))
    spec["runtime"]["resources"] = {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "128Mi"},
    }
    apply_md(cluster, node_namespace, NAME, spec)
    md = wait_for(lambda: degraded(cluster, node_namespace, "OOMKilled"), 240, "OOMKilled")
    message = condition(md, "Degraded")["message"]
    assert "container server was killed for exceeding its memory limit" in message
