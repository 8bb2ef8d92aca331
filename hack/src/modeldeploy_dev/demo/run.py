"""The demo's six steps, and its command line (``python -m modeldeploy_dev.demo``, ``make demo``).

Everything it starts is stopped on success, on failure and on Ctrl-C: processes by their id,
the Helm release and the namespace it created (on a cluster it reuses), the private control
plane it started. A failure prints what failed and the tails of the logs, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import tempfile
import traceback
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from modeldeploy_dev.cluster import ControlPlaneError
from modeldeploy_dev.cluster.addons import STORE_NAMESPACE, STORE_SECRET, STORE_SERVICE
from modeldeploy_dev.cluster.gateway import (
    GATEWAY_NAME,
    GATEWAY_NAMESPACE,
    GATEWAY_URL,
    gateway_programmed,
)
from modeldeploy_dev.cluster.network import GATEWAY
from modeldeploy_dev.cluster.store import BUCKET, ObjectStore
from modeldeploy_dev.demo import DemoError
from modeldeploy_dev.demo.console import Console
from modeldeploy_dev.demo.models import CLASSES, QUESTION, Trained, train
from modeldeploy_dev.demo.processes import Children, Prometheus, http_status, wait_until
from modeldeploy_dev.demo.session import NAME, RELEASE_NAMESPACE, ClusterSession
from modeldeploy_dev.demo.traffic import Traffic

STEPS = 6
ROLLOUT: dict[str, Any] = {
    "strategy": "Canary",
    "steps": [
        {"setWeight": 25},
        {"pause": {"duration": "5s"}},
        {"setWeight": 50},
        {"pause": {"duration": "5s"}},
    ],
    "progressDeadline": "2m",
}
# The demo's light traffic gives the canary about 25 requests per 5 s run at 25 %: enough
# evidence for a demo, so each check asks for 20 samples instead of the default 100.
CHECKS = [
    {"name": "error-rate", "max": 0.01, "minSamples": 20},
    {"name": "client-error-rate", "maxIncrease": "0.01", "minSamples": 20},
    {"name": "latency-p99", "max": 0.25, "minSamples": 20},
    {"name": "prediction-drift", "max": 0.1, "minSamples": 20},
]
ROLLOUT_TIMEOUT = 300.0
REPLICAS = 4
# Small requests: the demo's five serving pods share the real node with everything else.
RESOURCES = {"requests": {"cpu": "100m", "memory": "160Mi"}, "limits": {"memory": "512Mi"}}
PROMETHEUS_SERVICE = "prometheus"


class Demo:
    """One run of the demo; ``run()`` returns the exit code."""

    def __init__(
        self,
        console: Console,
        workdir: Path,
        namespace: str,
        release: str,
        cluster_root: Path | None = None,
    ) -> None:
        self.console = console
        self.workdir = workdir
        self.namespace = namespace
        self.children = Children(workdir / "logs")
        self.stack = ExitStack()
        self.session = ClusterSession(
            console, workdir, namespace, release, self.stack, cluster_root
        )
        self.prometheus: Prometheus | None = None
        self.store: ObjectStore | None = None
        self.gateway_host: str | None = None
        """The HTTPRoute's hostname when the cluster has our Gateway (``make cluster``)."""

    # The run ----------------------------------------------------------------------------
    def run(self) -> int:
        code = 0
        try:
            self._steps()
        except KeyboardInterrupt:
            print(file=self.console.stream)
            self.console.line("interrupted: stopping everything the demo started")
            code = 130
        except Exception as error:
            self._report(error)
            code = 1
        finally:
            # A second Ctrl-C must not leave processes behind half-way through the cleanup.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.console.line("cleaning up: everything the demo started")
            self.stack.close()
        if code == 0:
            self.console.line(
                f"demo finished in {self.console.elapsed():.0f}s: a prediction served, "
                "a canary promoted. Next: README.md (install on a real cluster), docs/canary.md"
            )
        return code

    def _steps(self) -> None:
        c = self.console
        c.line(
            "modeldeploy demo: install the operator, serve a scikit-learn model, roll out a "
            "new version as a canary"
        )
        c.info(f"work directory (models, logs): {self.workdir}")
        with c.step(1, "Start the local Kubernetes cluster with its real node"):
            self.session.start_cluster()
            # Before the cluster goes (a private one stops at the end): every process.
            self.stack.callback(self.children.stop_all)
        with c.step(2, "Install the Helm chart: the operator runs as a pod on the node"):
            self.session.create_namespace()
            self.session.install_chart()
        with c.step(3, "Train a scikit-learn model, export it, upload it to the object store"):
            first = self._train(1)
            snippet = self._export(first, 1)
        with c.step(4, "Apply a ModelDeployment (canary strategy, analysis) and wait for Ready"):
            self._start_prometheus()
            self._apply(snippet)
        with c.step(5, "Send a real prediction through the ModelDeployment's Service"):
            self._predict()
        with c.step(6, "Roll out a second model version as a canary until it is promoted"):
            second = self._train(2)
            update = self._export(second, 2)["spec"]["model"]
            self._canary(update, second.rows_by_class)
        print(file=c.stream)

    # Step 3: a model ---------------------------------------------------------------------
    def _train(self, version: int) -> Trained:
        trained = train(self.workdir / f"v{version}", version)
        self.console.info(
            f"trained {trained.description}: {trained.accuracy:.1%} of them classified right"
        )
        self.console.info(f"saved {trained.model_file.relative_to(self.workdir)} (joblib)")
        return trained

    def _export(self, trained: Trained, version: int) -> dict[str, Any]:
        """``modeldeploy export`` and the upload of its files; returns the ModelDeployment
        snippet it printed."""
        output = self.workdir / f"v{version}" / "model.onnx"
        key = f"{NAME}/v{version}/model.onnx"
        args = [
            "export", str(trained.model_file.relative_to(self.workdir)),
            "--sample", str(trained.sample_file.relative_to(self.workdir)),
            "--output", str(output.relative_to(self.workdir)),
            "--name", NAME, "--version", str(version),
            "--uri", f"s3://{BUCKET}/{key}",
        ]  # fmt: skip
        text = self.session.modeldeploy_shown(*args, cwd=self.workdir)
        start, end = text.find("# ModelDeployment:"), text.find("# EOF")
        if start < 0 or end < start:
            raise DemoError("modeldeploy export printed no ModelDeployment snippet")
        snippet = yaml.safe_load(text[text.index("\n", start) + 1 : end])
        if not isinstance(snippet, dict) or "model" not in snippet.get("spec", {}):
            raise DemoError(f"modeldeploy export printed a snippet without spec.model: {snippet}")
        self._upload(output, key)
        snippet["spec"]["model"]["credentialsSecret"] = STORE_SECRET
        return snippet

    def _upload(self, model: Path, key: str) -> None:
        """Put the model and its training profile where the snippet says they are."""
        if self.store is None:
            assert self.session.cluster is not None
            self.store = ObjectStore(self.session.cluster)
        profile = model.with_name("model.profile.json")
        prefix = key.rsplit("/", 1)[0]
        self.console.command(
            f"aws s3 cp --endpoint-url {self.store.endpoint} {model.parent.name}/ "
            f"s3://{BUCKET}/{prefix}/ --recursive  # model.onnx, model.profile.json"
        )
        self.store.upload(model, key)
        self.store.upload(profile, f"{prefix}/{profile.name}")
        self.console.info(
            f"uploaded to the cluster's object store (rclone serve s3, Service "
            f"{STORE_SERVICE}.{STORE_NAMESPACE}); the pods fetch from there"
        )

    # Step 4: the ModelDeployment ---------------------------------------------------------
    def _start_prometheus(self) -> None:
        cluster = self.session.cluster
        assert cluster is not None and cluster.bin_dir is not None
        self.prometheus = Prometheus(
            cluster.bin_dir / "prometheus",
            self.workdir / "prometheus",
            self.children,
            cluster.kubeconfig,
            self.namespace,
            GATEWAY,
        )
        self.prometheus.start()
        # A Service in front of it, so the operator's pod reaches it by name.
        self.session.kubectl(
            "apply", "-f", "-", input=json.dumps(prometheus_service(self.prometheus.port))
        )
        self.console.info(
            f"Prometheus discovers the serving pods through the Kubernetes "
            f"API and scrapes them; the operator reads it at {self._prometheus_address()}"
        )

    def _prometheus_address(self) -> str:
        return f"http://{PROMETHEUS_SERVICE}.{RELEASE_NAMESPACE}.svc.cluster.local:9090"

    def _apply(self, snippet: dict[str, Any]) -> None:
        manifest = json.loads(json.dumps(snippet))
        manifest["spec"]["replicas"] = REPLICAS
        manifest["spec"]["runtime"] = {"resources": RESOURCES}
        rollout = json.loads(json.dumps(ROLLOUT))
        self.gateway_host = self._gateway_host()
        if self.gateway_host:
            rollout["trafficRouting"] = {
                "gatewayAPI": {
                    "parentRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}],
                    "hostnames": [self.gateway_host],
                }
            }
        rollout["analysis"] = {
            "interval": "5s",
            "failureLimit": 2,
            "prometheus": {"address": self._prometheus_address()},
            "metrics": CHECKS,
        }
        manifest["spec"]["rollout"] = rollout
        path = self.workdir / f"{NAME}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        self.console.info(
            f"{path.name}: the snippet export printed, with the store's credentials, "
            f"{REPLICAS} replicas and a canary rollout"
        )
        self.console.block(path.read_text())
        self.session.kubectl_shown("apply", "-n", self.namespace, "-f", path.name, cwd=self.workdir)
        uri = manifest["spec"]["model"]["uri"]
        self.session.wait_stable(uri, self._watched(), timeout=300)
        self.session.kubectl_shown("get", "mdep", "-n", self.namespace)
        self._show_pods()

    def _gateway_host(self) -> str | None:
        """A hostname for the canary's HTTPRoute when the local cluster's Gateway (Traefik)
        is Programmed; None without it (the canary then splits by replica ratio)."""
        try:
            found = self.session.kubectl(
                "get", "gateway", GATEWAY_NAME, "-n", GATEWAY_NAMESPACE, "-o", "json",
                "--ignore-not-found",
            )  # fmt: skip
        except DemoError:  # no Gateway API in this cluster
            found = ""
        if not found.strip() or not gateway_programmed(json.loads(found)):
            self.console.info("no Gateway in this cluster: the canary splits by replica ratio")
            return None
        host = f"{NAME}.{self.namespace}.example"
        self.console.info(
            f"the cluster's Gateway ({GATEWAY_NAMESPACE}/{GATEWAY_NAME}, Traefik) is "
            f"Programmed: the canary's HTTPRoute routes {host} at {GATEWAY_URL} by weight"
        )
        return host

    def _watched(self) -> list[Any]:
        return [self.prometheus.child] if self.prometheus and self.prometheus.child else []

    def _show_pods(self) -> None:
        self.session.kubectl_shown(
            "get", "pods", "-n", self.namespace, "-o", "wide",
            "-l", f"serving.modeldeploy.io/deployment={NAME}",
        )  # fmt: skip

    # Step 5: a prediction --------------------------------------------------------------
    def _service_url(self) -> str:
        service = json.loads(
            self.session.kubectl("get", "service", NAME, "-n", self.namespace, "-o", "json")
        )
        port = service["spec"]["ports"][0]["port"]
        return f"http://{service['spec']['clusterIP']}:{port}"

    def _predict(self) -> None:
        rows = self.workdir / "flowers.json"
        rows.write_text(json.dumps(QUESTION))
        self.console.info(f"flowers.json: {json.dumps(QUESTION)}")
        url = self._service_url()
        self.console.info(
            f"Service {NAME} has the cluster address {url.removeprefix('http://')}, which this "
            "machine reaches through kube-proxy like a pod does"
        )
        # Ready pods reach kube-proxy's rules a moment after their readiness, on any cluster.
        wait_until(
            lambda: http_status(f"{url}/v2/health/ready") == 200,
            60,
            f"Service {NAME} to route requests to the ready pods",
            watch=self._watched(),
        )
        args = ["predict", NAME, "--url", url, "--data", rows.name]
        answer = json.loads(self.session.modeldeploy_shown(*args, cwd=self.workdir))
        labels = next(o["data"] for o in answer["outputs"] if o["name"] == "label")
        names = ", ".join(CLASSES[int(label)] for label in labels)
        self.console.info(f"the model says: {names}")
        selector = f"serving.modeldeploy.io/deployment={NAME}"
        listed = self.session.kubectl(
            "get", "pods", "-n", self.namespace, "-l", selector, "-o", "json"
        )
        pod = json.loads(listed)["items"][0]["metadata"]["name"]
        self.session.kubectl_shown("logs", pod, "-n", self.namespace, "-c", "server", "--tail=3")

    # Step 6: the canary ------------------------------------------------------------------
    def _canary(self, model: dict[str, Any], rows_by_class: list[list[list[float]]]) -> None:
        if self.gateway_host:
            url, how = GATEWAY_URL, f"the gateway ({GATEWAY_URL}, Host: {self.gateway_host})"
            exactness = "Gateway API: the HTTPRoute's weights, request by request"
        else:
            url, how = self._service_url(), "the Service"
            exactness = (
                "replica ratio: the canary's share is its share of the ready pods, not "
                "exactly the weight"
            )
        traffic = Traffic(NAME, url, rows_by_class, host=self.gateway_host).start()
        self.stack.callback(traffic.stop)
        patch = json.dumps({"spec": {"model": model}}, separators=(",", ":"))
        self.console.command(
            f"kubectl patch mdep {NAME} -n {self.namespace} --type=merge -p "
            f'\'{{"spec":{{"model":{{"uri":"{model["uri"]}",...}}}}}}\''
        )
        self.session.kubectl("patch", "mdep", NAME, "-n", self.namespace, "--type=merge",
                             "-p", patch)  # fmt: skip
        self.session.follow_rollout(
            model["uri"], traffic, self._watched(), ROLLOUT_TIMEOUT, on_half=self._show_pods
        )
        traffic.stop()
        self.console.info(
            f"traffic through {how} during the rollout: "
            f"{traffic.summary(str(model.get('version', '')))} ({exactness})"
        )
        self.session.modeldeploy_shown("status", NAME, "-n", self.namespace)

    # Helpers -----------------------------------------------------------------------------
    def _report(self, error: BaseException) -> None:
        c = self.console
        where = f"step {c.current[0]}/{STEPS} ({c.current[1]})" if c.current else "start-up"
        if isinstance(error, subprocess.CalledProcessError):
            detail = f"`{' '.join(map(str, error.cmd))}` exited with {error.returncode}:\n"
            detail += str(error.stderr or error.stdout or "").strip()[-3000:]
        elif isinstance(error, DemoError | ControlPlaneError):
            detail = str(error)
        elif isinstance(error, ModuleNotFoundError):
            detail = (
                f"{error.name} is not installed: the demo needs modeldeploy with its operator, "
                "server and export extras (`make setup` installs them)"
            )
        else:  # a bug of the demo's own: the whole traceback helps
            detail = "".join(traceback.format_exception(error)).rstrip()
        print(file=c.stream)
        c.line(f"FAILED at {where}: {detail}")
        for name, text in self.children.tails():
            c.line(f"    last lines of {name}'s log:")
            c.block(text)
        if self.session.cluster is not None:
            c.line("    last lines of the operator pod's log:")
            c.block(self.session.operator_logs())
        c.line(f"    logs and files are kept in {self.workdir}")


