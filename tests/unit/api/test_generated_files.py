"""Every generated file (CRDs, the chart's copies, the API reference) matches its source."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).parents[3]


def test_make_crds_has_nothing_to_change() -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_crds", ROOT / "hack" / "generate_crds.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "generated files are stale: run `make crds`"


def test_the_crds_are_the_modeldeployment_one_only() -> None:
    """The replicas elect a leader through a coordination.k8s.io Lease: no kopf peering CRDs."""
    for crds in (ROOT / "crds", ROOT / "charts" / "modeldeploy" / "crds"):
        assert sorted(p.name for p in crds.glob("*.yaml")) == ["modeldeployment.yaml"], crds
    assert (ROOT / "crds" / "modeldeployment.yaml").read_text() == (
        ROOT / "charts" / "modeldeploy" / "crds" / "modeldeployment.yaml"
    ).read_text()
