"""The chart's alerts, evaluated by Prometheus' own rule engine (promtool) on synthetic series:
they fire when they should, with the labels and words an on-call engineer gets."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.chart.conftest import Helm

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool")
SERIES = "modeldeploy_requests_total{{namespace='ml',deployment='iris',track='{track}'," \
    "model='iris',protocol='v2',code='{code}'}}"  # fmt: skip
CONDITION = (
    "kube_customresource_modeldeployment_status_condition{{customresource_group="
    "'serving.modeldeploy.io',customresource_kind='ModelDeployment',customresource_version="
    "'v1alpha1',namespace='ml',name='{name}',type='{type}',reason='{reason}'}}"
)


def _rules(helm: Helm, tmp_path: Path, values: dict[str, Any]) -> Path:
    objects = helm.template("md", "monitoring", {"metrics": {"prometheusRule": values}})
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        pytest.fail("promtool (Debian package prometheus, installed by make setup) is missing")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_the_rules_are_valid_prometheus_rules(helm: Helm, tmp_path: Path) -> None:
    result = _promtool("check", "rules", str(_rules(helm, tmp_path, {"enabled": True})))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 rules found" in result.stdout


def test_without_kube_state_metrics_only_the_serving_alert_remains(
    helm: Helm, tmp_path: Path
) -> None:
    path = _rules(helm, tmp_path, {"enabled": True, "kubeStateMetrics": False})
    groups = yaml.safe_load(path.read_text())["groups"]
    assert [r["alert"] for g in groups for r in g["rules"]] == ["ModelDeploymentErrorRateHigh"]


def test_the_alerts_fire_when_they_should(helm: Helm, tmp_path: Path) -> None:
    rules = _rules(helm, tmp_path, {"enabled": True, "alertLabels": {"team": "ml-platform"}})
    error_description = (
        "ml/iris (canary track) answered 10% of its inference requests with a 5xx status "
        "over the last 5m."
    )
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # canary: 10 % server errors; stable: 1 % (under the 5 % threshold)
                    {"series": SERIES.format(track="canary", code="200"), "values": "0+90x30"},
                    {"series": SERIES.format(track="canary", code="500"), "values": "0+10x30"},
                    {"series": SERIES.format(track="stable", code="200"), "values": "0+990x30"},
                    {"series": SERIES.format(track="stable", code="503"), "values": "0+10x30"},
                    {"series": SERIES.format(track="stable", code="400"), "values": "0+500x30"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "4m",
                        "alertname": "ModelDeploymentErrorRateHigh",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "ModelDeploymentErrorRateHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "team": "ml-platform",
                                    "namespace": "ml",
                                    "deployment": "iris",
                                    "track": "canary",
                                },
                                "exp_annotations": {
                                    "summary": "A model answers too many requests with a "
                                    "server error.",
                                    "description": error_description,
                                },
                            }
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": CONDITION.format(
                            name="iris", type="Degraded", reason="RolledBack"
                        ),
                        "values": "0 0 1 1 1 1 1",
                    },
                    {
                        "series": CONDITION.format(
                            name="iris", type="Ready", reason="ModelServing"
                        ),
                        "values": "1x30",
                    },
                    {
                        "series": CONDITION.format(
                            name="mnist", type="Ready", reason="PodsNotReady"
                        ),
                        "values": "0x10",
                    },
                    {
                        "series": CONDITION.format(
                            name="mnist", type="Ready", reason="PodsUnschedulable"
                        ),
                        "values": "_x10 0x20",
                    },
                    {
                        "series": CONDITION.format(
                            name="mnist", type="Degraded", reason="AsExpected"
                        ),
                        "values": "0x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "2m",
                        "alertname": "ModelDeploymentRolloutFailed",
                        "exp_alerts": [],
                    },
                    {
                        "eval_time": "4m",
                        "alertname": "ModelDeploymentRolloutFailed",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "team": "ml-platform",
                                    "namespace": "ml",
                                    "name": "iris",
                                    "reason": "RolledBack",
                                },
                                "exp_annotations": {
                                    "summary": "A ModelDeployment is Degraded (rollout failed "
                                    "or rolled back).",
                                    "description": "ModelDeployment ml/iris is Degraded "
                                    "(RolledBack); see kubectl describe mdep -n ml iris.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "10m", "alertname": "ModelDeploymentNotReady", "exp_alerts": []},
                    # The reason changed at 11m; the alert still counts from 0m.
                    {
                        "eval_time": "16m",
                        "alertname": "ModelDeploymentNotReady",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "team": "ml-platform",
                                    "namespace": "ml",
                                    "name": "mnist",
                                },
                                "exp_annotations": {
                                    "summary": "A ModelDeployment has not been Ready for a while.",
                                    "description": "ModelDeployment ml/mnist has not been Ready "
                                    "for 15m; see kubectl describe mdep -n ml mnist.",
                                },
                            }
                        ],
                    },
                ],
            },
        ],
    }
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
