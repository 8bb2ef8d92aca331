"""A component that cannot start is named, with the tail of its log."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_dev.cluster import ControlPlaneError, LocalCluster

pytestmark = pytest.mark.integration


def test_a_component_that_fails_to_start_is_named_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The control plane alone: the session's cluster holds the machine's real node.
        cluster = LocalCluster(root=tmp_path / "cluster", ports={"etcd": port}, node=False)
        with pytest.raises(ControlPlaneError) as failure:
            cluster.start(progress=lambda _: None)
    message = str(failure.value)
    assert message.startswith("etcd")
    assert "address already in use" in message
    assert not cluster.pids  # nothing left running


def test_a_second_real_node_is_refused_naming_the_running_one(cluster: Any, tmp_path: Path) -> None:
    second = LocalCluster(root=tmp_path / "second")
    with pytest.raises(ControlPlaneError) as refused:
        second.start(progress=lambda _: None)
    message = str(refused.value)
    assert "another local cluster's real node is running" in message
    assert "10.244.0.1:10250" in message and "make cluster-down" in message
    assert not second.pids
    # The running cluster is untouched.
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
