"""Canary rollouts against the real control plane, a real Prometheus and real servers.

Pods are simulated by KWOK, so real ``modeldeploy-server`` processes stand in for the stable
and canary pods: their metrics carry the ModelDeployment's name and the track, Prometheus
scrapes them with the namespace label a ServiceMonitor would add, and a load thread sends them
real inference requests. The operator reads the analysis from that Prometheus.

Each stand-in listens where a pod of its track would be reached: an address of its own on
loopback (127.x.y.z, all of which is this machine's), on the serving ports the operator knows
(8080, 8082). ``PodAddresses`` gives every KWOK pod of a track that address as its pod IP, so
the operator reads the model metadata of the track's stand-in, as it reads a real pod's.
"""

from __future__ import annotations

import json
import random
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldeploy.config import OperatorConfig
from modeldeploy.kube import Kube, api_client_from_environment
from tests.integration.operator.conftest import OPERATOR_USER, watching
from tests.support.kubectl import apply_md, condition, get
from tests.support.load import Load
from tests.support.operator_process import OperatorProcess, wait_for
from tests.support.prometheus import Prometheus
from tests.support.servers import ServerProcess

PORTS = OperatorConfig()
"""The serving ports the operator builds pods with and reads them on."""

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
            (server.metrics_url.split("/")[2], {"namespace": namespace, "job": track})
            for track, server in servers.items()
        ]
    )
    prometheus.wait_for_targets()


def _free_address() -> str:
    """A loopback address on which both serving ports are free (other sessions use others)."""
    rng = random.SystemRandom()
    for _ in range(100):
        address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        try:
            for port in (PORTS.server_http_port, PORTS.server_metrics_port):
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return address
    raise RuntimeError("no free loopback address for a stand-in server")


def stand_in(model: Path, log: Path, *args: str, **kwargs: Any) -> ServerProcess:
    """A server listening where a pod would be reached: a loopback address of its own, on
    the serving ports (the later ``--host`` and ports win over the ones ServerProcess picks)."""
    address = _free_address()
    where = ["--host", address, "--http-port", str(PORTS.server_http_port),
             "--metrics-port", str(PORTS.server_metrics_port)]  # fmt: skip
    server = ServerProcess(model, log, *args, *where, **kwargs)
    server.http_port, server.metrics_port = PORTS.server_http_port, PORTS.server_metrics_port
    server.url = f"http://{address}:{server.http_port}"
    server.metrics_url = f"http://{address}:{server.metrics_port}/metrics"
    return server


class PodAddresses:
    """Gives each KWOK pod of a track the address of its track's stand-in as its pod IP, as
    pods appear (a bounded poll every 0.2 s, until stopped)."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.kube = Kube(api_client_from_environment(str(cluster.kubeconfig)), timeout=10)
        self.namespace = namespace
        self.addresses: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                pods = self.kube.list("v1", "Pod", self.namespace)
            except Exception:  # the namespace is being deleted, the API is busy: try again
                continue
            for pod in pods:
                track = pod["metadata"].get("labels", {}).get("serving.modeldeploy.io/track")
                address = self.addresses.get(str(track))
                status = pod.get("status") or {}
                if address is None or status.get("phase") != "Running":
                    continue
                if status.get("podIP") == address:
                    continue
                ip = {"podIP": address, "podIPs": [{"ip": address}]}
                try:
                    self.kube.patch_status("v1", "Pod", self.namespace, pod["metadata"]["name"], ip)
                except Exception:  # deleted meanwhile
                    continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


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
def tracks(cluster: Any, namespace: str, tmp_path: Path) -> Iterator[Any]:
    """``tracks(name, {"stable": model, "canary": (model, [server args])})``: a server per
    track, standing in for the pods of ModelDeployment ``name`` (whose KWOK pods get the
    stand-in's address); stopped after the test. The model is served as ``name``."""
    started: list[ServerProcess] = []
    pods = PodAddresses(cluster, namespace)

    def start(
        name: str, models: dict[str, Path | tuple[Path, list[str]]]
    ) -> dict[str, ServerProcess]:
        servers = {}
        for track, given in models.items():
            model, args = given if isinstance(given, tuple) else (given, [])
            server = stand_in(
                model,
                tmp_path / f"{track}-{len(started)}.log",
                *args,
                name=name,
                env={"MODELDEPLOY_DEPLOYMENT_NAME": name, "MODELDEPLOY_TRACK": track},
            )
            started.append(server)
            servers[track] = server
            pods.addresses[track] = server.url.split("//")[1].split(":")[0]
        for server in servers.values():
            server.wait_for("/v2/health/live", 200)
        pods.start()
        return servers

    yield start
    pods.stop()
    for server in started:
        server.stop()


@pytest.fixture
def stand_ins(tracks: Any, models: dict[str, Path]) -> dict[str, ServerProcess]:
    """Both tracks of "iris" served by the test classifier: a canary compatible with stable."""
    return dict(tracks("iris", {"stable": models["classifier"], "canary": models["classifier"]}))


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


def spec(steps: list[dict[str, Any]], **rollout: Any) -> dict[str, Any]:
    """A two-replica Canary ModelDeployment of the old model with ``steps``."""
    return {
        "model": {"uri": OLD},
        "replicas": 2,
        "rollout": {"strategy": "Canary", "steps": steps, **rollout},
    }
