"""The operator's policy against the real control plane: a spec that breaks a rule gets a
Degraded condition and a Warning Event naming the rule, and nothing is created or changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.conftest import OPERATOR_USER, OperatorProcess, wait_for, watching
from tests.support.kubectl import apply_md, condition, get

pytestmark = pytest.mark.integration

MODEL = "https://models.example.com/iris/1/model.onnx"
POLICY_FLAGS = (
    "--allowed-image=registry.example.com/ml/",
    "--allowed-service-account=serving",
    "--allowed-priority-class=model-serving",
    "--no-allow-env-value-from",
    "--no-allow-load-balancer",
    "--tolerations=Keyed",
    "--max-model-size=4Gi",
)
# name -> (what the spec asks for beyond the model, the rule it breaks, the value named)
BREAKING: dict[str, tuple[dict[str, Any], str, str]] = {
    "image": ({"runtime": {"image": "docker.io/attacker/miner:1"}}, "allowedImages", "miner"),
    "account": (
        {"podTemplate": {"serviceAccountName": "cloud-admin"}},
        "allowedServiceAccounts",
        "cloud-admin",
    ),
    "priority": (
        {"podTemplate": {"priorityClassName": "system-cluster-critical"}},
        "allowedPriorityClasses",
        "system-cluster-critical",
    ),
    "secret-env": (
        {
            "runtime": {
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]
            }
        },
        "allowEnvValueFrom",
        "secretKeyRef",
    ),
    "load-balancer": ({"service": {"type": "LoadBalancer"}}, "allowLoadBalancer", "LoadBalancer"),
    "every-taint": (
        {"podTemplate": {"tolerations": [{"operator": "Exists"}]}},
        "tolerations",
        "Exists",
    ),
    "big-model": ({"model": {"uri": MODEL, "sizeLimit": "8Gi"}}, "maxModelSize", "8Gi"),
}


@pytest.fixture
def strict_operator(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """An operator with every rule of the policy set, watching the test's namespace."""
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    running = watching(kubeconfig, namespace, tmp_path / "operator.log", *POLICY_FLAGS)
    running.start()
    yield running
    running.stop()


def refused(cluster: Any, namespace: str, name: str) -> dict[str, Any] | None:
    md = get(cluster, "mdep", namespace, name)
    degraded = condition(md, "Degraded")
    current = md and degraded.get("observedGeneration") == md["metadata"]["generation"]
    return degraded if current and degraded.get("reason") == "PolicyViolation" else None


def warnings(cluster: Any, namespace: str) -> dict[str, str]:
    """ModelDeployment name -> message of its PolicyViolation Event."""
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    return {
        e["involvedObject"]["name"]: e["message"]
        for e in events["items"]
        if e["reason"] == "PolicyViolation" and e["type"] == "Warning"
    }


def test_each_rule_refuses_its_spec_naming_the_rule_and_creates_nothing(
    cluster: Any, namespace: str, strict_operator: OperatorProcess
) -> None:
    for name, (spec, _, _) in BREAKING.items():
        apply_md(cluster, namespace, name, {"model": {"uri": MODEL}, **spec})
    apply_md(cluster, namespace, "compliant", {"model": {"uri": MODEL, "sizeLimit": "4Gi"}})
    for name, (_, rule, value) in BREAKING.items():
        degraded = wait_for(lambda n=name: refused(cluster, namespace, n), 60, f"{name} refused")
        assert f"policy.{rule}" in degraded["message"] and value in degraded["message"], name
        md = get(cluster, "mdep", namespace, name)
        assert md and md["status"]["phase"] == "Failed"
    # The compliant one is served, so the operator did reconcile this namespace ...
    served = wait_for(
        lambda: get(cluster, "deployment", namespace, "compliant"), 60, "compliant served"
    )
    pod = served["spec"]["template"]["spec"]
    assert f"--max-bytes={4 * 2**30}" in pod["initContainers"][0]["args"]
    assert {"name": "model", "emptyDir": {"sizeLimit": "4112Mi"}} in pod["volumes"]
    # ... and for the others it wrote nothing at all.
    for kind in ("deployment", "service", "hpa", "pdb"):
        names = cluster.kubectl("get", kind, "-n", namespace, "-o", "name").stdout.split()
        assert [n.split("/")[-1] for n in names] == (
            ["compliant"] if kind in ("deployment", "service") else []
        ), kind
    events = wait_for(
        lambda: (found := warnings(cluster, namespace)).keys() >= BREAKING.keys() and found,
        30,
        "a PolicyViolation Event for each",
    )
    for name, (_, rule, _) in BREAKING.items():
        assert f"policy.{rule}" in events[name]


def test_a_spec_that_breaks_the_policy_later_leaves_its_children_as_they_are(
    cluster: Any, namespace: str, strict_operator: OperatorProcess
) -> None:
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL}})

    def ready() -> dict[str, Any] | None:
        md = get(cluster, "mdep", namespace, "iris")
        return md if condition(md, "Ready").get("status") == "True" else None

    wait_for(ready, 60, "iris Ready")
    before = {kind: get(cluster, kind, namespace, "iris") for kind in ("deployment", "service")}
    apply_md(
        cluster,
        namespace,
        "iris",
        {"model": {"uri": MODEL}, "replicas": 3, "service": {"type": "LoadBalancer"}},
    )
    degraded = wait_for(lambda: refused(cluster, namespace, "iris"), 60, "iris refused")
    assert (
        "spec.service.type 'LoadBalancer' is refused by policy.allowLoadBalancer"
        in (degraded["message"])
    )
    for kind, child in before.items():
        now = get(cluster, kind, namespace, "iris")
        assert child and now, kind
        assert now["metadata"]["resourceVersion"] == child["metadata"]["resourceVersion"], kind
    service = get(cluster, "service", namespace, "iris")
    assert service and service["spec"]["type"] == "ClusterIP"

    # Back within the policy: the operator acts on the spec again.
    apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL}, "replicas": 3})
    wait_for(
        lambda: (get(cluster, "deployment", namespace, "iris") or {})["spec"].get("replicas") == 3,
        60,
        "the Deployment to follow the spec again",
    )
    md = wait_for(ready, 60, "iris Ready again")
    assert condition(md, "Degraded")["status"] == "False"
