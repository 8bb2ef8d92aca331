"""Canary rollouts against the real control plane, a real Prometheus and real servers.

Pods are simulated by KWOK, so real ``modeldeploy-server`` processes stand in for the stable
and canary pods: their metrics carry the ModelDeployment's name and the track, Prometheus
scrapes them with the namespace label a ServiceMonitor would add, and a load thread sends them
real inference requests. The operator reads the analysis from that Prometheus.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.operator.conftest import OPERATOR_USER, watching
from tests.support.kubectl import apply_md, condition, get
from tests.support.load import Load
from tests.support.operator_process import OperatorProcess, wait_for
from tests.support.prometheus import Prometheus
from tests.support.servers import ServerProcess

OLD = "https://models.example.com/iris/1/model.onnx"
NEW = "https://models.example.com/iris/2/model.onnx"


def set_model(cluster: Any, namespace: str, name: str, uri: str) -> None:
    patch = json.dumps({"spec": {"model": {"uri": uri}}})
    cluster.kubectl("patch", "mdep", name, "-n", namespace, "--type=merge", "-p", patch)


def status_of(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    md = get(cluster, "mdep", namespace, name) or {}
    return dict(md.get("status") or {})


def wait_stable(cluster: Any, namespace: str, name: str, uri: str, timeout: float = 120) -> Any:
    """Until the ModelDeployment is Ready, with no rollout, serving ``uri`` on the stable track."""

    def check() -> dict[str, Any] | None:
        md = get(cluster, "mdep", namespace, name)
        status = (md or {}).get("status") or {}
        done = (
            condition(md, "Ready").get("status") == "True"
            and not status.get("canary")
            and status.get("stable", {}).get("uri") == uri
            and status.get("observedGeneration") == (md or {})["metadata"]["generation"]
        )
        return md if done else None

    return wait_for(check, timeout, f"{name} stable on {uri}")


def scrape(prometheus: Prometheus, namespace: str, servers: dict[str, ServerProcess]) -> None:
    """Prometheus scrapes each server with the namespace label a ServiceMonitor would add."""
    prometheus.set_targets(
        [
            (f"127.0.0.1:{server.metrics_port}", {"namespace": namespace, "job": track})
            for track, server in servers.items()
        ]
    )
    prometheus.wait_for_targets()


def finished(cluster: Any, namespace: str, name: str, result: str) -> dict[str, Any] | None:
    """The newest history entry when the last rollout ended with ``result``, else None."""
    history = status_of(cluster, namespace, name).get("history") or []
    return dict(history[0]) if history and history[0]["result"] == result else None


def steady(
    servers: dict[str, ServerProcess], body: Callable[[], dict[str, Any]] | None = None
) -> Load:
    """Light traffic to every track: a round of requests every 20 ms."""
    return Load(servers, body, pause=0.02)


@pytest.fixture
def tracks(tmp_path: Path) -> Iterator[Any]:
    """``tracks(name, {"stable": model, "canary": (model, [server args])})``: a server per
    track, standing in for the pods of ModelDeployment ``name``; stopped after the test."""
    started: list[ServerProcess] = []

    def start(
        name: str, models: dict[str, Path | tuple[Path, list[str]]]
    ) -> dict[str, ServerProcess]:
        servers = {}
        for track, given in models.items():
            model, args = given if isinstance(given, tuple) else (given, [])
            server = ServerProcess(
                model,
                tmp_path / f"{track}-{len(started)}.log",
                *args,
                name="classifier",
                env={"MODELDEPLOY_DEPLOYMENT_NAME": name, "MODELDEPLOY_TRACK": track},
            )
            started.append(server)
            servers[track] = server
        for server in servers.values():
            server.wait_for("/v2/health/live", 200)
        return servers

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def rollout_operator(
    cluster: Any, namespace: str, modeldeployment_crd: str, tmp_path: Path
) -> Iterator[Any]:
    """``rollout_operator()`` starts an operator for the test's namespace (again after a
    ``stop()``, to test a restart); all are stopped after the test."""
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    started: list[OperatorProcess] = []

    def start() -> OperatorProcess:
        process = watching(kubeconfig, namespace, tmp_path / f"operator-{len(started)}.log")
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def analysed(
    cluster: Any, namespace: str, rollout_operator: Any, prometheus: Prometheus, tracks: Any
) -> Any:
    """``analysed(models, spec)``: servers for the tracks of ModelDeployment "iris" (``models``
    as for ``tracks``), scraped by the test's Prometheus, an operator, and "iris" applied with
    ``spec`` and Ready on the stable model OLD. Returns the servers."""

    def start(models: dict[str, Any], spec: dict[str, Any]) -> dict[str, ServerProcess]:
        servers: dict[str, ServerProcess] = tracks("iris", models)
        scrape(prometheus, namespace, servers)
        rollout_operator()
        apply_md(cluster, namespace, "iris", spec)
        wait_stable(cluster, namespace, "iris", OLD)
        return servers

    return start
