"""The pydantic models refuse and accept exactly what the CRD does (the shared table), apply the
same defaults, and round-trip what the API server stores."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modeldeploy.api import ModelDeployment, ModelDeploymentStatus, parse_duration, parse_quantity
from modeldeploy.api.v1alpha1 import Phase
from tests.support.statuses import full_status
from tests.unit.api.cases import DELETE, INVALID, VALID, Case, build

EXAMPLES = sorted((Path(__file__).parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_manifest_is_refused_naming_the_field(case: Case) -> None:
    with pytest.raises(ValidationError) as refused:
        ModelDeployment.model_validate(build(case))
    assert case.field in str(refused.value)


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_manifest_is_accepted(case: Case) -> None:
    ModelDeployment.model_validate(build(case))


def test_the_shared_table_is_large_enough() -> None:
    assert len(INVALID) >= 25
    assert len({c.id for c in INVALID + VALID}) == len(INVALID) + len(VALID)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    ModelDeployment.model_validate(yaml.safe_load(path.read_text()))


def test_examples_cover_the_documented_uses() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"minimal", "autoscaled", "canary", "gateway-api"} <= names


def test_defaults_are_filled_in() -> None:
    md = ModelDeployment.model_validate(
        {"metadata": {"name": "iris"}, "spec": {"model": {"uri": "https://e.com/m.onnx"}}}
    )
    assert md.to_dict()["spec"] == {
        "model": {"uri": "https://e.com/m.onnx"},
        "replicas": 1,
        "rollout": {"strategy": "Rolling", "compatibility": "Strict", "progressDeadline": "10m"},
        "service": {"port": 8080, "type": "ClusterIP"},
    }


def test_nested_defaults_apply_when_the_block_is_given() -> None:
    manifest = build(Case("x", {"spec.autoscaling": {"maxReplicas": 4}}))
    manifest["spec"]["rollout"]["analysis"] = {"metrics": [{"name": "error-rate", "max": 0.1}]}
    spec = ModelDeployment.model_validate(manifest).spec
    assert spec.autoscaling is not None
    assert (spec.autoscaling.min_replicas, spec.autoscaling.target_cpu_utilization) == (1, 80)
    analysis = spec.rollout.analysis
    assert analysis is not None
    assert (analysis.interval, analysis.failure_limit, analysis.inconclusive) == ("1m", 2, "Wait")
    assert analysis.on_no_traffic == "Rollback" and spec.rollout.compatibility == "Strict"


def test_stored_object_round_trips_unchanged() -> None:
    """What the API server returns (defaults, status, server metadata) re-serialises as is."""
    stored: dict[str, Any] = build(Case("x", {}))
    stored["metadata"].update({"uid": "123", "generation": 2, "resourceVersion": "77"})
    stored["spec"]["rollout"].update({"progressDeadline": "10m", "compatibility": "Strict"})
    stored["spec"]["rollout"]["analysis"].update(
        {"failureLimit": 2, "inconclusive": "Wait", "onNoTraffic": "Rollback"}
    )
    stored["status"] = full_status()
    assert ModelDeployment.model_validate(stored).to_dict() == stored


def test_status_helpers() -> None:
    status = ModelDeploymentStatus.model_validate(full_status())
    assert status.phase is Phase.PROGRESSING
    ready = status.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert status.condition("Degraded") is None


def test_status_refuses_an_unknown_phase() -> None:
    with pytest.raises(ValidationError, match="phase"):
        ModelDeploymentStatus.model_validate({"phase": "Happy"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("1h30m", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "1d", "-1s", "1 s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, Decimal(2)),
        ("500m", Decimal("0.5")),
        ("1Gi", Decimal(2**30)),
        ("1.5G", Decimal("1.5e9")),
        ("1e3", Decimal(1000)),
        ("100n", Decimal("1e-7")),
    ],
)
def test_parse_quantity(value: int | str, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize("value", ["", "1.2.3", "1KB", "m"])
def test_parse_quantity_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(value)


def test_served_model_name_defaults_to_metadata_name() -> None:
    manifest = build(Case("x", {"spec.model.name": DELETE}), name="iris-prod")
    manifest["metadata"]["namespace"] = "ml"
    md = ModelDeployment.model_validate(manifest)
    assert (md.name, md.namespace, md.served_model_name) == ("iris-prod", "ml", "iris-prod")
    md.spec.model.name = "iris"
    assert md.served_model_name == "iris"


def test_read_only_mappings_parse_like_dicts() -> None:
    """kopf hands the operator a Mapping view of the object, not a dict."""
    manifest = build(Case("x", {}))
    frozen = MappingProxyType({**manifest, "spec": MappingProxyType(manifest["spec"])})
    assert ModelDeployment.model_validate(frozen).to_dict() == (
        ModelDeployment.model_validate(manifest).to_dict()
    )
