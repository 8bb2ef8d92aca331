"""The operator's policy: a spec in, the rules it breaks out (table tests, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.api import ModelDeployment
from modeldeploy.cli import build_parser
from modeldeploy.config import OperatorConfig, Policy
from modeldeploy.policy import check_policy, image_allowed, policy_message
from modeldeploy.runner import policy_of

OPERATOR_IMAGE = "ghcr.io/modeldeploy/modeldeploy-server:0.1.0"
SECRET_ENV = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
POD_ENV = {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def md(**spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "team-a", "uid": "u", "generation": 1},
            "spec": {"model": {"uri": "https://m.example.com/iris.onnx"}, **spec},
        }
    )


def broken(policy: Policy, **spec: Any) -> list[tuple[str, str]]:
    settings = OperatorConfig(server_image=OPERATOR_IMAGE, policy=policy)
    return [(v.rule, v.field) for v in check_policy(md(**spec), settings)]


RESTRICTED = Policy(
    allowed_images=("registry.example.com/ml/", "ghcr.io/modeldeploy"),
    allowed_service_accounts=("serving",),
    allowed_priority_classes=("model-serving",),
    allow_env_value_from=False,
    allow_load_balancer=False,
    tolerations="None",
    max_model_size="4Gi",
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, []),
        ({"runtime": {"image": "registry.example.com/ml/server:2"}}, []),
        ({"runtime": {"image": "ghcr.io/modeldeploy/modeldeploy-server:0.2.0"}}, []),
        ({"runtime": {"image": OPERATOR_IMAGE}}, []),
        (
            {"runtime": {"image": "docker.io/attacker/miner:1"}},
            [("policy.allowedImages", "spec.runtime.image")],
        ),
        (
            {"runtime": {"image": "ghcr.io/modeldeploy.attacker.io/x:1"}},
            [("policy.allowedImages", "spec.runtime.image")],
        ),
        ({"podTemplate": {"serviceAccountName": "serving"}}, []),
        (
            {"podTemplate": {"serviceAccountName": "cloud-admin"}},
            [("policy.allowedServiceAccounts", "spec.podTemplate.serviceAccountName")],
        ),
        ({"podTemplate": {"priorityClassName": "model-serving"}}, []),
        (
            {"podTemplate": {"priorityClassName": "system-cluster-critical"}},
            [("policy.allowedPriorityClasses", "spec.podTemplate.priorityClassName")],
        ),
        ({"runtime": {"env": [POD_ENV, {"name": "A", "value": "1"}]}}, []),
        (
            {"runtime": {"env": [POD_ENV, SECRET_ENV]}},
            [("policy.allowEnvValueFrom", "spec.runtime.env[TOKEN].valueFrom")],
        ),
        ({"service": {"type": "NodePort"}}, []),
        (
            {"service": {"type": "LoadBalancer"}},
            [("policy.allowLoadBalancer", "spec.service.type")],
        ),
        (
            {"podTemplate": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}},
            [("policy.tolerations", "spec.podTemplate.tolerations[0]")],
        ),
        ({"model": {"uri": "https://m.example.com/iris.onnx", "sizeLimit": "4Gi"}}, []),
        (
            {"model": {"uri": "https://m.example.com/iris.onnx", "sizeLimit": "5Gi"}},
            [("policy.maxModelSize", "spec.model.sizeLimit")],
        ),
        (
            {
                "runtime": {"image": "quay.io/x/y:1"},
                "service": {"type": "LoadBalancer"},
            },
            [
                ("policy.allowedImages", "spec.runtime.image"),
                ("policy.allowLoadBalancer", "spec.service.type"),
            ],
        ),
    ],
)
def test_a_restricted_policy_refuses_exactly_what_it_names(
    spec: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert broken(RESTRICTED, **spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        {"runtime": {"image": "docker.io/anyone/anything:latest", "env": [SECRET_ENV]}},
        {"podTemplate": {"serviceAccountName": "cloud-admin", "priorityClassName": "high"}},
        {"podTemplate": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}},
        {"service": {"type": "LoadBalancer"}},
        {"model": {"uri": "https://m.example.com/iris.onnx", "sizeLimit": "100Gi"}},
    ],
)
def test_the_default_policy_keeps_what_was_allowed(spec: dict[str, Any]) -> None:
    assert broken(Policy(), **spec) == []


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        ({"priorityClassName": "system-cluster-critical"}, "policy.allowedPriorityClasses"),
        ({"priorityClassName": "system-node-critical"}, "policy.allowedPriorityClasses"),
        ({"tolerations": [{"operator": "Exists"}]}, "policy.tolerations"),
        ({"tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}, "policy.tolerations"),
    ],
)
def test_the_default_policy_refuses_what_no_serving_pod_needs(
    template: dict[str, Any], rule: str
) -> None:
    assert [r for r, _ in broken(Policy(), podTemplate=template)] == [rule]


def test_system_priority_classes_are_allowed_when_listed() -> None:
    policy = Policy(allowed_priority_classes=("system-cluster-critical",))
    assert broken(policy, podTemplate={"priorityClassName": "system-cluster-critical"}) == []


def test_tolerations_any_allows_a_toleration_of_every_taint() -> None:
    every_taint = {"tolerations": [{"operator": "Exists"}]}
    assert broken(Policy(tolerations="Any"), podTemplate=every_taint) == []


@pytest.mark.parametrize(
    ("image", "allowed", "expected"),
    [
        ("registry.example.com/ml/server:1", ("registry.example.com",), True),
        ("registry.example.com:5000/server:1", ("registry.example.com",), True),  # same host
        ("registry.example.com/server:1", ("registry.example.com:5000/",), False),
        ("registry.example.com.attacker.io/server:1", ("registry.example.com",), False),
        ("registry.example.com/ml/server:1", ("registry.example.com/ml/",), True),
        ("registry.example.com/mlx/server:1", ("registry.example.com/ml",), False),
        ("registry.example.com/ml/server@sha256:" + "a" * 64, ("registry.example.com/ml/server",),
         True),
        ("registry.example.com/ml/server:1", ("registry.example.com/ml/server:1",), True),
        ("registry.example.com/ml/server:12", ("registry.example.com/ml/server:1",), False),
    ],
)  # fmt: skip
def test_an_allowed_image_entry_matches_only_at_a_name_boundary(
    image: str, allowed: tuple[str, ...], expected: bool
) -> None:
    assert image_allowed(image, allowed) is expected


def test_the_message_names_the_rule_the_field_and_the_value() -> None:
    settings = OperatorConfig(policy=RESTRICTED)
    message = policy_message(check_policy(md(service={"type": "LoadBalancer"}), settings))
    assert "nothing is created or changed" in message
    assert "spec.service.type 'LoadBalancer' is refused by policy.allowLoadBalancer" in message


def test_the_flags_build_the_policy() -> None:
    args = build_parser().parse_args(
        [
            "operator", "-A",
            "--allowed-image=registry.example.com/ml/", "--allowed-image=ghcr.io/modeldeploy",
            "--allowed-service-account=serving", "--allowed-priority-class=model-serving",
            "--no-allow-env-value-from", "--no-allow-load-balancer", "--tolerations=None",
            "--max-model-size=4Gi",
        ]
    )  # fmt: skip
    assert policy_of(args) == RESTRICTED
    assert policy_of(build_parser().parse_args(["operator", "-A"])) == Policy()


def test_a_default_size_above_the_cap_stops_the_operator_at_startup() -> None:
    args = build_parser().parse_args(
        ["operator", "-A", "--model-size-limit=8Gi", "--max-model-size=4Gi"]
    )
    with pytest.raises(SystemExit, match="--model-size-limit 8Gi is above --max-model-size 4Gi"):
        policy_of(args)


def test_a_size_flag_that_is_no_quantity_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "-A", "--max-model-size=huge"])
    assert "'huge' is not a Kubernetes quantity" in capsys.readouterr().err
