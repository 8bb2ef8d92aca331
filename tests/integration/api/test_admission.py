"""The generated CRD in a real API server: it refuses what the models refuse, naming the field,
and accepts what they accept (the shared table in tests/unit/api/cases.py), and the examples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modeldeploy.api import GROUP, PLURAL, VERSION
from tests.unit.api.cases import INVALID, VALID, Case, build

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[3] / "examples"
# Server-side dry runs persist nothing, so the table shares one namespace instead of creating
# one per case.
DRY_RUN_NAMESPACE = "default"


@pytest.fixture(scope="module")
def objects(cluster: Any, modeldeployment_crd: str) -> Iterator[client.CustomObjectsApi]:
    api_client = cluster.api_client()
    yield client.CustomObjectsApi(api_client)
    api_client.close()


def dry_run_create(api: client.CustomObjectsApi, namespace: str, manifest: dict[str, Any]) -> None:
    """Create server-side as `kubectl apply --dry-run=server` does (strict field validation)."""
    api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, dry_run="All", field_validation="Strict"
    )


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_manifest_is_refused_naming_the_field(
    objects: client.CustomObjectsApi, case: Case
) -> None:
    with pytest.raises(ApiException) as refused:
        dry_run_create(objects, DRY_RUN_NAMESPACE, build(case))
    assert refused.value.status in (400, 422)
    message = json.loads(refused.value.body or "{}")["message"]
    assert case.field in message


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_manifest_is_accepted(objects: client.CustomObjectsApi, case: Case) -> None:
    dry_run_create(objects, DRY_RUN_NAMESPACE, build(case))


def test_kubectl_apply_refuses_a_typo_naming_the_field(
    cluster: Any, modeldeployment_crd: str
) -> None:
    manifest = build(Case("typo", {"spec.rollout.stratgy": "Canary"}))
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", DRY_RUN_NAMESPACE, "-f", "-",
        input=json.dumps(manifest), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert 'unknown field "spec.rollout.stratgy"' in result.stderr


def test_examples_apply_as_they_are_and_show_useful_columns(
    cluster: Any, modeldeployment_crd: str, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLES))
    listed = cluster.kubectl("get", "mdep", "-n", namespace).stdout.splitlines()
    assert listed[0].split() == ["NAME", "MODEL", "READY", "CANARY", "PHASE", "AGE"]
    expected = sorted(
        doc["metadata"]["name"]
        for path in EXAMPLES.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "ModelDeployment"
    )
    assert len(expected) >= 4
    assert sorted(line.split()[0] for line in listed[1:]) == expected
    by_category = cluster.kubectl("get", "modeldeploy", "-n", namespace, "-o", "name").stdout
    assert len(by_category.split()) == len(expected)
