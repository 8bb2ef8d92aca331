"""The operator against the real control plane: children, status, drift, scale, deletion."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.operator.conftest import OPERATOR_USER, OperatorProcess, wait_for
from tests.support.kubectl import apply_md, condition, get

pytestmark = pytest.mark.integration

MODEL_A = "https://models.example.com/iris/1/model.onnx"
MODEL_B = "https://models.example.com/iris/2/model.onnx"
SHA = "a" * 64


def ready(cluster: Any, namespace: str, name: str) -> dict[str, Any] | None:
    md = get(cluster, "mdep", namespace, name)
    current = md and md.get("status", {}).get("observedGeneration") == md["metadata"]["generation"]
    return md if current and condition(md, "Ready").get("status") == "True" else None


def server_args(deployment: dict[str, Any]) -> list[str]:
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def test_create_builds_labelled_owned_children_and_becomes_ready(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A, "sha256": SHA}, "replicas": 2})
    md = wait_for(lambda: ready(cluster, namespace, "iris"), 60, "iris Ready")
    assert md["status"]["phase"] == "Ready"
    assert md["status"]["readyReplicas"] == 2
    stable = md["status"]["stable"]
    assert (stable["uri"], stable["sha256"], len(stable["templateHash"])) == (MODEL_A, SHA, 16)
    assert md["status"]["url"] == f"http://iris.{namespace}.svc.cluster.local:8080"
    assert {c["type"] for c in md["status"]["conditions"]} == {
        "Ready", "Available", "Progressing", "Degraded",
    }  # fmt: skip
    deployment = get(cluster, "deployment", namespace, "iris")
    service = get(cluster, "service", namespace, "iris")
    assert deployment and service
    for child in (deployment, service):
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "modeldeploy"
        assert labels["serving.modeldeploy.io/deployment"] == "iris"
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == md["metadata"]["uid"] and owner["controller"] is True
    pod = deployment["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"][:2] == ["fetch", f"--model-uri={MODEL_A}"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert f"--sha256={SHA}" in server_args(deployment)

    def reasons() -> set[str]:
        events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        return {
            e["reason"]
            for e in json.loads(events)["items"]
            if e["involvedObject"]["kind"] == "ModelDeployment"
        }

    # kopf posts Events asynchronously, shortly after the status is written.
    wait_for(lambda: "ModelServing" in reasons(), 30, "the ModelServing Event")


def test_updates_model_replicas_and_scale_subresource(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}, "replicas": 1})
    wait_for(lambda: ready(cluster, namespace, "iris"), 60, "iris Ready")
    apply_md(
        cluster,
        namespace,
        "iris",
        {
            "model": {"uri": MODEL_B},
            "replicas": 3,
            "runtime": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "2"}}},
        },
    )

    def updated() -> dict[str, Any] | None:
        deployment = get(cluster, "deployment", namespace, "iris")
        if not deployment or deployment["spec"].get("replicas") != 3:
            return None
        return deployment if f"--model-uri={MODEL_B}" in str(deployment) else None

    deployment = wait_for(updated, 60, "the Deployment to follow the spec")
    assert "--workers=2" in server_args(deployment)
    assert "--threads=1" in server_args(deployment)
    md = wait_for(lambda: ready(cluster, namespace, "iris"), 60, "iris Ready again")
    assert md["status"]["stable"]["uri"] == MODEL_B
    cluster.kubectl("scale", "mdep", "iris", "-n", namespace, "--replicas=5")
    wait_for(
        lambda: (get(cluster, "deployment", namespace, "iris") or {})["spec"]["replicas"] == 5,
        60,
        "kubectl scale to reach the Deployment",
    )
    md = wait_for(lambda: ready(cluster, namespace, "iris"), 60, "5 replicas ready")
    assert md["status"]["replicas"] == 5


def test_autoscaling_on_and_off(cluster: Any, namespace: str, operator: OperatorProcess) -> None:
    spec: dict[str, Any] = {
        "model": {"uri": MODEL_A},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilization": 60},
    }
    apply_md(cluster, namespace, "iris", spec)
    hpa = wait_for(
        lambda: get(cluster, "hpa.v2.autoscaling", namespace, "iris"), 60, "the HPA to exist"
    )
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 6
    metric = hpa["spec"]["metrics"][0]["resource"]
    assert metric["target"]["averageUtilization"] == 60
    deployment = get(cluster, "deployment", namespace, "iris", "--show-managed-fields")
    assert deployment is not None
    managers = [
        m["manager"]
        for m in deployment["metadata"]["managedFields"]
        if "f:replicas" in json.dumps(m.get("fieldsV1", {}).get("f:spec", {}))
    ]
    assert "modeldeploy" not in managers  # replicas are the HPA's, not ours
    del spec["autoscaling"]
    spec["replicas"] = 1
    apply_md(cluster, namespace, "iris", spec)
    wait_for(
        lambda: get(cluster, "hpa.v2.autoscaling", namespace, "iris") is None, 60, "HPA removed"
    )


def test_drifted_and_deleted_children_are_restored(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}})
    wait_for(lambda: ready(cluster, namespace, "iris"), 60, "iris Ready")
    cluster.kubectl(
        "patch", "deployment", "iris", "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "replace", "path": "/spec/template/spec/containers/0/args/1",
                           "value": "--model-name=hacked"}]),
    )  # fmt: skip
    wait_for(
        lambda: (
            "--model-name=iris"
            in server_args(
                get(cluster, "deployment", namespace, "iris")
                or {"spec": {"template": {"spec": {"containers": [{"args": []}]}}}}
            )
        ),
        60,
        "the edited Deployment to be restored",
    )
    cluster.kubectl("delete", "service", "iris", "-n", namespace)
    wait_for(lambda: get(cluster, "service", namespace, "iris"), 60, "the Service to be recreated")


def test_unschedulable_pods_are_reported_truthfully(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(
        cluster,
        namespace,
        "huge",
        {
            "model": {"uri": MODEL_A},
            "runtime": {"resources": {"requests": {"cpu": "500"}}},
        },
    )

    def degraded() -> dict[str, Any] | None:
        md = get(cluster, "mdep", namespace, "huge")
        return md if condition(md, "Degraded").get("reason") == "PodsUnschedulable" else None

    md = wait_for(degraded, 60, "Degraded=PodsUnschedulable")
    message = condition(md, "Degraded")["message"]
    assert "Insufficient cpu" in message
    assert md["status"]["phase"] == "Degraded"
    assert condition(md, "Ready")["status"] == "False"


def test_deletion_garbage_collects_every_child(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(
        cluster,
        namespace,
        "iris",
        {
            "model": {"uri": MODEL_A},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
            "disruptionBudget": {"minAvailable": 1},
        },
    )
    wait_for(lambda: get(cluster, "pdb", namespace, "iris"), 60, "the PDB")
    md = get(cluster, "mdep", namespace, "iris")
    assert md is not None and not md["metadata"].get("finalizers")
    cluster.kubectl("delete", "mdep", "iris", "-n", namespace)
    for kind in ("deployment", "service", "hpa.v2.autoscaling", "pdb"):
        wait_for(lambda k=kind: get(cluster, k, namespace, "iris") is None, 60, f"{kind} gone")


def _writes(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.audit_writes(OPERATOR_USER)
        if e.get("objectRef", {}).get("namespace") == namespace
    ]


def _resumed(operator: OperatorProcess, after: int) -> bool:
    lines = operator.lines()[after:]
    return any("'modeldeployment' succeeded" in str(line.get("message", "")) for line in lines)


def test_restart_resumes_without_duplicates_or_writes(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}, "replicas": 2})
    apply_md(cluster, namespace, "wine", {"model": {"uri": MODEL_B}})
    wait_for(lambda: ready(cluster, namespace, "iris"), 60, "iris Ready")
    wait_for(lambda: ready(cluster, namespace, "wine"), 60, "wine Ready")
    operator.stop()
    before = len(_writes(cluster, namespace))
    seen = len(operator.lines())
    operator.start()
    wait_for(lambda: _resumed(operator, seen), 60, "the resume handlers to run")
    # A child event after the restart is processed too, and still changes nothing.
    # A label (an annotation would bump a Deployment's generation and rightly show Progressing).
    cluster.kubectl("label", "deployment", "iris", "-n", namespace, "example.com/poke=1")
    wait_for(
        lambda: any("'child' succeeded" in str(x.get("message")) for x in operator.lines()[seen:]),
        60,
        "the child event to be handled",
    )
    after = _writes(cluster, namespace)[before:]
    assert after == [], [(e["verb"], e["objectRef"]) for e in after]
    deployments = json.loads(
        cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout
    )
    assert sorted(d["metadata"]["name"] for d in deployments["items"]) == ["iris", "wine"]


def test_recovers_when_the_api_server_restarts(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}})
    wait_for(lambda: ready(cluster, namespace, "iris"), 60, "iris Ready")
    cluster.restart("kube-apiserver", down_seconds=2)
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_B}})
    wait_for(
        lambda: f"--model-uri={MODEL_B}" in str(get(cluster, "deployment", namespace, "iris")),
        90,
        "the operator to act after the API server came back",
    )
    assert operator.process is not None and operator.process.poll() is None


def test_the_operators_hpa_scales_the_deployment_on_cpu(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(
        cluster,
        namespace,
        "busy",
        {
            "model": {"uri": MODEL_A},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilization": 50},
            "runtime": {"resources": {"requests": {"cpu": "100m"}}},
            # KWOK reports this CPU usage for each container of the pods.
            "podTemplate": {"annotations": {"kwok.x-k8s.io/usage-cpu": "90m"}},
        },
    )
    wait_for(
        lambda: (
            (get(cluster, "deployment", namespace, "busy") or {}).get("spec", {}).get("replicas", 0)
            >= 2
        ),
        180,
        "the HPA to scale the Deployment up on emulated CPU usage",
    )
    md = wait_for(
        lambda: (lambda m: m if m and m["status"].get("readyReplicas", 0) >= 2 else None)(
            ready(cluster, namespace, "busy")
        ),
        120,
        "the ModelDeployment to report the scaled replicas",
    )
    assert md["status"]["replicas"] >= 2


def test_operator_metrics_report_reconciles_and_conditions(
    cluster: Any, namespace: str, operator: OperatorProcess
) -> None:
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}})
    wait_for(lambda: ready(cluster, namespace, "iris"), 60, "iris Ready")
    ready_line = (
        f'modeldeploy_modeldeployment_condition{{name="iris",namespace="{namespace}",'
        'reason="ModelServing",status="True",type="Ready"} 1.0'
    )
    text = wait_for(
        lambda: (lambda t: t if ready_line in t else None)(operator.metrics()), 30, "metrics"
    )
    assert 'modeldeploy_operator_reconciles_total{result="ok"}' in text
    assert 'modeldeploy_operator_child_writes_total{action="applied",kind="Deployment"} 1.0' in text
    phase = f'name="iris",namespace="{namespace}",phase="Ready"'
    assert f"modeldeploy_modeldeployment_phase{{{phase}}} 1.0" in text
