"""A ModelDeployment on the real node: the pod the operator builds starts, fetches its model
from the object store with the Secret's credentials, passes its probes and serves, with the
security settings the operator sets."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from modeldeploy_dev.cluster.network import NODE_NAME
from tests.integration.node.conftest import StoredModel
from tests.support.kubectl import apply_md, condition, get
from tests.support.operator_process import OperatorProcess, wait_for

NAME = "iris"
SMALL = {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}}


def serve(cluster: Any, namespace: str, model: StoredModel) -> dict[str, Any]:
    """Apply a one-replica ModelDeployment of ``model``; return it once Ready and its Service
    routes requests."""
    apply_md(cluster, namespace, NAME, serving_spec(model.uri, model.sha256, model.secret))
    md: dict[str, Any] = wait_for(
        lambda: ready_md(cluster, namespace), 240, "the ModelDeployment Ready"
    )
    wait_for(lambda: routed(service_address(cluster, namespace)), 60, "the Service to route")
    return md


def service_address(cluster: Any, namespace: str, name: str = NAME) -> str:
    service = get(cluster, "service", namespace, name)
    assert service is not None
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


def routed(address: str) -> bool:
    """Whether the Service answers: Ready pods reach kube-proxy's rules a moment after their
    readiness (the EndpointSlice, then a sync), on any cluster."""
    try:
        with urllib.request.urlopen(f"{address}/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def serving_spec(uri: str, digest: str, secret: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": {"uri": uri, "sha256": digest, "credentialsSecret": secret},
        "replicas": 1,
        "runtime": {"resources": SMALL},
        **extra,
    }


def pods_of(cluster: Any, namespace: str, name: str = NAME) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"serving.modeldeploy.io/deployment={name}",
        "-o", "json",
    ).stdout  # fmt: skip
    return list(json.loads(out)["items"])


def ready_md(cluster: Any, namespace: str, name: str = NAME) -> dict[str, Any] | None:
    md = get(cluster, "mdep", namespace, name)
    return md if condition(md, "Ready").get("status") == "True" else None


def infer(cluster: Any, namespace: str, rows: list[list[float]], name: str = NAME) -> Any:
    """One Open Inference Protocol request through the ModelDeployment's Service address."""
    address = service_address(cluster, namespace, name)
    data = [v for row in rows for v in row]
    body = {"inputs": [{"name": "X", "shape": [len(rows), 4], "datatype": "FP32", "data": data}]}
    request = urllib.request.Request(
        f"{address}/v2/models/{name}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_model_from_the_object_store_is_served_by_a_real_pod(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    classifier_in_store: StoredModel,
) -> None:
    md = serve(cluster, node_namespace, classifier_in_store)
    assert md["status"]["readyReplicas"] == 1

    [pod] = pods_of(cluster, node_namespace)
    assert pod["spec"]["nodeName"] == NODE_NAME
    init = pod["status"]["initContainerStatuses"][0]
    assert init["name"] == "fetch-model"
    assert init["state"]["terminated"]["exitCode"] == 0
    assert all(c["ready"] for c in pod["status"]["containerStatuses"])

    answer = infer(cluster, node_namespace, [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    label = next(o for o in answer["outputs"] if o["name"] == "label")
    assert label["shape"] == [2] and len(label["data"]) == 2

    # The real server wrote these lines, and the init container fetched from the store.
    name = pod["metadata"]["name"]
    served = cluster.kubectl("logs", name, "-n", node_namespace, "-c", "server").stdout
    assert "modeldeploy" in served.lower() and NAME in served
    fetched = cluster.kubectl("logs", name, "-n", node_namespace, "-c", "fetch-model").stdout
    assert classifier_in_store.uri in fetched and classifier_in_store.sha256 in fetched


def test_the_serving_container_runs_unprivileged_with_a_read_only_root(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    classifier_in_store: StoredModel,
) -> None:
    serve(cluster, node_namespace, classifier_in_store)
    [pod] = pods_of(cluster, node_namespace)
    probe = (
        "import os, json\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in l)\n"
        "root = [l.split()[5] for l in open('/proc/self/mountinfo') if l.split()[4] == '/']\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'root': root,"
        " 'caps': status['CapEff'].strip(), 'seccomp': status['Seccomp'].strip(),"
        " 'nnp': status['NoNewPrivs'].strip()}))"
    )
    out = cluster.kubectl(
        "exec", pod["metadata"]["name"], "-n", node_namespace, "-c", "server", "--",
        "python3", "-c", probe,
    ).stdout  # fmt: skip
    seen = json.loads(out)
    assert seen["uid"] == 10001 and seen["gid"] == 10001
    assert "ro" in seen["root"][-1].split(","), f"the root filesystem is mounted {seen['root']}"
    assert int(seen["caps"], 16) == 0, "every capability is dropped"
    assert seen["nnp"] == "1", "no privilege escalation"
    assert seen["seccomp"] == "2", "the runtime's default seccomp filter is applied"
