"""The operator's Dockerfile: hadolint clean, and the contract the chart relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "operator" / "Dockerfile"
LINES = [line.strip() for line in DOCKERFILE.read_text().splitlines()]


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_with_the_operator_entrypoint() -> None:
    assert sum(line.startswith("FROM ") for line in LINES) == 2
    assert any(line.startswith("COPY --from=build") for line in LINES)
    assert "USER 10001:10001" in LINES
    assert 'ENTRYPOINT ["modeldeploy", "operator"]' in LINES


def test_the_chart_runs_the_image_as_the_image_expects() -> None:
    values = yaml.safe_load((ROOT / "charts" / "modeldeploy" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert values["podSecurityContext"]["runAsGroup"] == 10001
    operator = values["operator"]
    assert f"EXPOSE {operator['healthPort']} {operator['metricsPort']}" in LINES
