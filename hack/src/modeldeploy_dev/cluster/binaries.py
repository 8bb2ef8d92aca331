"""Where the control-plane binaries live, and building them when they are missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
    "etcd",
    "kwok",
    "helm",
    "metrics-server",
    "coredns",
    "prometheus",
)


class ControlPlaneError(RuntimeError):
    """A component of the local control plane could not be built, started or reached."""


def project_root(start: Path | None = None) -> Path:
    """The checkout that holds ``hack/versions.env`` (searched upwards from ``start``)."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "hack" / "versions.env").is_file():
            return candidate
    module_checkout = Path(__file__).resolve().parents[4]
    if (module_checkout / "hack" / "versions.env").is_file():
        return module_checkout
    raise ControlPlaneError("cannot find hack/versions.env: run this from a modeldeploy checkout")


def read_versions(root: Path) -> dict[str, str]:
    """The pinned versions from ``hack/versions.env``."""
    versions: dict[str, str] = {}
    for line in (root / "hack" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


def binary_dir(root: Path, *, build: bool = True) -> Path:
    """The cached directory holding every binary; builds what is missing when ``build``."""
    override = os.environ.get("MODELDEPLOY_CONTROL_PLANE_BIN")
    if override:
        directory = Path(override)
    else:
        script = root / "hack" / "build-control-plane.sh"
        printed = subprocess.run(
            ["bash", str(script), "--print-dir"], check=True, capture_output=True, text=True
        )
        directory = Path(printed.stdout.strip())
        missing = [b for b in BINARIES if not (directory / b).exists()]
        if missing and build:
            # The script prints its own progress to stderr, which we leave on the terminal.
            subprocess.run(["bash", str(script)], check=True, stdout=subprocess.DEVNULL)
    missing = [b for b in BINARIES if not (directory / b).exists()]
    if missing:
        raise ControlPlaneError(
            f"control-plane binaries missing in {directory}: {', '.join(missing)} "
            "(run `make control-plane`)"
        )
    return directory
