"""RBAC is sufficient and minimal: the operator, authenticated as the chart's ServiceAccount,
takes a ModelDeployment through its life with no request refused; the same identity is
refused what it does not need.

The chart is installed in namespaced mode with two replicas (Roles in the watched namespace, and
in the release namespace the Role of the Lease through which the replicas elect the one that
acts), and the operator runs with leader election, so the Lease rules are exercised too. What
canary rollouts need beyond that (deleting the canary Deployment and the per-track Services, the
weighted HTTPRoute, removing the promote/abort annotations) is shown here with real requests
made as that identity; a whole canary run under it belongs with the rollout tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_dev.cluster import free_port
from tests.integration.chart.conftest import (
    CHART,
    Helm,
    apply_md,
    create_namespace,
    get,
    ready_for_current_generation,
    service_account_user,
    token_kubeconfig,
)
from tests.support.operator_process import wait_for
from tests.support.sandbox import as_the_image_runs, namespaces_work

pytestmark = pytest.mark.integration

# Unique per run (ClusterRoles are cluster-wide); contains the chart name, so the objects are
# named after the release.
RELEASE = f"modeldeploy-rbac-{uuid.uuid4().hex[:6]}"
MODEL_A = "https://models.example.com/iris/1/model.onnx"
MODEL_B = "https://models.example.com/iris/2/model.onnx"

# Every write the operator made, as (verb, apiGroup, resource, subresource): each write rule of
# the Role must show up here, or the Role grants more than is used. The canary rollout's
# writes are not made by this lifecycle (deleting Deployments and Services, HTTPRoutes,
# removing the promote/abort annotations: a patch of the ModelDeployment); the test after it
# makes them with the same identity. kopf keeps its own bookkeeping in memory, not in
# annotations, so a lifecycle without a rollout never patches the ModelDeployment itself.
EXPECTED_WRITES = {
    ("patch", "serving.modeldeploy.io", "modeldeployments", "status"),
    ("patch", "apps", "deployments", ""),  # server-side apply
    ("patch", "", "services", ""),
    ("patch", "autoscaling", "horizontalpodautoscalers", ""),
    ("delete", "autoscaling", "horizontalpodautoscalers", ""),
    ("patch", "policy", "poddisruptionbudgets", ""),
    ("delete", "policy", "poddisruptionbudgets", ""),
    ("create", "", "events", ""),
    # Leader election: the Lease created (none yet: the chart's pods run on a KWOK node),
    # renewed (GET, then PUT: update), released on the clean stop (patch).
    ("create", "coordination.k8s.io", "leases", ""),
    ("update", "coordination.k8s.io", "leases", ""),
    ("patch", "coordination.k8s.io", "leases", ""),
}


@dataclass
class Install:
    release_namespace: str
    app: str
    account: str
    kubeconfig: Path

    @property
    def user(self) -> str:
        return service_account_user(self.release_namespace, self.account)


@pytest.fixture(scope="module")
def install(
    cluster: Any, helm: Helm, modeldeployment_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Install]:
    release_ns = create_namespace(cluster, "rbac-rel")
    app = create_namespace(cluster, "rbac-app")
    values = helm.values_file({"replicas": 2, "watchNamespaces": [app]})
    helm.run("install", RELEASE, str(CHART), "-n", release_ns, "-f", values, "--wait",
             "--timeout=120s")  # fmt: skip
    kubeconfig = token_kubeconfig(
        cluster, release_ns, RELEASE, tmp_path_factory.mktemp("sa") / "kubeconfig"
    )
    yield Install(release_ns, app, RELEASE, kubeconfig)
    helm.run("uninstall", RELEASE, "-n", release_ns, "--wait", check=False)
    for name in (app, release_ns):
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def as_operator(cluster: Any, install: Install, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl authenticated with the operator's token."""
    return subprocess.run(
        [str(cluster.tool("kubectl")), f"--kubeconfig={install.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def writes_by(cluster: Any, user: str, since: int) -> list[dict[str, Any]]:
    return cluster.audit_writes(user)[since:]


def test_the_operator_needs_nothing_more_than_the_chart_grants(
    cluster: Any, install: Install, run_operator: Any
) -> None:
    app = install.app
    audit_before = len(cluster.audit_writes(install.user))
    operator = run_operator(
        install.kubeconfig,
        f"--namespace={app}",
        f"--leader-election-name={RELEASE}",
        f"--leader-election-namespace={install.release_namespace}",
        "--resync-seconds=2",  # the resync lists ModelDeployments
    )

    # Create: children and a Ready status.
    apply_md(cluster, app, "iris", {"model": {"uri": MODEL_A}})
    created = wait_for(lambda: ready_for_current_generation(cluster, app, "iris"), 90, "Ready")
    # Update: a new model reaches the Deployment and the status follows the new generation.
    apply_md(cluster, app, "iris", {"model": {"uri": MODEL_B}})
    wait_for(
        lambda: MODEL_B in json.dumps(get(cluster, "deployment", app, "iris")),
        60,
        "the new model in the Deployment",
    )
    updated = wait_for(lambda: ready_for_current_generation(cluster, app, "iris"), 60, "Ready")
    assert updated["metadata"]["generation"] > created["metadata"]["generation"]
    # Autoscaling on, then off (the autoscaler is deleted).
    scaled = {"model": {"uri": MODEL_B}, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}
    apply_md(cluster, app, "iris", scaled)
    wait_for(lambda: get(cluster, "hpa", app, "iris"), 60, "the HorizontalPodAutoscaler")
    apply_md(
        cluster, app, "iris", {"model": {"uri": MODEL_B}, "disruptionBudget": {"minAvailable": 1}}
    )
    wait_for(lambda: get(cluster, "hpa", app, "iris") is None, 60, "the HPA to be deleted")
    wait_for(lambda: get(cluster, "pdb", app, "iris"), 60, "the PodDisruptionBudget")
    # Disruption budget off (deleted).
    apply_md(cluster, app, "iris", {"model": {"uri": MODEL_B}})
    wait_for(lambda: get(cluster, "pdb", app, "iris") is None, 60, "the PDB to be deleted")
    # A child deleted behind the operator's back is restored (it watches the children).
    service_uid = get(cluster, "service", app, "iris")["metadata"]["uid"]  # type: ignore[index]
    cluster.kubectl("delete", "service", "iris", "-n", app)
    wait_for(
        lambda: (
            (get(cluster, "service", app, "iris") or {}).get("metadata", {}).get("uid")
            not in (None, service_uid)
        ),
        60,
        "the Service to be restored",
    )
    # The periodic resync ran (it lists the ModelDeployments).
    wait_for(
        lambda: any(line.get("message") == "resync pass" for line in operator.lines()),
        30,
        "a resync pass",
    )
    # Delete: the children go with their owner (the garbage collector's job).
    cluster.kubectl("delete", "mdep", "iris", "-n", app)
    wait_for(lambda: get(cluster, "deployment", app, "iris") is None, 60, "garbage collection")
    operator.stop()  # a clean exit releases the Lease: one patch

    writes = writes_by(cluster, install.user, audit_before)
    refused = [w for w in writes if w["responseStatus"]["code"] >= 400]
    assert refused == [], [(w["verb"], w["objectRef"], w["responseStatus"]) for w in refused]
    assert operator.refusals() == []
    made = {
        (
            w["verb"],
            w["objectRef"].get("apiGroup", ""),
            w["objectRef"]["resource"],
            w["objectRef"].get("subresource", ""),
        )
        for w in writes
    }
    assert made == EXPECTED_WRITES
    # Server-side apply created each child: authorized as "create" (201 to a PATCH).
    created_by_apply = {
        w["objectRef"]["resource"]
        for w in writes
        if w["verb"] == "patch" and w["responseStatus"]["code"] == 201
    }
    assert created_by_apply == {
        "deployments",
        "services",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
    }
    # Every Lease write is to the release's Lease, in the release namespace.
    leases = {
        (w["objectRef"].get("namespace"), w["objectRef"].get("name"))
        for w in writes
        if w["objectRef"]["resource"] == "leases"
    }
    assert leases == {(install.release_namespace, RELEASE)}
    lease = get(cluster, "lease", install.release_namespace, RELEASE)
    assert lease is not None and not lease["spec"].get("holderIdentity")  # released


@pytest.mark.usefixtures("gateway_api")
def test_the_chart_identity_takes_a_canary_through_promotion_and_rollback(
    cluster: Any, install: Install, run_operator: Any
) -> None:
    """Canary rollouts with Gateway API routing, run by the operator with the chart's
    ServiceAccount: the per-track Deployments, Services and HTTPRoute are created, moved and
    removed, the promote/abort annotations cleared, and nothing is refused."""
    app = install.app
    audit_before = len(cluster.audit_writes(install.user))
    operator = run_operator(install.kubeconfig, f"--namespace={app}", "--standalone")
    # KWOK pods serve nothing, so no contract can be read: as Breaking allows, traffic moves
    # once the (short) progress deadline has passed with the contract Unchecked.
    rollout = {
        "strategy": "Canary",
        "steps": [{"setWeight": 50}, {"pause": {}}],
        "trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "public"}]}},
        "compatibility": "Breaking",
        "progressDeadline": "10s",
    }

    def canary_state() -> str | None:
        md = get(cluster, "mdep", app, "fraud") or {}
        return (md.get("status", {}).get("canary") or {}).get("state")

    def last(result: str) -> bool:
        history = ((get(cluster, "mdep", app, "fraud") or {}).get("status") or {}).get("history")
        return bool(history) and history[0]["result"] == result

    apply_md(cluster, app, "fraud", {"model": {"uri": MODEL_A}, "rollout": rollout})
    wait_for(lambda: ready_for_current_generation(cluster, app, "fraud"), 90, "Ready")
    for uri, annotation, result in (
        (MODEL_B, "serving.modeldeploy.io/promote=true", "Promoted"),
        (MODEL_A, "serving.modeldeploy.io/abort=true", "RolledBack"),
    ):
        apply_md(cluster, app, "fraud", {"model": {"uri": uri}, "rollout": rollout})
        wait_for(lambda: canary_state() == "Paused", 90, "the canary paused at 50%")
        route = get(cluster, "httproute", app, "fraud")
        assert route is not None
        weights = [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]]
        assert weights == [50, 50]
        cluster.kubectl("annotate", "mdep", "fraud", "-n", app, annotation)
        wait_for(lambda result=result: last(result), 90, result)  # type: ignore[misc]
        wait_for(lambda: get(cluster, "deployment", app, "fraud-canary") is None, 60, "no canary")
    cluster.kubectl("delete", "mdep", "fraud", "-n", app)
    wait_for(lambda: get(cluster, "httproute", app, "fraud") is None, 60, "garbage collection")
    operator.stop()

    writes = writes_by(cluster, install.user, audit_before)
    refused = [w for w in writes if w["responseStatus"]["code"] >= 400]
    assert refused == [], [(w["verb"], w["objectRef"], w["responseStatus"]) for w in refused]
    assert operator.refusals() == []
    made = {(w["verb"], w["objectRef"]["resource"]) for w in writes}
    assert {
        ("patch", "httproutes"),
        ("delete", "deployments"),
        ("patch", "modeldeployments"),  # the annotations removed once acted on
    } <= made


@pytest.mark.parametrize(
    "request_",
    [
        ["get", "secret", "some-secret", "-n", "{app}"],
        ["get", "secrets", "-n", "{app}"],
        ["delete", "configmap", "some-configmap", "-n", "{app}"],
        ["delete", "pod", "some-pod", "-n", "{app}"],
        ["get", "pods", "some-pod", "-n", "{app}"],
        ["delete", "deployment", "some-deployment", "-n", "{release}"],
        ["delete", "service", "some-service", "-n", "{release}"],
        ["create", "deployment", "x", "--image=nginx", "-n", "{release}"],
        ["get", "deployments", "-n", "{release}"],
        ["get", "httproutes", "-n", "{release}"],
        ["get", "gateways", "-n", "{app}"],
        ["get", "referencegrants", "-n", "{app}"],
        ["delete", "modeldeployment", "some-model", "-n", "{app}"],
        ["get", "modeldeployments", "-n", "{release}"],
        ["get", "modeldeployments", "--all-namespaces"],
        ["get", "nodes"],
        ["get", "leases", "-n", "{release}"],  # get by name only: no list
        ["get", "lease", "another-lease", "-n", "{release}"],
        ["delete", "lease", "{lease}", "-n", "{release}"],
        ["get", "lease", "{lease}", "-n", "{app}"],  # the Lease is in the release namespace
        ["create", "namespace", "x"],
        ["get", "roles", "-n", "{app}"],
        ["create", "serviceaccount", "x", "-n", "{app}"],
    ],
    ids=lambda r: " ".join(r[:3]).replace("{lease}", "release-lease"),
)
@pytest.mark.usefixtures("gateway_api")  # Gateway API kinds exist: refused, not unknown
def test_the_operator_identity_is_refused_what_it_does_not_need(
    cluster: Any, install: Install, request_: list[str]
) -> None:
    args = [
        a.format(app=install.app, release=install.release_namespace, lease=RELEASE)
        for a in request_
    ]
    result = as_operator(cluster, install, *args)
    assert result.returncode != 0, result.stdout
    assert "forbidden" in result.stderr.lower(), result.stderr


def _canary_children(app: str) -> list[dict[str, Any]]:
    """What a canary rollout with Gateway API traffic writes, shaped as the operator does."""
    labels = {"app.kubernetes.io/managed-by": "modeldeploy"}

    def service(track: str) -> dict[str, Any]:
        selector = {
            "serving.modeldeploy.io/deployment": "probe",
            "serving.modeldeploy.io/track": track,
        }
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"probe-{track}", "namespace": app, "labels": labels},
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 8080}]},
        }

    canary = {
        "serving.modeldeploy.io/deployment": "probe",
        "serving.modeldeploy.io/track": "canary",
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "probe-canary", "namespace": app, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": canary},
                "template": {
                    "metadata": {"labels": canary},
                    "spec": {"containers": [{"name": "server", "image": "example.com/server:1"}]},
                },
            },
        },
        service("stable"),
        service("canary"),
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "probe", "namespace": app, "labels": labels},
            "spec": {
                "parentRefs": [{"name": "public", "namespace": "gateways"}],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "probe-stable", "port": 8080, "weight": 90},
                            {"name": "probe-canary", "port": 8080, "weight": 10},
                        ]
                    }
                ],
            },
        },
    ]


