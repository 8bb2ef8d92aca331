"""Replicas elect the one that acts through a coordination.k8s.io Lease."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.conftest import OPERATOR_USER, OperatorProcess, wait_for, watching
from tests.integration.operator.test_reconcile import MODEL_A, MODEL_B, apply_md, get

pytestmark = pytest.mark.integration


def acted(operator: OperatorProcess, name: str) -> bool:
    return any(
        line.get("message") == "reconciled" and line.get("modeldeployment") == name
        for line in operator.lines()
    )


def said(operator: OperatorProcess, message: str) -> int:
    return sum(line.get("message") == message for line in operator.lines())


def leading_metric(operator: OperatorProcess) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith("modeldeploy_operator_leading "):
            return float(line.split()[1])
    raise AssertionError("no modeldeploy_operator_leading metric")


def holder(cluster: Any, namespace: str) -> str | None:
    lease = get(cluster, "lease", namespace, "modeldeploy") or {}
    return lease.get("spec", {}).get("holderIdentity")


def test_an_operator_started_without_flags_leads_and_acts(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> None:
    """As a new user starts it: no --standalone, no Lease yet. It must act, and say it leads."""
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    operator = watching(kubeconfig, namespace, tmp_path / "operator.log", standalone=False)
    operator.start()
    try:
        apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}})
        wait_for(lambda: get(cluster, "deployment", namespace, "iris"), 60, "the Deployment")
        assert said(operator, "leading") == 1
        assert leading_metric(operator) == 1
        assert str(holder(cluster, namespace)).startswith("modeldeploy@")
    finally:
        operator.stop()


def test_only_the_leader_acts_and_a_standby_takes_over_when_it_dies(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> None:
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    leader = watching(
        kubeconfig, namespace, tmp_path / "leader.log", "--resync-seconds=1", standalone=False
    )
    standby = watching(
        kubeconfig, namespace, tmp_path / "standby.log", "--resync-seconds=1", standalone=False
    )
    leader.start()
    try:
        wait_for(lambda: said(leader, "leading"), 60, "the first replica to lead")
        standby.start()
        wait_for(
            lambda: said(standby, "waiting to lead: another replica holds the Lease"),
            30,
            "the second replica to say it waits",
        )
        assert leading_metric(standby) == 0
        apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}})
        wait_for(lambda: acted(leader, "iris"), 60, "the leader to act")
        time.sleep(3)  # several resync rounds: the standby's pause with it
        assert not acted(standby, "iris")

        assert leader.process is not None
        leader.process.send_signal(signal.SIGKILL)  # no chance to release the Lease
        died = time.monotonic()
        leader.process.wait()
        wait_for(lambda: said(standby, "leading"), 60, "the standby to take over")
        print(f"failover after the leader was killed: {time.monotonic() - died:.1f} s")
        apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_B}})
        wait_for(
            lambda: f"--model-uri={MODEL_B}" in str(get(cluster, "deployment", namespace, "iris")),
            60,
            "the new leader to act",
        )
        assert leading_metric(standby) == 1
    finally:
        leader.stop()
        standby.stop()


def test_a_leader_that_stops_cleanly_hands_the_lease_over_at_once(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> None:
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    leader = watching(kubeconfig, namespace, tmp_path / "leader.log", standalone=False)
    standby = watching(kubeconfig, namespace, tmp_path / "standby.log", standalone=False)
    leader.start()
    try:
        wait_for(lambda: said(leader, "leading"), 60, "the first replica to lead")
        standby.start()
        wait_for(
            lambda: said(standby, "waiting to lead: another replica holds the Lease"), 30, "wait"
        )
        stopped = time.monotonic()
        leader.stop()  # SIGTERM: the operator releases the Lease on its way out
        assert said(leader, "released the Lease") == 1
        wait_for(lambda: said(standby, "leading"), 30, "the standby to take over")
        print(f"failover after a clean stop: {time.monotonic() - stopped:.1f} s")
    finally:
        leader.stop()
        standby.stop()
