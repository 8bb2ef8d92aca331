"""The operator as a real process against the real control plane, one per test namespace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.operator_process import OperatorProcess, wait_for

__all__ = ["OPERATOR_USER", "OperatorProcess", "wait_for", "watching"]

OPERATOR_USER = "modeldeploy-operator"


def watching(
    kubeconfig: Path, namespace: str, log: Path, *extra: str, standalone: bool = True
) -> OperatorProcess:
    """An operator watching ``namespace`` (standalone unless peering is under test)."""
    args = ["--namespace", namespace, *(["--standalone"] if standalone else []), *extra]
    return OperatorProcess(kubeconfig, args, log)


@pytest.fixture
def operator(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """A running ``modeldeploy operator`` watching the test's namespace, as its own user."""
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    running = watching(kubeconfig, namespace, tmp_path / "operator.log")
    running.start()
    yield running
    running.stop()
