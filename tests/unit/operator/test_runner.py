"""``modeldeploy operator``'s start: what it listens on and whether it acts alone (no cluster:
each test stops before kopf logs in)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeldeploy.cli import main


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (say, another operator) listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_taken_liveness_port_stops_the_operator_naming_the_flag(
    taken_port: int, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([
            "operator", "--namespace", "ns", "--kubeconfig", str(tmp_path / "none"),
            "--liveness", f"http://127.0.0.1:{taken_port}/healthz",
        ])  # fmt: skip
    message = str(stopped.value.code)
    assert f"cannot listen on 127.0.0.1:{taken_port} for --liveness" in message
    assert "give --liveness (env MODELDEPLOY_LIVENESS) another port" in message


def test_a_taken_metrics_port_stops_the_operator_naming_the_flag(
    taken_port: int, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([
            "operator", "--namespace", "ns", "--kubeconfig", str(tmp_path / "none"),
            "--liveness", "", "--metrics-address", f"127.0.0.1:{taken_port}",
        ])  # fmt: skip
    message = str(stopped.value.code)
    assert f"cannot listen on 127.0.0.1:{taken_port} for --metrics-address" in message
    assert "give --metrics-address (env MODELDEPLOY_METRICS_ADDRESS) another port" in message
