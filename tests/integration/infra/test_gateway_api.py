"""The Gateway API CRDs of the sigs.k8s.io/gateway-api module, installed in the real local
control plane: an HTTPRoute with weighted backends (what a canary's traffic split becomes) is
accepted and its weights kept; routes the API refuses are refused with the field named."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy_dev.cluster import LocalCluster
from modeldeploy_dev.cluster.binaries import project_root, read_versions
from tests.support.gateway import REQUIRED, GatewayAPI, without_gateway_api

pytestmark = pytest.mark.integration

GROUP = "gateway.networking.k8s.io"


def route(name: str, stable: int, canary: int) -> dict[str, Any]:
    """An HTTPRoute splitting traffic between two per-track Services."""
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["iris.example.com"],
            "rules": [
                {
                    "backendRefs": [
                        {"name": f"{name}-stable", "port": 8080, "weight": stable},
                        {"name": f"{name}-canary", "port": 8080, "weight": canary},
                    ]
                }
            ],
        },
    }


def apply(cluster: Any, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=modeldeploy-test", "-n", namespace, "-f", "-",
        input=json.dumps(manifest),
    )  # fmt: skip


def weights(cluster: Any, namespace: str, name: str) -> list[tuple[str, int]]:
    got = json.loads(
        cluster.kubectl("get", "httproute", name, "-n", namespace, "-o", "json").stdout
    )
    return [(ref["name"], ref["weight"]) for ref in got["spec"]["rules"][0]["backendRefs"]]


def test_the_crds_are_the_pinned_module_version_standard_channel(
    cluster: Any, gateway_api: GatewayAPI
) -> None:
    pinned = read_versions(project_root())["GATEWAY_API_VERSION"]
    assert gateway_api.version == pinned
    assert {f"{kind}.{GROUP}" for kind in REQUIRED} <= set(gateway_api.crds)
    for name in gateway_api.crds:
        crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        annotations = crd["metadata"]["annotations"]
        assert annotations[f"{GROUP}/bundle-version"] == pinned, name
        assert annotations[f"{GROUP}/channel"] == "standard", name
    # Only CRDs were taken from the module (not its ValidatingAdmissionPolicy).
    for path in gateway_api.directory.glob("*.yaml"):
        kinds = {doc["kind"] for doc in yaml.safe_load_all(path.read_text()) if doc}
        assert kinds == {"CustomResourceDefinition"}, path


def test_a_weighted_httproute_is_accepted_and_its_weights_follow_each_apply(
    cluster: Any, gateway_api: GatewayAPI, namespace: str
) -> None:
    for stable, canary in ((100, 0), (90, 10), (50, 50), (0, 100)):
        apply(cluster, namespace, route("iris", stable, canary))
        assert weights(cluster, namespace, "iris") == [
            ("iris-stable", stable),
            ("iris-canary", canary),
        ]


def _refused(
    cluster: Any, namespace: str, manifest: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(manifest),
        check=False,
    )  # fmt: skip


def _with(manifest: dict[str, Any], **backend: Any) -> dict[str, Any]:
    changed = copy.deepcopy(manifest)
    ref = changed["spec"]["rules"][0]["backendRefs"][1]
    ref.update(backend)
    for key, value in backend.items():
        if value is None:
            del ref[key]
    return changed


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ({"weight": -1}, "weight: Invalid value: -1"),
        ({"weight": 1_000_001}, "weight: Invalid value: 1000001"),
        ({"port": None}, "Must have port for Service reference"),
        ({"name": ""}, "name"),
    ],
    ids=["negative-weight", "weight-too-large", "service-without-port", "empty-name"],
)
def test_a_bad_httproute_is_refused_naming_the_field(
    cluster: Any, gateway_api: GatewayAPI, namespace: str, backend: dict[str, Any], message: str
) -> None:
    result = _refused(cluster, namespace, _with(route("bad", 90, 10), **backend))
    assert result.returncode != 0, result.stdout
    assert "spec.rules[0].backendRefs[1]" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert cluster.kubectl("get", "httproute", "bad", "-n", namespace, check=False).returncode


def test_without_gateway_api_removes_the_crds_for_the_block_only(
    cluster: Any, gateway_api: GatewayAPI, namespace: str
) -> None:
    apply(cluster, namespace, route("before", 100, 0))
    with without_gateway_api(cluster):
        discovery = cluster.kubectl("get", "--raw", f"/apis/{GROUP}", check=False)
        assert discovery.returncode != 0
        missing = cluster.kubectl("get", "httproutes", "-n", namespace, check=False)
        assert missing.returncode != 0
        # kubectl says one or the other, depending on its discovery cache.
        assert (
            "the server could not find the requested resource" in missing.stderr
            or "the server doesn't have a resource type" in missing.stderr
        ), missing.stderr
    for name in gateway_api.crds:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
    # Deleting a CRD deletes its objects: the route from before is gone; new ones work.
    gone = cluster.kubectl("get", "httproute", "before", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr or "not found" in gone.stderr, gone.stderr
    apply(cluster, namespace, route("after", 90, 10))
    assert weights(cluster, namespace, "after") == [("after-stable", 90), ("after-canary", 10)]


HOLDER = """
import sys, time
from pathlib import Path
from modeldeploy_dev.cluster import LocalCluster
from tests.support.gateway import gateway_api_present

cluster = LocalCluster.load(Path(sys.argv[1]))
with gateway_api_present(cluster):
    Path(sys.argv[2]).write_text("held")
    while not Path(sys.argv[3]).exists():
        time.sleep(0.05)
"""


def test_a_removal_waits_for_tests_of_other_sessions_that_need_the_crds(
    cluster: Any, gateway_api: GatewayAPI, tmp_path: Path
) -> None:
    """Another process (another pytest session on this cluster) holds the CRDs for a test:
    ``without_gateway_api`` here removes them only once that test is over."""
    if getattr(cluster, "root", None) is None or LocalCluster.load(cluster.root) is None:
        pytest.skip("the cluster is not reachable from another process by its state file")
    held, release = tmp_path / "held", tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cluster.root), str(held), str(release)],
        cwd=project_root(),
    )
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert holder.poll() is None, "the holding process exited"
            assert time.monotonic() < deadline, "the holding process never held the CRDs"
            time.sleep(0.05)
        removed = threading.Event()

        def remove() -> None:
            with without_gateway_api(cluster):
                removed.set()

        remover = threading.Thread(target=remove)
        remover.start()
        time.sleep(2)  # long enough for a removal that did not wait to show
        assert not removed.is_set()
        assert cluster.kubectl("get", "--raw", f"/apis/{GROUP}", check=False).returncode == 0
        release.write_text("done")
        remover.join(120)
        assert removed.is_set()
        assert holder.wait(30) == 0
    finally:
        release.write_text("done")
        holder.wait(30)
