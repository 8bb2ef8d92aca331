"""The paths that keep the operator cheap at scale, against the real control plane: reads served
by the watch-fed stores, pod events that start no reconcile, no write of kopf's bookkeeping, and
the thread that runs the reconciles a ModelDeployment asked for at a later time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller
from modeldeploy.kube import Kube
from tests.integration.operator.conftest import OPERATOR_USER, OperatorProcess, wait_for, watching
from tests.integration.operator.test_reconcile import MODEL_A, apply_md, condition, get, ready

pytestmark = pytest.mark.integration


def requests_in(cluster: Any, namespace: str, since: int = 0) -> list[dict[str, Any]]:
    """The operator's requests about objects in ``namespace`` (audit log, reads included)."""
    return [
        e
        for e in cluster.audit_requests(OPERATOR_USER)[since:]
        if (e.get("objectRef") or {}).get("namespace") == namespace
    ]


def metric(operator: OperatorProcess, name: str) -> float:
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", operator.metrics(), re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def reconciles(operator: OperatorProcess) -> float:
    text = operator.metrics()
    return sum(
        float(m)
        for m in re.findall(r"^modeldeploy_operator_reconciles_total{.*} (\S+)$", text, re.M)
    )


def test_reads_come_from_the_stores_and_handling_writes_no_bookkeeping(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> None:
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    operator = watching(kubeconfig, namespace, tmp_path / "operator.log", "--resync-seconds=3600")
    before = len(cluster.audit_requests(OPERATOR_USER))
    operator.start()
    try:
        names = ["a", "b", "c"]
        for name in names:
            apply_md(cluster, namespace, name, {"model": {"uri": MODEL_A}, "replicas": 2})
        apply_md(
            cluster,
            namespace,
            "huge",
            {"model": {"uri": MODEL_A}, "runtime": {"resources": {"requests": {"cpu": "500"}}}},
        )
        for name in names:
            wait_for(lambda n=name: ready(cluster, namespace, n), 60, f"{name} Ready")

        def degraded() -> dict[str, Any] | None:
            md = get(cluster, "mdep", namespace, "huge")
            return md if condition(md, "Degraded").get("reason") == "PodsUnschedulable" else None

        # The pods' conditions reach the status from the pod store: still the truth.
        md = wait_for(degraded, 60, "Degraded=PodsUnschedulable")
        assert "Insufficient cpu" in condition(md, "Degraded")["message"]

        made = requests_in(cluster, namespace, before)
        pod_reads = [unquote(e["requestURI"]) for e in made if e["objectRef"]["resource"] == "pods"]
        # One list (and watches) of every serving pod; never a list per ModelDeployment.
        assert pod_reads, "the pod watch did not list"
        assert all("managed-by=modeldeploy" in uri for uri in pod_reads), pod_reads
        assert not [u for u in pod_reads if "serving.modeldeploy.io/deployment" in u], pod_reads
        # Children are known from one list per kind and our own applies: never read one by one.
        gets = [e for e in made if e["verb"] == "get"]
        child_gets = [
            e["requestURI"] for e in gets if e["objectRef"]["resource"] != "modeldeployments"
        ]
        assert child_gets == [], child_gets
        # The one ModelDeployment read: "huge", reconciled afresh when its pod turned out
        # unschedulable (an event of the pod, not of a child).
        md_gets = {
            e["objectRef"]["name"] for e in gets if e["objectRef"]["resource"] == "modeldeployments"
        }
        assert md_gets <= {"huge"}, md_gets
        # kopf keeps its bookkeeping in memory: no annotation patch on the ModelDeployments.
        md_patches = [
            e["requestURI"]
            for e in made
            if e["objectRef"]["resource"] == "modeldeployments"
            and e["verb"] == "patch"
            and e["objectRef"].get("subresource") != "status"
        ]
        assert md_patches == [], md_patches
        annotations = get(cluster, "mdep", namespace, "a")["metadata"].get("annotations", {})  # type: ignore[index]
        assert not [k for k in annotations if k.startswith("serving.modeldeploy.io/")]

        # A pod event updates the store only: it starts no reconcile.
        settled = reconciles(operator)
        seen = metric(operator, "modeldeploy_operator_pod_events_total")
        cluster.kubectl(
            "label", "pods", "-n", namespace, "-l", "serving.modeldeploy.io/deployment=a",
            "example.com/touched=1",
        )  # fmt: skip
        wait_for(
            lambda: metric(operator, "modeldeploy_operator_pod_events_total") >= seen + 2,
            30,
            "the pod watch to see both labelled pods",
        )
        assert reconciles(operator) == settled
    finally:
        operator.stop()


def test_the_requeue_thread_reconciles_a_due_object_read_fresh(
    cluster: Any, namespace: str, modeldeployment_crd: str
) -> None:
    kube = Kube(cluster.api_client())
    config = OperatorConfig(namespaces=(namespace,))
    controller = Controller(kube, config, lambda _body: lambda *_: None)
    controller.start()
    try:
        apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}})
        md = get(cluster, "mdep", namespace, "iris")
        assert md is not None and "status" not in md  # no operator runs: nothing reconciled it
        uid = md["metadata"]["uid"]
        # As if a reconcile had asked to run again in a moment (a rollout's next step).
        controller.requeues.set(uid, namespace, "iris", 0.2)

        def reconciled() -> dict[str, Any] | None:
            md = get(cluster, "mdep", namespace, "iris") or {}
            current = md["metadata"]["generation"]
            return md if md.get("status", {}).get("observedGeneration") == current else None

        wait_for(reconciled, 60, "the due reconcile to write a status")
        assert get(cluster, "deployment", namespace, "iris") is not None
        assert get(cluster, "service", namespace, "iris") is not None

        # Due again, but the object was deleted meanwhile: forgotten, nothing recreated.
        assert (namespace, "iris") in controller.statuses()
        cluster.kubectl("delete", "mdep", "iris", "-n", namespace, "--wait=true")
        controller.requeues.set(uid, namespace, "iris", 0.0)
        wait_for(lambda: (namespace, "iris") not in controller.statuses(), 30, "forgotten")
        assert len(controller.requeues) == 0
        assert get(cluster, "mdep", namespace, "iris") is None
    finally:
        controller.stop()
