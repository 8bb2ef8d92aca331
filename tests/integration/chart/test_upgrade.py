"""`helm upgrade` from the previous chart version keeps existing ModelDeployments serving.

The previous chart is read from git history (the last commit of that version, pinned below),
so a fresh clone has it without a packaged copy in the tree. It is installed in namespaced
mode; the operator runs as a local process with the chart ServiceAccount's token (as in the
other chart tests) and makes a ModelDeployment Ready. After `helm upgrade` to the chart of the
working tree, the CRD, the ModelDeployment, its children and its pods are the same objects at
the same versions, the release's Roles grant the new rules (among them the Lease, in the release
namespace, through which the replicas elect the one that acts), and the operator, restarted with
them and elected through that Lease, keeps the ModelDeployment Ready without rewriting a child.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.chart.conftest import (
    CHART,
    ROOT,
    Helm,
    apply_md,
    create_namespace,
    get,
    ready_for_current_generation,
    resumed_operator_writes,
    service_account_user,
    serving_snapshot,
    token_kubeconfig,
)
from tests.support.operator_process import wait_for

pytestmark = pytest.mark.integration

PREVIOUS_VERSION = "0.1.0"
# The last commit of chart 0.1.0 (the commit before its bump to 0.2.0).
PREVIOUS_COMMIT = "3ac62d88739274da10ebde6d47943adc5e18c06a"
RELEASE = f"modeldeploy-upgrade-{uuid.uuid4().hex[:6]}"
CHILD_RESOURCES = {
    "deployments",
    "services",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "httproutes",
}


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def previous_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """charts/modeldeploy as it was at PREVIOUS_COMMIT, extracted from git history."""
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout: the previous chart is read from git history")
    if _git("cat-file", "-e", f"{PREVIOUS_COMMIT}^{{commit}}").returncode != 0:
        shallow = _git("rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
        if shallow:
            pytest.skip(
                f"shallow clone without commit {PREVIOUS_COMMIT[:12]} (chart "
                f"{PREVIOUS_VERSION}): run `git fetch --unshallow` to test the upgrade"
            )
        pytest.fail(f"commit {PREVIOUS_COMMIT} of chart {PREVIOUS_VERSION} is not in history")
    archive = _git("archive", "--format=tar", PREVIOUS_COMMIT, "charts/modeldeploy")
    assert archive.returncode == 0, archive.stderr.decode()
    target = tmp_path_factory.mktemp("previous-chart")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        # The "data" filter where this Python has it (3.11.4 and later).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(target, **safe)  # type: ignore[arg-type]
    chart = target / "charts" / "modeldeploy"
    assert yaml.safe_load((chart / "Chart.yaml").read_text())["version"] == PREVIOUS_VERSION
    return chart


@dataclass
class Release:
    namespace: str
    app: str
    values: str


@pytest.fixture(scope="module")
def previous_release(
    cluster: Any, helm: Helm, modeldeployment_crd: str, previous_chart: Path
) -> Iterator[Release]:
    """The previous chart installed, watching one namespace (Roles only there)."""
    namespace = create_namespace(cluster, "upgrade-rel")
    app = create_namespace(cluster, "upgrade-app")
    values = helm.values_file({"watchNamespaces": [app]})
    helm.run("install", RELEASE, str(previous_chart), "-n", namespace, "-f", values, "--wait",
             "--timeout=120s")  # fmt: skip
    yield Release(namespace, app, values)
    helm.run("uninstall", RELEASE, "-n", namespace, "--wait", check=False)
    for name in (app, namespace):
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _chart_label(cluster: Any, release: Release) -> str:
    deployment = get(cluster, "deployment", release.namespace, RELEASE)
    assert deployment is not None
    return str(deployment["metadata"]["labels"]["helm.sh/chart"])


def _crd_uid(cluster: Any) -> str:
    crd = get(cluster, "crd", None, "modeldeployments.serving.modeldeploy.io")
    assert crd is not None
    return str(crd["metadata"]["uid"])


def _can(cluster: Any, user: str, namespace: str, verb: str, resource: str) -> bool:
    answer = cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False
    )
    return answer.stdout.strip() == "yes"


@pytest.mark.usefixtures("gateway_api")  # can-i on httproutes needs the kind to exist
def test_upgrade_from_the_previous_chart_keeps_modeldeployments_serving(
    cluster: Any,
    helm: Helm,
    previous_release: Release,
    run_operator: Any,
    tmp_path: Path,
) -> None:
    app, user = previous_release.app, service_account_user(previous_release.namespace, RELEASE)
    assert _chart_label(cluster, previous_release) == f"modeldeploy-{PREVIOUS_VERSION}"
    kubeconfig = token_kubeconfig(
        cluster, previous_release.namespace, RELEASE, tmp_path / "kubeconfig"
    )
    operator = run_operator(kubeconfig, f"--namespace={app}", "--standalone")
    apply_md(
        cluster, app, "iris", {"model": {"uri": "https://m.example.com/a.onnx"}, "replicas": 2}
    )
    wait_for(lambda: ready_for_current_generation(cluster, app, "iris"), 90, "iris Ready")
    wait_for(
        lambda: len(serving_snapshot(cluster, app, "iris")["pods"]) == 2, 30, "two serving pods"
    )
    operator.stop()
    crd_uid = _crd_uid(cluster)
    before = serving_snapshot(cluster, app, "iris")
    # What the previous chart did not grant (the operator it shipped did not need it).
    assert not _can(cluster, user, app, "delete", "deployments.apps")
    lease = f"leases.coordination.k8s.io/{RELEASE}"
    assert not _can(cluster, user, previous_release.namespace, "update", lease)

    upgraded = helm.run(
        "upgrade", RELEASE, str(CHART), "-n", previous_release.namespace,
        "-f", previous_release.values, "--wait", "--timeout=120s",
    )  # fmt: skip
    assert "REVISION: 2" in upgraded.stdout
    current = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert current != PREVIOUS_VERSION
    assert _chart_label(cluster, previous_release) == f"modeldeploy-{current}"
    for verb, resource in (
        ("delete", "deployments.apps"),
        ("delete", "services"),
        ("watch", "pods"),
        ("patch", "httproutes.gateway.networking.k8s.io"),
    ):
        assert _can(cluster, user, app, verb, resource), (verb, resource)
    # The replicas now elect the one that acts through a Lease in the release namespace.
    for verb in ("get", "update", "patch"):
        assert _can(cluster, user, previous_release.namespace, verb, lease), verb
    assert _can(cluster, user, previous_release.namespace, "create", "leases.coordination.k8s.io")
    assert not _can(cluster, user, app, "update", lease)
    deployment = get(cluster, "deployment", previous_release.namespace, RELEASE)
    assert deployment is not None
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--leader-election-name={RELEASE}" in args and "--standalone" not in args
    assert not any(a.startswith(("--peering-name", "--priority")) for a in args)
    # The CRD and every serving object are untouched by the upgrade itself.
    assert _crd_uid(cluster) == crd_uid
    assert serving_snapshot(cluster, app, "iris") == before

    # The operator comes back with the new rules (as after its pod was replaced): nothing
    # to change, nothing refused.
    # It elects itself through the release's Lease, as the upgraded pods do.
    election = (
        f"--leader-election-name={RELEASE}",
        f"--leader-election-namespace={previous_release.namespace}",
    )
    restarted, writes = resumed_operator_writes(
        cluster, run_operator, kubeconfig, app, user, election
    )
    assert restarted.refusals() == []
    child_writes = [
        (w["verb"], w["objectRef"]["resource"], w["objectRef"].get("name"))
        for w in writes
        if w["objectRef"]["resource"] in CHILD_RESOURCES
    ]
    assert child_writes == []
    after = serving_snapshot(cluster, app, "iris")
    assert after == before
    assert after["phase"] == "Ready"
    md = get(cluster, "mdep", app, "iris")
    assert md is not None
    conditions = {c["type"]: c["status"] for c in md["status"]["conditions"]}
    assert conditions["Ready"] == "True", json.dumps(md["status"])
