"""``modeldeploy status``, ``promote`` and ``abort`` against the real API server.

No operator runs in the test namespaces: the tests write the status a canary would have
through the status subresource, as the operator does, and read what the CLI makes of it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from modeldeploy.api import API_VERSION, KIND
from tests.integration.cli.conftest import cli

pytestmark = pytest.mark.integration

NAME = "iris"
TIME = "2025-01-02T03:04:05Z"
STABLE = {"uri": "https://models.example.com/iris/2/model.onnx", "version": "2"}
CANARY_MODEL = {"uri": "https://models.example.com/iris/3/model.onnx", "version": "3"}


def create(cluster: Any, namespace: str) -> None:
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": CANARY_MODEL,
            "rollout": {
                "strategy": "Canary",
                "steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}],
                "analysis": {
                    "failureLimit": 3,
                    "prometheus": {"address": "http://prometheus.monitoring:9090"},
                    "metrics": [{"name": "error-rate", "max": 0.01}],
                },
            },
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))


def canary_status() -> dict[str, Any]:
    return {
        "phase": "Paused",
        "observedGeneration": 1,
        "replicas": 3,
        "readyReplicas": 2,
        "url": f"http://{NAME}.ns.svc.cluster.local:8080",
        "stable": STABLE,
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "CanaryPaused",
             "message": "waiting at step 2 for promote or abort", "lastTransitionTime": TIME,
             "observedGeneration": 1},
        ],
        "canary": {
            **CANARY_MODEL, "weight": 20, "stepIndex": 1, "state": "Paused", "failedChecks": 1,
            "passedChecks": 4, "startedAt": TIME,
            "analysis": [
                {"name": "error-rate", "value": 0.004, "max": 0.01, "result": "Passed",
                 "time": TIME},
                {"name": "latency-p99", "value": 0.25, "max": 0.05, "result": "Failed",
                 "time": TIME},
            ],
        },
        "history": [
            {"model": {"uri": "https://models.example.com/iris/1/model.onnx"},
             "result": "Promoted", "reason": "AnalysisPassed", "time": "2024-12-01T00:00:00Z"},
        ],
    }  # fmt: skip


@pytest.fixture
def with_canary(cluster: Any, modeldeployment_crd: str, namespace: str, kube: Any) -> str:
    create(cluster, namespace)
    kube.patch_status(API_VERSION, KIND, namespace, NAME, canary_status())
    return namespace


@pytest.fixture
def without_canary(cluster: Any, modeldeployment_crd: str, namespace: str, kube: Any) -> str:
    create(cluster, namespace)
    status = canary_status()
    del status["canary"]
    status["phase"] = "Ready"
    kube.patch_status(API_VERSION, KIND, namespace, NAME, status)
    return namespace


def annotations(cluster: Any, namespace: str) -> dict[str, str]:
    result = cluster.kubectl("get", "mdep", NAME, "-n", namespace, "-o", "json")
    return dict(json.loads(result.stdout)["metadata"].get("annotations") or {})


def test_status_shows_the_canary_its_analysis_conditions_and_history(
    cluster: Any, with_canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cluster, "status", NAME, "-n", with_canary) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Phase:         Paused" in lines
    assert "Replicas:      2/3 ready" in lines
    assert f"Stable model:  {STABLE['uri']} (version 2)" in lines
    assert "  Weight:        20%" in lines
    assert "  Step:          2 of 3 (pause until promoted)" in lines
    assert "  Failed checks: 1 of 3 allowed" in lines
    assert "  State:         Paused" in lines
    assert "  Passed checks: 4" in lines
    analysis = lines.index("Last analysis:")
    # METRIC VALUE STABLE MIN MAX MAX-INCREASE SAMPLES RESULT
    assert lines[analysis + 2].split()[:8] == [
        "error-rate", "0.004", "-", "-", "0.01", "-", "-", "Passed"
    ]  # fmt: skip
    assert lines[analysis + 3].split()[:8] == [
        "latency-p99", "0.25", "-", "-", "0.05", "-", "-", "Failed"
    ]  # fmt: skip
    conditions = lines.index("Conditions:")
    assert lines[conditions + 2].split()[:3] == ["Progressing", "True", "CanaryPaused"]
    history = lines.index("History (newest first):")
    assert lines[history + 2].split()[:3] == [
        "Promoted", "AnalysisPassed", "https://models.example.com/iris/1/model.onnx",
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_status_for_programs(
    cluster: Any, with_canary: str, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cluster, "status", NAME, "-n", with_canary, "-o", fmt) == 0
    out = capsys.readouterr().out
    view = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert view["name"] == NAME and view["namespace"] == with_canary
    assert view["model"] == CANARY_MODEL
    assert view["status"]["canary"]["weight"] == 20
    assert view["status"]["canary"]["analysis"][1]["result"] == "Failed"


def test_status_of_an_unknown_name_is_a_clear_error(
    cluster: Any, modeldeployment_crd: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cluster, "status", "absent", "-n", namespace) == 1
    captured = capsys.readouterr()
    assert captured.err == (
        f"modeldeploy status: error: ModelDeployment 'absent' not found in namespace "
        f"'{namespace}' (kubectl get mdep -A lists them)\n"
    )


def test_promote_sets_the_annotation_and_says_what_happens(
    cluster: Any, with_canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cluster, "promote", NAME, "-n", with_canary) == 0
    out = capsys.readouterr().out
    assert annotations(cluster, with_canary)["serving.modeldeploy.io/promote"] == "true"
    assert "serving.modeldeploy.io/abort" not in annotations(cluster, with_canary)
    assert f"The canary {CANARY_MODEL['uri']} (now at 20% of traffic) will be promoted" in out


def test_abort_sets_the_annotation_and_says_what_happens(
    cluster: Any, with_canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cluster, "abort", NAME, "-n", with_canary) == 0
    out = capsys.readouterr().out
    assert annotations(cluster, with_canary)["serving.modeldeploy.io/abort"] == "true"
    assert f"all traffic returns to {STABLE['uri']}" in out


def test_the_annotation_patch_leaves_the_spec_and_other_annotations_alone(
    cluster: Any, with_canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.kubectl("annotate", "mdep", NAME, "-n", with_canary, "team=ml")
    before = json.loads(cluster.kubectl("get", "mdep", NAME, "-n", with_canary, "-o",
                                        "json").stdout)  # fmt: skip
    assert cli(cluster, "promote", NAME, "-n", with_canary) == 0
    after = json.loads(cluster.kubectl("get", "mdep", NAME, "-n", with_canary, "-o",
                                       "json").stdout)  # fmt: skip
    assert after["spec"] == before["spec"] and after["status"] == before["status"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"]["annotations"]["team"] == "ml"


@pytest.mark.parametrize("action", ["promote", "abort"])
def test_without_a_canary_the_command_refuses(
    cluster: Any, without_canary: str, action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cluster, action, NAME, "-n", without_canary) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"modeldeploy {action}: error: ModelDeployment '{NAME}' in namespace")
    assert f"has no canary under way (status.canary is unset): nothing to {action}" in err
    assert annotations(cluster, without_canary) == {}


def test_force_sets_the_annotation_without_a_canary(
    cluster: Any, without_canary: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(cluster, "promote", NAME, "-n", without_canary, "--force") == 0
    assert "acts on it only if a canary is under way by then" in capsys.readouterr().out
    assert annotations(cluster, without_canary)["serving.modeldeploy.io/promote"] == "true"


def test_a_missing_kubeconfig_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    from modeldeploy.cli import main

    missing = tmp_path / "absent-kubeconfig"
    assert main(["status", NAME, "--kubeconfig", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"modeldeploy status: error: cannot load the kubeconfig {missing}")


def test_an_api_server_that_is_not_there_is_named(
    cluster: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from modeldeploy.cli import main
    from tests.support.servers import free_port

    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    assert main(["status", NAME, "-n", "default", "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"modeldeploy status: error: cannot read ModelDeployment '{NAME}' in namespace "
        "'default': cannot reach the API server: "
    )
    assert len(err.strip().splitlines()) == 1
