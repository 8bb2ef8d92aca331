"""Two operator replicas with peering: only the one with the highest priority acts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.conftest import OPERATOR_USER, OperatorProcess, wait_for, watching
from tests.integration.operator.test_reconcile import MODEL_A, MODEL_B, apply_md, get

pytestmark = pytest.mark.integration


def _acted(operator: OperatorProcess, name: str) -> bool:
    return any(
        line.get("message") == "reconciled" and line.get("modeldeployment") == name
        for line in operator.lines()
    )


def test_only_the_leading_replica_acts_and_the_other_takes_over(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> None:
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": "modeldeploy"},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(peering))
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    leader = watching(
        kubeconfig, namespace, tmp_path / "leader.log", "--priority=200", "--resync-seconds=1",
        standalone=False,
    )  # fmt: skip
    follower = watching(
        kubeconfig, namespace, tmp_path / "follower.log", "--priority=100", "--resync-seconds=1",
        standalone=False,
    )  # fmt: skip
    follower.start()
    leader.start()
    try:
        wait_for(
            lambda: any(
                "paused" in str(line.get("message", "")).lower() for line in follower.lines()
            ),
            60,
            "the lower-priority replica to pause",
        )
        apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_A}})
        wait_for(lambda: _acted(leader, "iris"), 60, "the leader to act")
        # Several resync rounds later, the follower still has not acted: its resync pauses too.
        wait_for(
            lambda: (
                sum(
                    x.get("message") == "resync skipped: another replica leads"
                    for x in follower.lines()
                )
                >= 3
            ),
            30,
            "the follower's resync to defer to the leader",
        )
        assert not _acted(follower, "iris")
        leader.stop()  # a clean exit leaves the peering at once
        apply_md(cluster, namespace, "iris", {"model": {"uri": MODEL_B}})
        wait_for(
            lambda: f"--model-uri={MODEL_B}" in str(get(cluster, "deployment", namespace, "iris")),
            120,
            "the remaining replica to take over",
        )
        wait_for(lambda: _acted(follower, "iris"), 30, "the follower's log of it")
    finally:
        leader.stop()
        follower.stop()
