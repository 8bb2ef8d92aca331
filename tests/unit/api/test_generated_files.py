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
    assert (ROOT / "crds" / "kopf-peering.yaml").read_text() == (
        ROOT / "charts" / "modeldeploy" / "crds" / "kopf-peering.yaml"
    ).read_text()
