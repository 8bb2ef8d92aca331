"""The Gateway API CRDs (standard channel) in the local control plane, for canary traffic tests.

The CRDs come from the ``sigs.k8s.io/gateway-api`` Go module itself, at the version pinned in
``hack/versions.env`` (``GATEWAY_API_VERSION``), fetched once into the control-plane cache by
``hack/fetch-gateway-api.sh``.

- ``gateway_api_crds_dir()``: the directory of the CRD files, fetched when missing.
- ``install_gateway_api(cluster)``: apply them (server-side) and wait until Established.
- ``gateway_api_present(cluster)``: a context manager keeping them installed for its block
  (what the ``gateway_api`` fixture holds for each test that uses it).
- ``without_gateway_api(cluster)``: a context manager for a test of the "CRD missing" path:
  removes the CRDs, yields, and installs them again on the way out, whatever happened.
- ``remove_gateway_api(cluster)``: the removal alone (prefer ``without_gateway_api``).

The CRDs are cluster-scoped, and deleting a CRD deletes every object of its kind (every
HTTPRoute, in every namespace): a test that uses ``without_gateway_api`` must not rely on
HTTPRoutes created before it. Several test sessions may share one cluster (``make cluster``),
so a lock file next to its kubeconfig orders them: tests holding ``gateway_api_present``
(shared) and a ``without_gateway_api`` block (exclusive) never overlap, in any process. A
test may hold both (the fixture, then the block inside it): the block converts the process's
shared hold to exclusive and back. Waiting for the lock gives up after ``LOCK_TIMEOUT``.
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
    lock = _lock_of(cluster)
    lock.acquire_shared()
    try:
        return _install(cluster, timeout)
    finally:
        lock.release_shared()


def remove_gateway_api(cluster: Any, timeout: float = 60) -> None:
    """Delete the CRDs (and with them every Gateway API object) and wait until the API server
    no longer serves the group."""
    names = crd_names(gateway_api_crds_dir())
    # A CRD deleted while its storage still initialises (just installed) stays Terminating:
    # the API server's cleanup fails once ("storage is (re)initializing") and is retried only
    # when the CRD changes again. Delete only once every kind can be listed.
    _wait_until(
        lambda: all(_listable(cluster, name) for name in names),
        timeout,
        "the storage of every Gateway API kind",
    )
    cluster.kubectl(
        "delete", "--ignore-not-found", "--wait=true", f"--timeout={int(timeout)}s",
        *[f"crd/{name}" for name in names], timeout=timeout + 10,
    )  # fmt: skip
    _wait_until(lambda: not _group_served(cluster), timeout, f"{GROUP} to disappear")


@contextlib.contextmanager
def gateway_api_present(cluster: Any) -> Iterator[GatewayAPI]:
    """Keep the CRDs installed for the block: no ``without_gateway_api`` of another test (in
    any session on this cluster) runs meanwhile. Installs them if they are missing."""
    lock = _lock_of(cluster)
    lock.acquire_shared()
    try:
        if _group_served(cluster):
            directory = gateway_api_crds_dir()
            yield GatewayAPI(directory, crd_names(directory))
        else:
            yield _install(cluster, 60)
    finally:
        lock.release_shared()


@contextlib.contextmanager
def without_gateway_api(cluster: Any) -> Iterator[None]:
    """Run the block with the Gateway API CRDs absent from the cluster, then reinstall them.

    Cluster-wide (see the module docstring): keep the block short."""
    lock = _lock_of(cluster)
    lock.acquire_exclusive()
    try:
        remove_gateway_api(cluster)
        try:
            yield
        finally:
            _install(cluster, 60)
    finally:
        lock.release_exclusive()


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


LOCK_TIMEOUT = 600.0
"""Seconds to wait for the Gateway API lock before failing the test that waits."""


class _ClusterLock:
    """``flock`` on one file per cluster, shared or exclusive, counted within this process
    (flock conflicts between two descriptors of one process, so the process keeps one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("a")
        self.shared = 0
        self.exclusive = False

    def acquire_shared(self) -> None:
        if self.shared == 0 and not self.exclusive:
            self._flock(fcntl.LOCK_SH, "a test of another session running without the CRDs")
        self.shared += 1

    def release_shared(self) -> None:
        self.shared -= 1
        if self.shared == 0 and not self.exclusive:
            fcntl.flock(self.file, fcntl.LOCK_UN)

    def acquire_exclusive(self) -> None:
        if self.exclusive:
            raise RuntimeError("without_gateway_api blocks cannot be nested")
        # Converts this process's shared hold, if any, once no other process holds one.
        try:
            self._flock(fcntl.LOCK_EX, "tests of other sessions that need the CRDs")
        except BaseException:
            if self.shared:
                self._flock(fcntl.LOCK_SH, "the lock this process held before")
            raise
        self.exclusive = True

    def release_exclusive(self) -> None:
        self.exclusive = False
        if self.shared:
            self._flock(fcntl.LOCK_SH, "the lock this process held before")
        else:
            fcntl.flock(self.file, fcntl.LOCK_UN)

    def _flock(self, kind: int, holder: str) -> None:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(self.file, kind | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"waited {LOCK_TIMEOUT:.0f}s for {self.path} (held by {holder})"
                    ) from None
                time.sleep(0.2)


_LOCKS: dict[Path, _ClusterLock] = {}


def _lock_of(cluster: Any) -> _ClusterLock:
    path = Path(cluster.kubeconfig).resolve().parent / "gateway-api.lock"
    if path not in _LOCKS:
        _LOCKS[path] = _ClusterLock(path)
    return _LOCKS[path]


def _listable(cluster: Any, crd: str) -> bool:
    """Whether the instances of ``crd`` can be listed (or the CRD is not there at all)."""
    result = cluster.kubectl("get", crd, "--all-namespaces", "-o", "name", check=False)
    return result.returncode == 0 or "the server doesn't have a resource type" in result.stderr


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
