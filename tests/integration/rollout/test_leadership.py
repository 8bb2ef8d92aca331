"""A change of leader during a rollout: the replica that leads again resumes from the API's
status, not from the one it wrote before it lost the Lease."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.conftest import OPERATOR_USER, OperatorProcess, watching
from tests.integration.rollout.conftest import (
    NEW,
    OLD,
    set_model,
    spec,
    status_of,
    wait_stable,
)
from tests.integration.rollout.test_canary import canary
from tests.support.kubectl import apply_md, get
from tests.support.operator_process import wait_for

pytestmark = pytest.mark.integration

# Short Leases, so that the flips take seconds.
LEASE = ("--lease-duration=4", "--renew-deadline=3", "--retry-period=1")


def leading(operator: OperatorProcess) -> int:
    return sum(line.get("message") == "leading" for line in operator.lines())


def test_a_replica_that_leads_again_does_not_revert_what_the_other_promoted(
    cluster: Any, namespace: str, modeldeployment_crd: str, stand_ins: Any, tmp_path: Path
) -> None:
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    first = watching(kubeconfig, namespace, tmp_path / "first.log", *LEASE, standalone=False)
    second = watching(kubeconfig, namespace, tmp_path / "second.log", *LEASE, standalone=False)
    first.start()
    try:
        wait_for(lambda: leading(first), 60, "the first replica to lead")
        second.start()
        apply_md(cluster, namespace, "iris", spec([{"setWeight": 25}, {"pause": {}}]))
        wait_stable(cluster, namespace, "iris", OLD)
        set_model(cluster, namespace, "iris", NEW)
        wait_for(lambda: canary(cluster, namespace, "iris").get("state") == "Paused", 60, "paused")

        # The first replica freezes (a long pause, a partitioned node): the second takes over
        # and, asked to, promotes the canary.
        assert first.process is not None and second.process is not None
        first.process.send_signal(signal.SIGSTOP)
        wait_for(lambda: leading(second), 60, "the second replica to lead")
        cluster.kubectl(
            "annotate", "mdep", "iris", "-n", namespace, "serving.modeldeploy.io/promote=true"
        )
        wait_stable(cluster, namespace, "iris", NEW)
        wait_for(lambda: get(cluster, "deployment", namespace, "iris-canary") is None, 60, "gone")

        # Now the second freezes and the first wakes up: it must lead again from the API.
        second.process.send_signal(signal.SIGSTOP)
        first.process.send_signal(signal.SIGCONT)
        wait_for(lambda: leading(first) == 2, 60, "the first replica to lead again")
        time.sleep(5)  # its pass over every ModelDeployment, then some
        status = status_of(cluster, namespace, "iris")
        assert status["stable"]["uri"] == NEW, status
        assert status.get("canary") is None, status
        stable = get(cluster, "deployment", namespace, "iris")
        assert stable is not None and NEW in json.dumps(stable["spec"]["template"])
        assert OLD not in json.dumps(stable["spec"]["template"])
        assert get(cluster, "deployment", namespace, "iris-canary") is None
    finally:
        for process in (first, second):
            if process.process is not None and process.process.poll() is None:
                process.process.send_signal(signal.SIGCONT)
            process.stop()
