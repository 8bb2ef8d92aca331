"""Shared fixtures: the real local control plane, a namespace per test, the installed CRD."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.gateway import GatewayAPI
    from tests.support.prometheus import Prometheus

ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "crds" / "modeldeployment.yaml"
CRD_NAME = "modeldeployments.serving.modeldeploy.io"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration and tests/e2e talks to real processes."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if len(parts) > 1 and parts[1] in ("integration", "e2e"):
            item.add_marker(pytest.mark.integration)


def _progress(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The local control plane: the one `make cluster` runs, or a private one for the session."""
    from modeldeploy_dev.cluster import running_cluster

    fallback = tmp_path_factory.mktemp("cluster")
    with running_cluster(ROOT / ".cluster", fallback, progress=_progress) as running:
        yield running


@pytest.fixture
def namespace(cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh namespace whose pods go to the KWOK nodes (Running and Ready without a
    container), deleted (without waiting) after the test."""
    name = cluster.create_namespace(f"t-{uuid.uuid4().hex[:10]}", kwok=True)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def node_namespace(cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh namespace whose pods run on the real node, deleted after the test (its pods
    without their grace periods; waiting until its containers are gone, before the next test
    starts its own)."""
    name = cluster.create_namespace(f"n-{uuid.uuid4().hex[:10]}")
    yield name
    cluster.delete_namespace_now(name)


@pytest.fixture(scope="session")
def modeldeployment_crd(cluster) -> str:  # type: ignore[no-untyped-def]
    """The generated CRD applied and Established; returns its name."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    return CRD_NAME


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test ONNX model, built once per session for the unit and integration tests."""
    from tests.support import onnx_models

    directory = tmp_path_factory.mktemp("models")
    return {
        "classifier": onnx_models.make_classifier(directory / "classifier.onnx"),
        "regressor": onnx_models.make_regressor(directory / "regressor.onnx"),
        "mixed": onnx_models.make_mixed_inputs(directory / "mixed.onnx"),
        "text": onnx_models.make_text_classifier(directory / "text.onnx"),
        "fp16": onnx_models.make_fp16_scaler(directory / "fp16.onnx"),
        "identity": onnx_models.make_identity(directory / "identity.onnx"),
        "zipmap": onnx_models.make_zipmap_classifier(directory / "zipmap.onnx"),
        "spinner": onnx_models.make_spinner(directory / "spinner.onnx"),
    }


@pytest.fixture(scope="session")
def gateway_api_installed(cluster) -> GatewayAPI:  # type: ignore[no-untyped-def]
    """The Gateway API CRDs (standard channel, from the sigs.k8s.io/gateway-api module at
    GATEWAY_API_VERSION) applied and Established, once per session; fetched into the cache
    on first use. Tests use ``gateway_api``, which also keeps them present during the test."""
    from tests.support.gateway import install_gateway_api

    return install_gateway_api(cluster)


@pytest.fixture
def gateway_api(cluster, gateway_api_installed: GatewayAPI) -> Iterator[GatewayAPI]:  # type: ignore[no-untyped-def]
    """The Gateway API CRDs, installed and kept installed for the test: a test of another
    session on the same cluster that removes them (``without_gateway_api``) waits for it, and
    the other way round. A ``tests.support.gateway.GatewayAPI`` (``.directory``, ``.crds``,
    ``.version``). A test of the "CRD missing" path uses
    ``tests.support.gateway.without_gateway_api(cluster)`` inside it."""
    from tests.support.gateway import gateway_api_present

    with gateway_api_present(cluster) as present:
        yield present


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus on a loopback port, scraping every second, with no targets yet:
    ``set_targets([("127.0.0.1:port", {"namespace": "ns1"}), ...])``, ``wait_for_targets()``,
    ``query(promql)``, ``value(promql)``, ``wait_for_series(promql)``, ``url``
    (``tests.support.prometheus.Prometheus``). Stopped after the test."""
    from tests.support.prometheus import Prometheus

    with Prometheus(tmp_path / "prometheus") as running:
        yield running
