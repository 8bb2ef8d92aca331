"""`helm install --wait` as a new user runs it (cluster-wide, defaults), and `helm upgrade`
leaving an existing ModelDeployment and its pods untouched.

The upgrade here goes from this chart to this chart with changed values (one replica to two,
both electing the one that acts through the release's Lease); test_upgrade.py upgrades from the
previous chart version.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chart.conftest import (
    CHART,
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

# Unique per run (ClusterRoles are cluster-wide); objects are named after the release.
RELEASE = f"modeldeploy-install-{uuid.uuid4().hex[:6]}"
CRDS = ("modeldeployments.serving.modeldeploy.io",)


@dataclass
class Release:
    namespace: str
    app: str
    notes: str


@pytest.fixture(scope="module")
def release(cluster: Any, helm: Helm, modeldeployment_crd: str) -> Iterator[Release]:
    """The chart installed with its defaults. The session's CRDs come first (a cluster reused
    across sessions may hold older ones; Helm never replaces existing CRDs)."""
    namespace = create_namespace(cluster, "install-rel")
    app = create_namespace(cluster, "install-app")
    installed = helm.run(
        "install", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout=120s"
    )
    yield Release(namespace, app, installed.stdout)
    helm.run("uninstall", RELEASE, "-n", namespace, "--wait", check=False)
    for name in (app, namespace):
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_install_waits_for_the_operator_and_establishes_the_crds(
    cluster: Any, helm: Helm, release: Release
) -> None:
    status = json.loads(helm.run("status", RELEASE, "-n", release.namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    deployment = get(cluster, "deployment", release.namespace, RELEASE)
    assert deployment is not None
    assert deployment["status"].get("readyReplicas") == 1
    for crd in CRDS:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    # The CRDs in the cluster are the chart's (whoever installed them first).
    diff = cluster.kubectl(
        "diff", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"), check=False
    )
    assert diff.returncode == 0, diff.stdout[-2000:]
    assert "kubectl get mdep" in release.notes


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "modeldeployments.serving.modeldeploy.io", True),
        ("patch", "modeldeployments.serving.modeldeploy.io/status", True),
        ("list", "deployments.apps", True),
        ("create", "horizontalpodautoscalers.autoscaling", True),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", True),
        ("get", "secrets", False),
        ("patch", "configmaps", True),  # the shadow config of each ModelDeployment
        ("delete", "configmaps", False),
        ("delete", "deployments.apps", True),  # the canary Deployment, after a rollout
        ("delete", "services", True),  # the per-track Services, after a rollout
        ("patch", "httproutes.gateway.networking.k8s.io", True),
        ("update", "deployments.apps", False),  # server-side apply patches, never updates
        ("delete", "modeldeployments.serving.modeldeploy.io", False),
        ("create", "gateways.gateway.networking.k8s.io", False),
        ("list", "namespaces", False),  # only needed when watching some namespaces
        ("list", "nodes", False),
        ("create", "pods", False),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", False),
    ],
)
@pytest.mark.usefixtures("gateway_api")  # can-i on httproutes needs the kind to exist
def test_cluster_wide_grants(
    cluster: Any, release: Release, verb: str, resource: str, allowed: bool
) -> None:
    user = service_account_user(release.namespace, RELEASE)
    answer = cluster.kubectl(
        "auth", "can-i", verb, resource, "--all-namespaces", f"--as={user}", check=False
    )
    assert answer.stdout.strip() == ("yes" if allowed else "no"), answer.stderr


@pytest.mark.parametrize(
    ("verb", "lease", "where", "allowed"),
    [
        ("create", "", "release", True),  # the first replica creates the Lease
        ("get", RELEASE, "release", True),
        ("update", RELEASE, "release", True),  # renewals and takeovers (GET, then PUT)
        ("patch", RELEASE, "release", True),  # released on a clean stop
        ("update", "another-lease", "release", False),
        ("get", "another-lease", "release", False),
        ("delete", RELEASE, "release", False),
        ("list", "", "release", False),
        ("watch", "", "release", False),
        ("update", RELEASE, "app", False),  # only in the release namespace
        ("create", "", "app", False),
    ],
)
def test_lease_grants(
    cluster: Any, release: Release, verb: str, lease: str, where: str, allowed: bool
) -> None:
    user = service_account_user(release.namespace, RELEASE)
    namespace = release.namespace if where == "release" else release.app
    resource = "leases.coordination.k8s.io" + (f"/{lease}" if lease else "")
    answer = cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False
    )
    assert answer.stdout.strip() == ("yes" if allowed else "no"), answer.stderr


def test_the_operator_runs_leader_election(cluster: Any, release: Release) -> None:
    deployment = get(cluster, "deployment", release.namespace, RELEASE)
    assert deployment is not None
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--leader-election-name={RELEASE}" in args
    assert f"--leader-election-namespace={release.namespace}" in args
    assert "--standalone" not in args
    assert not any(a.startswith(("--peering-name", "--priority")) for a in args)
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.fixture
def namespaces_readable(cluster: Any, release: Release) -> Iterator[None]:
    """Test scaffolding, not the chart: the test runs the operator with --namespace (so that
    it leaves other tests' ModelDeployments alone) where the pod runs --all-namespaces, and in
    that mode kopf also lists and watches namespaces."""
    name = f"{RELEASE}-{release.namespace}-test-only"
    cluster.kubectl("create", "clusterrole", name, "--verb=list,watch", "--resource=namespaces")
    cluster.kubectl("create", "clusterrolebinding", name, f"--clusterrole={name}",
                    f"--serviceaccount={release.namespace}:{RELEASE}")  # fmt: skip
    yield
    cluster.kubectl("delete", "clusterrolebinding,clusterrole", name, check=False)


@pytest.mark.usefixtures("namespaces_readable")
def test_upgrade_keeps_existing_modeldeployments_serving(
    cluster: Any, helm: Helm, release: Release, run_operator: Any, tmp_path: Path
) -> None:
    app = release.app
    user = service_account_user(release.namespace, RELEASE)
    kubeconfig = token_kubeconfig(cluster, release.namespace, RELEASE, tmp_path / "kubeconfig")
    # The operator with the release's identity (its ClusterRole and the Lease's Role), limited
    # to the test's namespace so that it leaves other tests' ModelDeployments alone. It elects
    # itself through the release's Lease as the pods do (the chart's pods run on a KWOK node
    # here and never take it).
    operator = run_operator(
        kubeconfig, f"--namespace={app}", f"--leader-election-name={RELEASE}",
        f"--leader-election-namespace={release.namespace}",
    )  # fmt: skip
    apply_md(
        cluster, app, "iris", {"model": {"uri": "https://m.example.com/a.onnx"}, "replicas": 2}
    )
    wait_for(lambda: ready_for_current_generation(cluster, app, "iris"), 90, "iris Ready")
    wait_for(
        lambda: len(serving_snapshot(cluster, app, "iris")["pods"]) == 2, 30, "two serving pods"
    )
    operator.stop()
    assert operator.refusals() == []
    before = serving_snapshot(cluster, app, "iris")

    values = helm.values_file({"replicas": 2})
    upgraded = helm.run(
        "upgrade", RELEASE, str(CHART), "-n", release.namespace, "-f", values, "--wait",
        "--timeout=120s",
    )  # fmt: skip
    assert "REVISION: 2" in upgraded.stdout
    operator_deployment = get(cluster, "deployment", release.namespace, RELEASE)
    assert operator_deployment is not None
    assert operator_deployment["spec"]["replicas"] == 2
    args = operator_deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--leader-election-name={RELEASE}" in args and "--standalone" not in args
    # The test's operator held the Lease and released it on its clean stop (no holder).
    lease = get(cluster, "lease", release.namespace, RELEASE)
    assert lease is not None and not lease["spec"].get("holderIdentity")
    can_update = cluster.kubectl(
        "auth", "can-i", "update", f"leases.coordination.k8s.io/{RELEASE}",
        "-n", release.namespace, f"--as={user}", check=False,
    )  # fmt: skip
    assert can_update.stdout.strip() == "yes"
    assert serving_snapshot(cluster, app, "iris") == before

    # The operator comes back (as after its pods were replaced) and finds nothing to change.
    _, writes = resumed_operator_writes(cluster, run_operator, kubeconfig, app, user)
    serving_writes = [
        w for w in writes if w["objectRef"]["resource"] in ("deployments", "services")
    ]
    assert serving_writes == []
    after = serving_snapshot(cluster, app, "iris")
    assert after == before
    assert after["phase"] == "Ready"
