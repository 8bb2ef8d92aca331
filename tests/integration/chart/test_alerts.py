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
FEATURE = "{{namespace='ml',deployment='iris',track='{track}',model='iris',feature='{feature}'"
PSI = "modeldeploy_feature_drift_psi" + FEATURE + ",instance='{pod}'}}"
VALUES = "modeldeploy_feature_values_total" + FEATURE + ",instance='{pod}'}}"
ISSUES = "modeldeploy_feature_issues_total" + FEATURE + ",issue='{issue}',instance='{pod}'}}"
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
    assert "5 rules found" in result.stdout


def test_without_kube_state_metrics_only_the_serving_pods_alerts_remain(
    helm: Helm, tmp_path: Path
) -> None:
    path = _rules(helm, tmp_path, {"enabled": True, "kubeStateMetrics": False})
    groups = yaml.safe_load(path.read_text())["groups"]
    assert [r["alert"] for g in groups for r in g["rules"]] == [
        "ModelDeploymentErrorRateHigh",
        "ModelInputDrift",
        "ModelInputOutOfProfile",
    ]


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


def _promtool_test(tmp_path: Path, rules: Path, tests: list[dict[str, Any]]) -> None:
    path = tmp_path / "tests.yaml"
    path.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests})
    )
    result = _promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_input_drift_alert_fires_on_a_lasting_shift_of_the_track(
    helm: Helm, tmp_path: Path
) -> None:
    """PSI above 0.25 for 30 minutes, averaged over the track's pods: one pod's noisy window
    alone does not fire it."""
    rules = _rules(helm, tmp_path, {"enabled": True, "kubeStateMetrics": False})
    shifted = "petal_length"
    series = [
        # canary: both pods see the shift (0.40 and 0.30: 0.35 on average)
        {"series": PSI.format(track="canary", feature=shifted, pod="a"), "values": "0.05x5 0.4x60"},
        {"series": PSI.format(track="canary", feature=shifted, pod="b"), "values": "0.05x5 0.3x60"},
        # stable: one pod's window is odd (0.6), the other sees nothing (0.02): 0.31 on average
        # for a few minutes only, then 0.21
        {"series": PSI.format(track="stable", feature=shifted, pod="c"), "values": "0.6x10 0.4x55"},
        {"series": PSI.format(track="stable", feature=shifted, pod="d"), "values": "0.02x65"},
        # another feature of the canary: a moderate shift, under the threshold
        {"series": PSI.format(track="canary", feature="sepal_width", pod="a"), "values": "0.2x65"},
    ]
    description = (
        "Feature petal_length of model iris in ml/iris (canary track) has a population "
        "stability index of 0.35 against the training profile (above 0.25 for 30m)."
    )
    expected = {
        "exp_labels": {
            "severity": "warning",
            "namespace": "ml",
            "deployment": "iris",
            "track": "canary",
            "model": "iris",
            "feature": shifted,
        },
        "exp_annotations": {
            "summary": "A model's inputs no longer look like its training data.",
            "description": description,
        },
    }
    _promtool_test(
        tmp_path,
        rules,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": "ModelInputDrift", "exp_alerts": []},
                    {"eval_time": "40m", "alertname": "ModelInputDrift", "exp_alerts": [expected]},
                ],
            }
        ],
    )


def test_the_out_of_profile_alert_names_the_issue(helm: Helm, tmp_path: Path) -> None:
    """10 % of a feature's values out of range fires (over two pods); 1 % missing does not."""
    rules = _rules(
        helm, tmp_path, {"enabled": True, "kubeStateMetrics": False, "alertLabels": {"team": "ml"}}
    )
    feature = {"track": "stable", "feature": "petal_length"}
    series = [
        {"series": VALUES.format(**feature, pod="a"), "values": "0+60x60"},
        {"series": VALUES.format(**feature, pod="b"), "values": "0+40x60"},
        {"series": ISSUES.format(**feature, issue="out_of_range", pod="a"), "values": "0+6x60"},
        {"series": ISSUES.format(**feature, issue="out_of_range", pod="b"), "values": "0+4x60"},
        {"series": ISSUES.format(**feature, issue="missing", pod="a"), "values": "0+1x60"},
        # another feature, all in profile
        {
            "series": VALUES.format(track="stable", feature="sepal_width", pod="a"),
            "values": "0+60x60",
        },
        {
            "series": ISSUES.format(
                track="stable", feature="sepal_width", issue="out_of_range", pod="a"
            ),
            "values": "0x60",
        },
    ]
    expected = {
        "exp_labels": {
            "severity": "warning",
            "team": "ml",
            "namespace": "ml",
            "deployment": "iris",
            "track": "stable",
            "model": "iris",
            "feature": "petal_length",
            "issue": "out_of_range",
        },
        "exp_annotations": {
            "summary": "Many input values of a model are outside its training profile.",
            "description": "10% of the values of feature petal_length sent to model iris in "
            "ml/iris (stable track) were out_of_range over the last 15m.",
        },
    }
    _promtool_test(
        tmp_path,
        rules,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "ModelInputOutOfProfile", "exp_alerts": []},
                    {
                        "eval_time": "35m",
                        "alertname": "ModelInputOutOfProfile",
                        "exp_alerts": [expected],
                    },
                ],
            }
        ],
    )
