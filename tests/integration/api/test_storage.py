"""What the API server stores parses back through the models unchanged; the status schema keeps
every field the operator writes; `kubectl explain` teaches the API; `kubectl scale` works."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.api import ModelDeployment, ModelDeploymentStatus
from modeldeploy.api.v1alpha1 import Phase
from tests.support.statuses import full_status
from tests.unit.api.cases import Case, build

pytestmark = pytest.mark.integration

EXAMPLES = sorted((Path(__file__).parents[3] / "examples").glob("*.yaml"))


def get(cluster: Any, namespace: str, name: str, *extra: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "mdep", name, "-n", namespace, "-o", "json", *extra)
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def create(cluster: Any, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    return get(cluster, namespace, manifest["metadata"]["name"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_stored_example_round_trips_with_the_same_defaults(
    cluster: Any, modeldeployment_crd: str, namespace: str, path: Path
) -> None:
    manifest = yaml.safe_load(path.read_text())
    stored = create(cluster, namespace, manifest)
    assert ModelDeployment.model_validate(stored).to_dict() == stored
    # The API server applied exactly the defaults the models apply: none lives only in code.
    assert stored["spec"] == ModelDeployment.model_validate(manifest).to_dict()["spec"]


def test_full_status_is_stored_as_written_and_round_trips(
    cluster: Any, modeldeployment_crd: str, namespace: str
) -> None:
    manifest = build(Case("full", {}), name="full")
    create(cluster, namespace, manifest)
    status = full_status()
    cluster.kubectl(
        "patch", "mdep", "full", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    stored = get(cluster, namespace, "full")
    assert stored["status"] == status  # nothing pruned: the schema covers every status field
    assert ModelDeployment.model_validate(stored).to_dict() == stored


def test_status_merge_patch_removes_unset_fields(
    cluster: Any, modeldeployment_crd: str, namespace: str
) -> None:
    create(cluster, namespace, build(Case("x", {}), name="promoted"))
    patch = ["patch", "mdep", "promoted", "-n", namespace, "--subresource=status", "--type=merge"]
    cluster.kubectl(*patch, "-p", json.dumps({"status": full_status()}))
    status = ModelDeploymentStatus.model_validate(full_status())
    status.canary, status.phase = None, Phase.READY
    cluster.kubectl(*patch, "-p", json.dumps({"status": status.to_merge_patch()}))
    stored = get(cluster, namespace, "promoted")["status"]
    assert stored == status.to_dict()
    assert "canary" not in stored and stored["phase"] == "Ready"


def test_status_cannot_be_written_through_the_main_resource(
    cluster: Any, modeldeployment_crd: str, namespace: str
) -> None:
    create(cluster, namespace, build(Case("x", {}), name="nostatus"))
    cluster.kubectl(
        "patch", "mdep", "nostatus", "-n", namespace, "--type=merge",
        "-p", json.dumps({"status": {"phase": "Ready"}}),
    )  # fmt: skip
    assert "status" not in get(cluster, namespace, "nostatus")


def test_kubectl_scale_sets_spec_replicas(
    cluster: Any, modeldeployment_crd: str, namespace: str
) -> None:
    create(cluster, namespace, build(Case("x", {}), name="scaled"))
    selector = "serving.modeldeploy.io/deployment=scaled"
    cluster.kubectl(
        "patch", "mdep", "scaled", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"replicas": 2, "selector": selector}}),
    )  # fmt: skip
    cluster.kubectl("scale", "mdep", "scaled", "-n", namespace, "--replicas=3")
    assert get(cluster, namespace, "scaled")["spec"]["replicas"] == 3
    scale = get(cluster, namespace, "scaled", "--subresource=scale")
    assert scale["kind"] == "Scale"
    assert scale["spec"] == {"replicas": 3}
    assert scale["status"] == {"replicas": 2, "selector": selector}


def test_kubectl_explain_shows_the_field_descriptions(
    cluster: Any, modeldeployment_crd: str
) -> None:
    # The API server publishes a new CRD's OpenAPI asynchronously: poll, never sleep blindly.
    deadline = time.monotonic() + 60
    while True:
        result = cluster.kubectl("explain", "modeldeployment.spec.model.uri", check=False)
        if "Where the ONNX model file is fetched from" in result.stdout:
            break
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(0.5)
    assert "pvc://claim/path" in result.stdout
    steps = cluster.kubectl("explain", "mdep.spec.rollout.steps").stdout
    assert "setWeight" in steps and "exactly one of setWeight, pause or shadow" in steps
