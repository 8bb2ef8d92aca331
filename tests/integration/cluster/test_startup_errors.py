"""A component that cannot start is named, with the tail of its log."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modeldeploy.devcluster import ControlPlaneError, LocalCluster

pytestmark = pytest.mark.integration


def test_a_component_that_fails_to_start_is_named_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = LocalCluster(root=tmp_path / "cluster", ports={"etcd": port})
        with pytest.raises(ControlPlaneError) as failure:
            cluster.start(progress=lambda _: None)
    message = str(failure.value)
    assert message.startswith("etcd")
    assert "address already in use" in message
    assert not cluster.pids  # nothing left running
