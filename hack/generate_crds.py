"""Write what is generated from the ModelDeployment pydantic models: the CRD where Kubernetes and
Helm read it (crds/modeldeployment.yaml, charts/modeldeploy/crds/modeldeployment.yaml) and the
API reference (docs/api.md).

Usage: python hack/generate_crds.py [--check]
  --check  write nothing; exit 1 and name the stale files when they differ from the models.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from modeldeploy.api.crd import render_crd_yaml
from modeldeploy.api.reference import render_reference

ROOT = Path(__file__).resolve().parent.parent
TARGETS: dict[Path, Callable[[], str]] = {
    ROOT / "crds" / "modeldeployment.yaml": render_crd_yaml,
    ROOT / "charts" / "modeldeploy" / "crds" / "modeldeployment.yaml": render_crd_yaml,
    ROOT / "docs" / "api.md": render_reference,
}


def main(argv: list[str] | None = None) -> int:
    """Generate (or with --check, verify) the files; returns the exit status."""
    parser = argparse.ArgumentParser(description="Generate the CRD and API reference.")
    parser.add_argument("--check", action="store_true", help="verify only, write nothing")
    args = parser.parse_args(argv)
    stale = {}
    for target, render in TARGETS.items():
        text = render()
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale[target] = text
    for target, text in stale.items():
        name = target.relative_to(ROOT)
        if args.check:
            print(f"{name} is out of date: run `make crds`", file=sys.stderr)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(f"wrote {name}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