@pytest.mark.usefixtures("gateway_api")
def test_the_operator_identity_can_do_what_canary_rollouts_need(
    cluster: Any, install: Install
) -> None:
    """Real requests as the operator: apply the canary children, move the weights, watch the
    route, remove an acted-upon annotation, delete what a finished rollout leaves behind."""
    app = install.app

    def ok(*args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [str(cluster.tool("kubectl")), f"--kubeconfig={install.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    apply = ("apply", "--server-side", "--field-manager=modeldeploy", "-f", "-")
    children = _canary_children(app)
    ok(*apply, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": children}))
    route = children[-1]
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 50
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = 50
    ok(*apply, input=json.dumps(route))
    listed = json.loads(ok("get", "httproutes", "-n", app, "-o", "json"))["items"]
    assert [r["weight"] for r in listed[0]["spec"]["rules"][0]["backendRefs"]] == [50, 50]
    watched = ok(
        "get", "--raw",
        f"/apis/gateway.networking.k8s.io/v1/namespaces/{app}/httproutes?watch=1&timeoutSeconds=1",
    )  # fmt: skip
    assert '"type":"ADDED"' in watched

    # The promote annotation, removed once acted upon (a patch of the ModelDeployment).
    apply_md(cluster, app, "canary-rbac", {"model": {"uri": MODEL_A}})
    cluster.kubectl(
        "annotate", "mdep", "canary-rbac", "-n", app, "serving.modeldeploy.io/promote=true"
    )
    ok("annotate", "mdep", "canary-rbac", "-n", app, "serving.modeldeploy.io/promote-")
    md = get(cluster, "mdep", app, "canary-rbac")
    assert md is not None
    assert "serving.modeldeploy.io/promote" not in md["metadata"].get("annotations", {})

    # The rollout is over: its canary Deployment, per-track Services and route go.
    ok("delete", "deployment/probe-canary", "service/probe-stable", "service/probe-canary",
       "httproute/probe", "-n", app)  # fmt: skip
    for kind, name in (("deployment", "probe-canary"), ("service", "probe-canary"),
                       ("httproute", "probe")):  # fmt: skip
        assert get(cluster, kind, app, name) is None
    cluster.kubectl("delete", "mdep", "canary-rbac", "-n", app, "--wait=false")


# Granted to every authenticated user by Kubernetes' default roles, not by the chart.
DEFAULT_GRANTS = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    "clustertrustbundles.certificates.k8s.io",
}
ROW = re.compile(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]$")


# The read-only ClusterRole (rbac.discovery), seen from every namespace.
DISCOVERY_GRANTS = {
    ("namespaces", ""): "list watch",
    ("customresourcedefinitions.apiextensions.k8s.io", ""): "list watch",
}


def can_i_list(cluster: Any, install: Install, namespace: str) -> dict[tuple[str, str], str]:
    """`kubectl auth can-i --list` as the operator in ``namespace``: (resource, names) -> verbs."""
    listing = as_operator(cluster, install, "auth", "can-i", "--list", "-n", namespace)
    assert listing.returncode == 0, listing.stderr
    grants = {}
    for line in listing.stdout.splitlines()[1:]:
        match = ROW.match(line)
        if match and match.group(1) not in DEFAULT_GRANTS:
            resource, _, names, verbs = match.groups()
            grants[(resource, names)] = verbs
    return grants


def test_the_api_server_reports_exactly_the_chart_grants(cluster: Any, install: Install) -> None:
    """`kubectl auth can-i --list` as the operator, in the watched namespace."""
    assert can_i_list(cluster, install, install.app) == {
        ("modeldeployments.serving.modeldeploy.io", ""): "get list watch patch",
        ("modeldeployments.serving.modeldeploy.io/status", ""): "patch",
        ("modeldeployments.serving.modeldeploy.io/finalizers", ""): "update",
        ("deployments.apps", ""): "get list watch create patch delete",
        ("services", ""): "get list watch create patch delete",
        ("configmaps", ""): "get list watch create patch",  # the shadow config
        ("httproutes.gateway.networking.k8s.io", ""): "get list watch create patch delete",
        ("horizontalpodautoscalers.autoscaling", ""): "get list watch create patch delete",
        ("poddisruptionbudgets.policy", ""): "get list watch create patch delete",
        ("pods", ""): "list watch",
        ("events", ""): "create",
        **DISCOVERY_GRANTS,
    }


def test_the_api_server_reports_only_the_lease_in_the_release_namespace(
    cluster: Any, install: Install
) -> None:
    """In the release namespace the operator may create a Lease and read, renew and release
    its own, nothing else (but the cluster-wide read-only grants)."""
    assert can_i_list(cluster, install, install.release_namespace) == {
        ("leases.coordination.k8s.io", ""): "create",
        ("leases.coordination.k8s.io", RELEASE): "get update patch",
        **DISCOVERY_GRANTS,
    }


def test_the_operator_runs_as_uid_10001_on_a_read_only_root(
    cluster: Any, install: Install, tmp_path: Path
) -> None:
    if not namespaces_work():
        pytest.skip("needs root and mount namespaces (unshare) to emulate the pod's sandbox")
    stage = tmp_path / "stage"
    stage.mkdir()
    config = json.loads(install.kubeconfig.read_text())
    ca = Path(config["clusters"][0]["cluster"]["certificate-authority"])
    shutil.copy(ca, stage / "ca.crt")
    config["clusters"][0]["cluster"]["certificate-authority"] = "/srv/ca.crt"
    (stage / "kubeconfig").write_text(json.dumps(config))
    for path in (stage, stage / "ca.crt", stage / "kubeconfig"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    command = [
        sys.executable, "-m", "modeldeploy.cli", "operator", f"--namespace={install.app}",
        f"--leader-election-name={RELEASE}",
        f"--leader-election-namespace={install.release_namespace}",
        f"--liveness=http://127.0.0.1:{port}/healthz",
        "--log-format=json", "--kubeconfig=/srv/kubeconfig",
    ]  # fmt: skip
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             as_the_image_runs(stage, command)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:

        def live() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"exited {process.returncode}: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(live, 60, "the sandboxed operator's health endpoint")
        apply_md(cluster, install.app, "sandboxed", {"model": {"uri": MODEL_A}})
        wait_for(
            lambda: ready_for_current_generation(cluster, install.app, "sandboxed"),
            90,
            "a ModelDeployment handled by the sandboxed operator",
        )
    finally:
        process.terminate()
        process.wait(30)
    text = log.read_text()
    assert "Read-only file system" not in text and "Permission denied" not in text
    cluster.kubectl("delete", "mdep", "sandboxed", "-n", install.app, "--wait=false")
