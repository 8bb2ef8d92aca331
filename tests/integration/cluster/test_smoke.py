"""The local cluster is a real Kubernetes: workloads run, GC works, RBAC is enforced."""

from __future__ import annotations

import json

import pytest

from tests.support.manifests import cpu_hpa, deployment

pytestmark = pytest.mark.integration


def _apply(cluster, namespace: str, manifest: dict) -> None:  # type: ignore[no-untyped-def]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def test_nodes_are_ready_and_api_is_healthy(cluster) -> None:  # type: ignore[no-untyped-def]
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert len(ready) == 3, ready  # two KWOK nodes and the real node
    kwok = [n for n in nodes if n["metadata"]["labels"].get("type") == "kwok"]
    assert len(kwok) == 2 and all(n["status"]["allocatable"]["cpu"] == "8" for n in kwok)
    [real] = [n for n in nodes if n["metadata"]["labels"].get("type") == "real"]
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["serverVersion"]["gitVersion"] != "v0.0.0-master"


def test_deployment_becomes_available_with_ready_pods(cluster, namespace: str) -> None:  # type: ignore[no-untyped-def]
    _apply(cluster, namespace, deployment("smoke", replicas=2))
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Available", "deployment/smoke", "--timeout=60s"
    )
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
    phases = [(p["status"]["phase"], p["spec"].get("nodeName")) for p in pods["items"]]
    assert len(phases) == 2
    assert all(phase == "Running" and node for phase, node in phases)


def test_deleting_an_owner_garbage_collects_its_dependents(cluster, namespace: str) -> None:  # type: ignore[no-untyped-def]
    _apply(
        cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}
    )
    owner = json.loads(
        cluster.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "json").stdout
    )
    _apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "dependent",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
        },
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=delete", "configmap/dependent", "--timeout=60s")


def test_autoscaling_v2_hpa_is_accepted(cluster, namespace: str) -> None:  # type: ignore[no-untyped-def]
    hpa = cpu_hpa("smoke", utilization=70)
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(hpa))
    _apply(cluster, namespace, hpa)
    stored = json.loads(
        cluster.kubectl("get", "hpa.v2.autoscaling", "smoke", "-n", namespace, "-o", "json").stdout
    )
    assert stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70


def test_service_account_without_grants_is_denied(cluster, namespace: str) -> None:  # type: ignore[no-untyped-def]
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    who = f"system:serviceaccount:{namespace}:nobody"
    denied = cluster.kubectl("get", "pods", "-n", namespace, f"--as={who}", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    # And the same identity is allowed once a Role grants it: RBAC, not a broken client.
    cluster.kubectl(
        "create", "role", "read-pods", "-n", namespace, "--verb=list", "--resource=pods"
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "read-pods",
        "-n",
        namespace,
        "--role=read-pods",
        f"--serviceaccount={namespace}:nobody",
    )
    allowed = cluster.kubectl("get", "pods", "-n", namespace, f"--as={who}", check=False)
    assert allowed.returncode == 0, allowed.stderr
