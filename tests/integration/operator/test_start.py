"""``modeldeploy operator`` started as a new user starts it, beside another one on the same
machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.conftest import OPERATOR_USER, watching

pytestmark = pytest.mark.integration


def test_a_second_operator_on_a_taken_health_port_says_which_flag_to_change(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> None:
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    first = watching(kubeconfig, namespace, tmp_path / "first.log")
    first.start()
    try:
        second = subprocess.run(
            [
                sys.executable, "-m", "modeldeploy.cli", "operator", "--namespace", namespace,
                "--standalone", "--kubeconfig", str(kubeconfig),
                "--liveness", f"http://127.0.0.1:{first.port}/healthz",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        first.stop()
    assert second.returncode != 0
    assert "Traceback" not in second.stderr
    assert f"cannot listen on 127.0.0.1:{first.port} for --liveness" in second.stderr
    assert "give --liveness (env MODELDEPLOY_LIVENESS) another port" in second.stderr
