"""The chart's files agree with each other and with the documentation (no cluster needed)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "modeldeploy"
HEALTH_CHECK = (ROOT / "docs" / "argocd-health.lua").read_text()


# Values shaped like Kubernetes fields: documented as a whole by the comment above them.
KUBERNETES_SHAPED = {"resources", "livenessProbe", "readinessProbe"}


def _sections(schema: dict[str, Any]) -> bool:
    return "properties" in schema and schema.get("additionalProperties") is False


def _leaves(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Dotted paths of the chart-defined values (sections of the chart recurse)."""
    out = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if _sections(sub) and key not in KUBERNETES_SHAPED:
            out.update(_leaves(sub, path + "."))
        else:
            out[path] = sub
    return out


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and _sections(sub) and key not in KUBERNETES_SHAPED:
            out |= _value_paths(value, sub, path + ".")
        else:
            out.add(path)
    return out


def test_values_and_schema_describe_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    leaves = _leaves(schema)
    assert _value_paths(values, schema) == set(leaves) - {"global"}
    for path, sub in leaves.items():
        assert sub.get("description"), f"{path} has no description in values.schema.json"


def test_every_value_is_documented_on_the_line_above() -> None:
    """Each key of the chart (sections included) has a comment line right above it; keys
    inside a Kubernetes-shaped value are covered by the comment above that value."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    sections = {""} | {path.rsplit(".", 1)[0] for path in _leaves(schema) if "." in path}
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z]\w*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = f"{parent}.{key}" if parent else key
        stack.append((indent, path))
        if parent in sections and not lines[number - 1].strip().startswith("#"):
            undocumented.append(f"line {number + 1}: {path}")
    assert undocumented == []


def test_the_argocd_health_check_is_the_same_everywhere_it_is_shown() -> None:
    readme = (CHART / "README.md").read_text()
    assert f"```lua\n{HEALTH_CHECK}```" in readme
    install = (ROOT / "docs" / "install.md").read_text()
    key = "resource.customizations.health.serving.modeldeploy.io_ModelDeployment: |\n"
    block = install.split(key, 1)[1].split("```", 1)[0]
    assert textwrap.dedent(block) == HEALTH_CHECK


def test_the_kube_state_metrics_config_produces_what_the_alerts_read() -> None:
    config = yaml.safe_load((CHART / "files" / "kube-state-metrics.yaml").read_text())
    (resource,) = config["spec"]["resources"]
    assert resource["groupVersionKind"] == {
        "group": "serving.modeldeploy.io",
        "version": "v1alpha1",
        "kind": "ModelDeployment",
    }
    prefix = resource.get("metricNamePrefix", "kube_customresource")
    names = {f"{prefix}_{m['name']}": m for m in resource["metrics"]}
    rules = (CHART / "templates" / "prometheusrule.yaml").read_text()
    used = set(re.findall(r"\b(kube_customresource_\w+)\{", rules))
    assert used and used <= set(names)
    for name in used:
        labels = set(resource["labelsFromPath"]) | set(
            names[name]["each"]["gauge"]["labelsFromPath"]
        )
        assert {"namespace", "name", "type", "reason"} <= labels


def test_chart_version_and_app_version_follow_the_distribution() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert version is not None
    assert chart["appVersion"] == version.group(1)
    assert chart["kubeVersion"] == ">=1.29.0-0"


def test_the_alerts_read_metrics_the_server_exports() -> None:
    """Every serving metric an alert reads is a family the server defines (a renamed metric
    would otherwise leave an alert that can never fire)."""
    rules = (CHART / "templates" / "prometheusrule.yaml").read_text()
    used = {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for name in re.findall(r"\b(modeldeploy_\w+)", rules)
    }
    source = "\n".join(
        path.read_text()
        for path in (ROOT / "serving_image" / "src" / "modeldeploy_server").rglob("*.py")
    )
    defined = set(re.findall(r"[\"'](modeldeploy_\w+)[\"']", source))
    assert used >= {"modeldeploy_requests", "modeldeploy_feature_drift_psi"}
    assert used <= defined, sorted(used - defined)
