"""The serving pods meet the restricted Pod Security Standard, as the real API server's
PodSecurity admission enforces it: a tenant namespace can be labelled restricted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modeldeploy.api import ModelDeployment
from modeldeploy.builders import build_deployment

pytestmark = pytest.mark.integration

SPECS = {
    "minimal": {"model": {"uri": "https://m.example.com/iris.onnx"}},
    "everything-mounted": {
        "model": {
            "uri": "pvc://models/iris/3/model.onnx",
            "sizeLimit": "500Mi",
            "profile": {"uri": "s3://profiles/iris/3/model.profile.json"},
        },
        "runtime": {"env": [{"name": "MODELDEPLOY_SERVER_LOG_LEVEL", "value": "debug"}]},
    },
    "credentials": {
        "model": {"uri": "s3://models/iris/3/model.onnx", "credentialsSecret": "s3"},
    },
}


@pytest.mark.parametrize("name", SPECS)
def test_the_serving_pod_is_admitted_by_a_restricted_namespace(
    cluster: Any, namespace: str, name: str
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )  # fmt: skip
    md = ModelDeployment.model_validate(
        {"metadata": {"name": "iris", "namespace": namespace, "uid": "u"}, "spec": SPECS[name]}
    )
    template = build_deployment(md)["spec"]["template"]
    metadata = {**template["metadata"], "name": "iris", "namespace": namespace}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    result = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-",
        input=json.dumps(pod), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "violate" not in result.stderr.lower(), result.stderr
