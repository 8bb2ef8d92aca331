"""The Gateway API CRDs (standard channel) in the local control plane, for canary traffic tests.

The CRDs come from the ``sigs.k8s.io/gateway-api`` Go module itself, at the version pinned in
``hack/versions.env`` (``GATEWAY_API_VERSION``), fetched once into the control-plane cache by
``hack/fetch-gateway-api.sh``.

- ``gateway_api_crds_dir()``: the directory of the CRD files, fetched when missing.
- ``install_gateway_api(cluster)``: apply them (server-side) and wait until Established.
- ``remove_gateway_api(cluster)``: delete them and wait until the API server stops serving
  the group.
- ``without_gateway_api(cluster)``: a context manager for a test of the "CRD missing" path:
  removes the CRDs, yields, and installs them again on the way out, whatever happened.

The CRDs are cluster-scoped, so removing them is visible to every client of the cluster, and
deleting a CRD deletes every object of its kind (every HTTPRoute, in every namespace). A test
that uses ``without_gateway_api`` therefore keeps the block short and must not rely on
HTTPRoutes created before it. A lock file next to the cluster's kubeconfig keeps sessions that
share a cluster from interleaving: a removal waits for installs in progress and the other way
round, and two removals run one after the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "fetch-gateway-api.sh"
GROUP = "gateway.networking.k8s.io"
# The kinds modeldeploy's canary rollouts use, and what they stand on.
REQUIRED = ("httproutes", "gateways", "gatewayclasses", "referencegrants")


@dataclass(frozen=True)
class GatewayAPI:
    """The Gateway API CRDs as installed: where they came from and their names."""

    directory: Path
    crds: tuple[str, ...]

    @property
    def version(self) -> str:
        """The module version, e.g. ``v1.6.3`` (the directory is ``gateway-api-<version>``)."""
        return self.directory.name.removeprefix("gateway-api-")


def gateway_api_crds_dir() -> Path:
    """The directory holding the standard-channel CRD files; runs the fetch script if it is
    missing or incomplete (the script's progress goes to stderr)."""
    printed = subprocess.run(
        ["bash", str(SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    )
    directory = Path(printed.stdout.strip())
    if not all((directory / f"{GROUP}_{kind}.yaml").is_file() for kind in REQUIRED):
        fetched = subprocess.run(
            ["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
        )
        if fetched.returncode != 0:
            raise RuntimeError(
                f"{SCRIPT.name} failed (exit {fetched.returncode}); its messages are above"
            )
        directory = Path(fetched.stdout.strip().splitlines()[-1])
    return directory


def crd_names(directory: Path) -> tuple[str, ...]:
    """``<plural>.gateway.networking.k8s.io`` for each CRD file in ``directory``."""
    prefix = f"{GROUP}_"
    return tuple(
        sorted(
            f"{path.stem.removeprefix(prefix)}.{GROUP}"
            for path in directory.glob(f"{prefix}*.yaml")
        )
    )


def install_gateway_api(cluster: Any, timeout: float = 60) -> GatewayAPI:
    """Apply the CRDs (server-side, idempotent) and wait until each is Established.

    Waits for a removal in progress elsewhere (``without_gateway_api``) to finish first."""
    with _cluster_lock(cluster, fcntl.LOCK_SH):
        return _install(cluster, timeout)


def remove_gateway_api(cluster: Any, timeout: float = 60) -> None:
    """Delete the CRDs (and with them every Gateway API object) and wait until the API server
    no longer serves the group."""
    names = crd_names(gateway_api_crds_dir())
    cluster.kubectl(
        "delete", "--ignore-not-found", "--wait=true", f"--timeout={int(timeout)}s",
        *[f"crd/{name}" for name in names], timeout=timeout + 10,
    )  # fmt: skip
    _wait_until(lambda: not _group_served(cluster), timeout, f"{GROUP} to disappear")


@contextlib.contextmanager
def without_gateway_api(cluster: Any) -> Iterator[None]:
    """Run the block with the Gateway API CRDs absent from the cluster, then reinstall them.

    Cluster-wide (see the module docstring): keep the block short."""
    with _cluster_lock(cluster, fcntl.LOCK_EX):
        remove_gateway_api(cluster)
        try:
            yield
        finally:
            _install(cluster, 60)


def _install(cluster: Any, timeout: float) -> GatewayAPI:
    directory = gateway_api_crds_dir()
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(directory), timeout=timeout
    )
    names = crd_names(directory)
    cluster.kubectl(
        "wait", "--for=condition=Established", *[f"crd/{name}" for name in names],
        f"--timeout={int(timeout)}s", timeout=timeout + 10,
    )  # fmt: skip
    _wait_until(lambda: _group_served(cluster), timeout, f"the API server to serve {GROUP}")
    return GatewayAPI(directory, names)


@contextlib.contextmanager
def _cluster_lock(cluster: Any, kind: int) -> Iterator[None]:
    """A lock shared by every process using this cluster: installs share it, a removal holds
    it alone."""
    path = Path(cluster.kubeconfig).parent / "gateway-api.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, kind)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _group_served(cluster: Any) -> bool:
    """Whether discovery lists the group (what clients such as kopf and kubectl consult)."""
    result = cluster.kubectl("get", "--raw", f"/apis/{GROUP}", check=False)
    return result.returncode == 0


def _wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
