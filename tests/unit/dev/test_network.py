"""The node's host network: what is decided before any packet is sent."""

from __future__ import annotations

import pytest

from modeldeploy_dev.cluster import network
from modeldeploy_dev.cluster.network import is_local_address, node_running


def test_loopback_is_local_and_a_documentation_address_is_not() -> None:
    assert is_local_address("127.0.0.1")
    # TEST-NET-3 (RFC 5737): on no interface of any machine.
    assert not is_local_address("203.0.113.77")


def test_no_node_is_probed_while_no_interface_holds_its_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the bridge, a connection to the node's address would leave the machine, and a
    network that accepts every connection would make it look like a running kubelet."""
    monkeypatch.setattr(network, "GATEWAY", "203.0.113.77")
    connects: list[object] = []
    monkeypatch.setattr(
        network.socket.socket, "connect_ex", lambda self, addr: connects.append(addr) or 0
    )
    assert not node_running()
    assert connects == []


def test_a_kubelet_port_answering_on_a_local_address_is_a_running_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setattr(network, "GATEWAY", "127.0.0.1")
        assert node_running(listener.getsockname()[1])