def prometheus_service(port: int) -> dict[str, Any]:
    """Service ``prometheus`` in the release's namespace, in front of the Prometheus process
    on the node's bridge address (a Service without selector and its EndpointSlice)."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": PROMETHEUS_SERVICE, "namespace": RELEASE_NAMESPACE},
                "spec": {"ports": [{"name": "web", "port": 9090, "targetPort": port}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{PROMETHEUS_SERVICE}-demo",
                    "namespace": RELEASE_NAMESPACE,
                    "labels": {"kubernetes.io/service-name": PROMETHEUS_SERVICE},
                },
                "addressType": "IPv4",
                "ports": [{"name": "web", "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [GATEWAY], "conditions": {"ready": True}}],
            },
        ],
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy_dev.demo",
        description="The modeldeploy demo (make demo): the chart, the operator, a model served "
        "and a canary promoted, on the local control plane.",
    )
    parser.add_argument("--namespace", default="demo", help="namespace of the ModelDeployment")
    parser.add_argument(
        "--release", default="modeldeploy", help="Helm release (in modeldeploy-system)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep models and logs here (default: a temporary directory, "
        "removed after a successful run)",
    )  # fmt: skip
    parser.add_argument(
        "--cluster-root", type=Path, help="reuse the local control plane recorded here "
        "(default: .cluster of the checkout, as `make cluster` starts it); when none runs "
        "there, a private one is started and stopped",
    )  # fmt: skip
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM stop the demo cleanly, even when started where SIGINT is ignored
    # (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modeldeploy-demo-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console(STEPS)
    code = Demo(console, workdir, args.namespace, args.release, args.cluster_root).run()
    if code == 0 and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return code


__all__ = ["Demo", "main"]
