"""The generated CRD: up to date, deterministic, structural, documented, and carrying every
default and rule of the models."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import ModelDeployment
from modeldeploy.api.crd import build_crd, build_openapi_schema, render_crd_yaml
from modeldeploy.api.reference import render_reference
from modeldeploy.api.types import ApiModel

ROOT = Path(__file__).parents[3]
GENERATED = [
    ROOT / "crds/modeldeployment.yaml",
    ROOT / "charts/modeldeploy/crds/modeldeployment.yaml",
]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (`.spec.model.uri`, `.spec.rollout.steps[]`, ...)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return build_openapi_schema()


@pytest.mark.parametrize("path", GENERATED, ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_file_is_up_to_date(path: Path) -> None:
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == render_crd_yaml(), f"{path} is out of date: run `make crds`"


def test_api_reference_is_up_to_date() -> None:
    assert (ROOT / "docs/api.md").read_text() == render_reference(), "run `make crds`"


def test_make_crds_check_passes_on_the_committed_files() -> None:
    script = ROOT / "hack/generate_crds.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True)
    assert result.returncode == 0, result.stderr


def test_generation_is_deterministic() -> None:
    assert render_crd_yaml() == render_crd_yaml()
    assert yaml.safe_load(render_crd_yaml()) == build_crd()


def test_names_subresources_and_columns() -> None:
    spec = build_crd()["spec"]
    assert spec["group"] == "serving.modeldeploy.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "ModelDeployment"
    assert spec["names"]["plural"] == "modeldeployments"
    assert spec["names"]["shortNames"] == ["mdep"]
    assert spec["names"]["categories"] == ["modeldeploy"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Model", "Ready", "Canary", "Phase", "Age"]


def test_every_field_has_a_description(schema: dict[str, Any]) -> None:
    missing = [
        f"{path}.{name}"
        for path, node in walk(schema)
        for name, child in node.get("properties", {}).items()
        if not child.get("description") and f"{path}.{name}" != ".metadata"
    ]
    assert missing == []


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        assert not {"$ref", "$defs", "title", "const", "allOf", "oneOf"} & node.keys(), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}
            assert "anyOf" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("default", "") is not None, path


def test_unknown_fields_are_only_kept_in_documented_pass_through_blocks(
    schema: dict[str, Any],
) -> None:
    nodes = dict(walk(schema))
    passthrough = set()
    for path, node in nodes.items():
        if node.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
            owner = path.removesuffix("[]")  # a list of pass-through items is documented once
            assert "Passed verbatim to the" in nodes[owner]["description"], owner
            passthrough.add(owner)
    assert sorted(passthrough) == [
        ".spec.autoscaling.behavior",
        ".spec.autoscaling.metrics",
        ".spec.podTemplate.affinity",
        ".spec.podTemplate.tolerations",
        ".spec.podTemplate.topologySpreadConstraints",
        ".spec.rollout.trafficRouting.gatewayAPI.parentRefs",
        ".spec.runtime.env",
    ]


def test_lists_maps_and_spec_strings_are_bounded_for_cel_cost(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
        if path.startswith(".spec") and node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, path


def test_every_rule_of_the_models_is_in_the_crd(schema: dict[str, Any]) -> None:
    in_crd = {
        (rule["rule"], rule["message"])
        for _, node in walk(schema)
        for rule in node.get("x-kubernetes-validations", ())
    }
    declared = {(r.cel, r.message) for model in all_models() for r in model.__rules__}
    assert declared and in_crd == declared


def all_models() -> set[type[ApiModel]]:
    found: set[type[ApiModel]] = set()
    pending: list[type[ApiModel]] = [ApiModel]
    while pending:
        for sub in pending.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                pending.append(sub)
    return found


def apply_defaults(value: Any, node: dict[str, Any]) -> Any:
    """Kubernetes' structural defaulting: unset properties with a default get it, recursively."""
    if isinstance(value, dict) and "properties" in node:
        for name, child in node["properties"].items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_defaults(value[name], child)
    elif isinstance(value, list) and "items" in node:
        return [apply_defaults(item, node["items"]) for item in value]
    return value


@pytest.mark.parametrize(
    "spec",
    [
        {"model": {"uri": "https://e.com/m.onnx"}},
        {
            "model": {"uri": "https://e.com/m.onnx"},
            "runtime": {"batching": {}},
            "autoscaling": {"maxReplicas": 3},
            "rollout": {
                "strategy": "Canary",
                "steps": [{"setWeight": 50}],
                "analysis": {"metrics": [{"name": "error-rate", "max": 1}]},
            },
            "service": {"type": "NodePort"},
        },
    ],
    ids=["minimal", "nested-blocks"],
)
def test_crd_defaults_equal_model_defaults(schema: dict[str, Any], spec: dict[str, Any]) -> None:
    """The API server stores exactly what the operator assumes: no default lives only in code."""
    manifest = {"metadata": {"name": "x"}, "spec": spec}
    defaulted_by_server = apply_defaults(copy.deepcopy(manifest), schema)
    defaulted_by_model = ModelDeployment.model_validate(manifest).to_dict()
    defaulted_by_model.pop("apiVersion"), defaulted_by_model.pop("kind")
    assert defaulted_by_server == defaulted_by_model
