"""The chart against the real control plane: helm, a ServiceAccount's token, the operator as it.

kopf cannot use impersonation (``as:``) in a kubeconfig, so the operator runs with a token of
the chart's ServiceAccount (``kubectl create token``): the API server then authorizes every
request exactly as it would for the operator's pod.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import kubectl
from tests.support.kubectl import get
from tests.support.operator_process import OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "modeldeploy"


@dataclass
class Helm:
    """The real helm binary, talking to the local control plane."""

    cluster: Any
    home: Path

    def run(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        result = subprocess.run(
            [str(self.cluster.tool("helm")), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def values_file(self, values: dict[str, Any]) -> str:
        path = self.home / f"values-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    def template(
        self, release: str, namespace: str, values: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The rendered objects (CRDs excluded, as `helm template` does by default)."""
        out = self.run(
            "template", release, str(CHART), "--namespace", namespace,
            "-f", self.values_file(values or {}),
        ).stdout  # fmt: skip
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def helm(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(cluster, tmp_path_factory.mktemp("helm"))


def create_namespace(cluster: Any, prefix: str) -> str:
    # The chart's operator pod runs on a KWOK node here: these tests are about what the API
    # server decides (the real-node tests install the chart with built images).
    return str(cluster.create_namespace(f"{prefix}-{uuid.uuid4().hex[:8]}", kwok=True))


def token_kubeconfig(cluster: Any, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/account`` (a bound token)."""
    token = cluster.kubectl(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    admin = json.loads(Path(cluster.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": account}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def service_account_user(namespace: str, account: str) -> str:
    return f"system:serviceaccount:{namespace}:{account}"


@pytest.fixture
def run_operator(tmp_path: Path) -> Iterator[Any]:
    """Start operators (stopped at the end of the test)."""
    started: list[OperatorProcess] = []

    def start(kubeconfig: Path, *args: str) -> OperatorProcess:
        operator = OperatorProcess(
            kubeconfig, list(args), tmp_path / f"operator-{len(started)}.log"
        )
        started.append(operator)
        operator.start()
        return operator

    yield start
    for operator in started:
        operator.stop()


def apply_md(cluster: Any, namespace: str, name: str, spec: dict[str, Any]) -> None:
    """Chart tests apply ModelDeployments server-side."""
    kubectl.apply_md(cluster, namespace, name, spec, server_side=True)


def resumed_operator_writes(
    cluster: Any,
    run_operator: Any,
    kubeconfig: Path,
    namespace: str,
    user: str,
    election: tuple[str, ...] = ("--standalone",),
) -> tuple[OperatorProcess, list[dict[str, Any]]]:
    """Run the operator again (as after its pod was replaced) until it has handled the
    ModelDeployments of ``namespace``, stop it, and return it with the writes ``user`` made.
    ``election``: its leader-election flags (the release's Lease, or --standalone)."""
    writes_before = len(cluster.audit_writes(user))
    resumed = run_operator(kubeconfig, f"--namespace={namespace}", *election)
    # Standalone, it acts on kopf's first listing; elected, on the pass over every
    # ModelDeployment that it makes when it starts to lead.
    done = "'modeldeployment' succeeded" if "--standalone" in election else "resync pass"
    wait_for(
        lambda: any(done in str(line.get("message")) for line in resumed.lines()),
        60,
        "the resumed operator to handle the ModelDeployments",
    )
    resumed.stop()
    return resumed, cluster.audit_writes(user)[writes_before:]


def ready_for_current_generation(cluster: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The ModelDeployment when the operator reports it Ready for its current generation."""
    md = get(cluster, "mdep", namespace, name)
    if not md:
        return None
    status = md.get("status", {})
    current = status.get("observedGeneration") == md["metadata"]["generation"]
    return md if current and status.get("phase") == "Ready" else None


def serving_snapshot(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    """What an upgrade of the chart must not change: identities and versions of a
    ModelDeployment's serving objects and pods."""
    md = get(cluster, "mdep", namespace, name)
    deployment = get(cluster, "deployment", namespace, name)
    service = get(cluster, "service", namespace, name)
    assert md and deployment and service
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", f"serving.modeldeploy.io/deployment={name}",
            "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    return {
        "modeldeployment": (md["metadata"]["uid"], md["metadata"]["generation"]),
        "phase": md["status"]["phase"],
        "deployment": (deployment["metadata"]["uid"], deployment["metadata"]["resourceVersion"]),
        "service": (service["metadata"]["uid"], service["metadata"]["resourceVersion"]),
        "pods": sorted(p["metadata"]["uid"] for p in pods),
    }
