"""The chart's multi-tenant values rendered by the real helm: the policy reaches the operator
exactly as the values say, and the serving pods' NetworkPolicy selects the pods and ports the
operator really builds, letting only the monitoring namespace and the operator read metrics."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.api import ModelDeployment
from modeldeploy.builders import build_deployment
from modeldeploy.cli import build_parser
from modeldeploy.config import Policy
from modeldeploy.runner import policy_of
from tests.integration.chart.conftest import Helm

pytestmark = pytest.mark.integration

RELEASE, FULLNAME, RELEASE_NS = "md", "md-modeldeploy", "platform"


def operator_args(objects: list[dict[str, Any]]) -> list[str]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def serving_policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Namespace -> spec of the serving pods' NetworkPolicy."""
    return {
        o["metadata"]["namespace"]: o["spec"]
        for o in objects
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == f"{FULLNAME}-serving"
    }


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_the_policy_values_reach_the_operator_as_the_policy_they_describe(helm: Helm) -> None:
    def policy(values: dict[str, Any]) -> Policy:
        args = operator_args(helm.template(RELEASE, RELEASE_NS, values))
        return policy_of(build_parser().parse_args(["operator", *args]))

    assert policy({}) == Policy()
    assert "--model-size-limit=2Gi" in operator_args(helm.template(RELEASE, RELEASE_NS))
    restricted = {
        "allowedImages": ["registry.example.com/ml/", "ghcr.io/modeldeploy"],
        "allowedServiceAccounts": ["serving"],
        "allowedPriorityClasses": ["model-serving", "system-cluster-critical"],
        "allowEnvValueFrom": False,
        "allowLoadBalancer": False,
        "tolerations": "None",
        "maxModelSize": "4Gi",
    }
    assert policy({"policy": restricted}) == Policy(
        allowed_images=("registry.example.com/ml/", "ghcr.io/modeldeploy"),
        allowed_service_accounts=("serving",),
        allowed_priority_classes=("model-serving", "system-cluster-critical"),
        allow_env_value_from=False,
        allow_load_balancer=False,
        tolerations="None",
        max_model_size="4Gi",
    )
    assert policy({"policy": {"tolerations": "Any"}}).tolerations == "Any"


def test_the_serving_network_policy_guards_the_pods_the_operator_builds(helm: Helm) -> None:
    values = {"watchNamespaces": ["team-a", "team-b"], "servingNetworkPolicy": {"enabled": True}}
    objects = helm.template(RELEASE, RELEASE_NS, values)
    policies = serving_policies(objects)
    assert sorted(policies) == ["team-a", "team-b"]
    spec = policies["team-a"]
    assert spec["policyTypes"] == ["Ingress"]
    md = ModelDeployment.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "team-a", "uid": "u", "generation": 1},
            "spec": {"model": {"uri": "https://m.example.com/a.onnx"}},
        }
    )
    for track in ("stable", "canary"):
        template = build_deployment(md, track)["spec"]["template"]
        assert selects(spec["podSelector"], template["metadata"]["labels"]), track
        ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
        assert {p["port"] for rule in spec["ingress"] for p in rule["ports"]} == ports
    http, metrics, operator = spec["ingress"]
    assert http == {"ports": [{"protocol": "TCP", "port": "http"}]}  # from anywhere
    assert metrics["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # The operator's own pods, in the release namespace, reach both ports (contract check).
    (peer,) = operator["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": RELEASE_NS}
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert selects(peer["podSelector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert {p["port"] for p in operator["ports"]} == {"http", "metrics"}


def test_the_serving_network_policy_takes_its_namespaces_and_peers_from_the_values(
    helm: Helm,
) -> None:
    gateway = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gw"}}}]
    values = {
        "servingNetworkPolicy": {
            "enabled": True,
            "namespaces": ["models"],
            "monitoringNamespace": "observability",
            "httpFrom": gateway,
        }
    }
    policies = serving_policies(helm.template(RELEASE, RELEASE_NS, values))
    assert list(policies) == ["models"]  # all-namespaces mode: the listed ones
    http, metrics, _ = policies["models"]["ingress"]
    assert http["from"] == gateway
    selector = metrics["from"][0]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": "observability"}
    assert serving_policies(helm.template(RELEASE, RELEASE_NS)) == {}  # off by default
