"""The demo's side of the cluster: the local cluster with its real node, the chart (whose
operator runs as a pod), and reading a ModelDeployment's status as it changes.

Every kubectl, helm and modeldeploy command runs with ``KUBECONFIG`` set, exactly as printed,
so a reader can type the same commands against the same cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from modeldeploy_dev.cluster import LocalCluster, project_root, running_cluster
from modeldeploy_dev.cluster.addons import store_credentials
from modeldeploy_dev.cluster.network import NODE_NAME
from modeldeploy_dev.demo import DemoError
from modeldeploy_dev.demo.console import Console
from modeldeploy_dev.demo.processes import Child, tool_argv, wait_until
from modeldeploy_dev.demo.traffic import PROMOTING, Traffic

RELEASE_NAMESPACE = "modeldeploy-system"
MARK = "modeldeploy demo"
"""Description of the Helm release the demo installs: a later run knows it may remove it."""
OWNER_LABEL = "app.kubernetes.io/created-by"
OWNER = "modeldeploy-demo"
NAME = "iris"
UNREACHABLE_GRACE = 60.0
"""Seconds a refused connection to the API server is retried before the demo gives up."""


def condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    for found in (md.get("status") or {}).get("conditions") or ():
        if found.get("type") == kind:
            return dict(found)
    return {}


def _checks(analysis: Sequence[dict[str, Any]]) -> str:
    parts = []
    for r in analysis:
        value = "no data" if r.get("value") is None else f"{r['value']:.4g}"
        bounds = [f"{k} {r[k]:g}" for k in ("min", "max") if r.get(k) is not None]
        if r.get("maxIncrease") is not None:
            stable = r.get("stableValue")
            bounds.append(
                f"stable {'no data' if stable is None else f'{stable:.4g}'}, "
                f"maxIncrease {r['maxIncrease']}"
            )
        if r.get("samples") is not None:
            bounds.append(f"{r['samples']} samples")
        parts.append(f"{r['name']} {value} ({', '.join(bounds)}) {r.get('result')}")
    return "; ".join(parts)


class ClusterSession:
    """The cluster the demo uses, and what it installed there (undone through ``stack``)."""

    def __init__(
        self,
        console: Console,
        workdir: Path,
        namespace: str,
        release: str,
        stack: ExitStack,
        cluster_root: Path | None = None,
    ) -> None:
        self.console = console
        self.workdir = workdir
        self.namespace = namespace
        self.release = release
        self.stack = stack
        self.root = Path.cwd()
        self.cluster_root = cluster_root
        self.env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        self.cluster: LocalCluster | None = None
        self.reused = False

    # Commands ----------------------------------------------------------------------------
    def _exec(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run a tool. A refused connection is retried for a while (a shared control plane may
        be restarting its API server); with ``check``, any other failure raises at once."""
        deadline = time.monotonic() + UNREACHABLE_GRACE
        while True:
            result = subprocess.run(
                argv, cwd=cwd, env=self.env, input=input, capture_output=True, text=True,
                timeout=timeout,
            )  # fmt: skip
            refused = result.returncode != 0 and "refused" in result.stderr + result.stdout
            if not refused or time.monotonic() > deadline:
                break
            time.sleep(1)
        if check and result.returncode != 0:
            shown = " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))
            raise DemoError(
                f"`{shown}` exited with {result.returncode}:\n"
                + (result.stderr or result.stdout).strip()[-3000:]
            )
        return result

    def kubectl(self, *args: str, cwd: Path | None = None, input: str | None = None) -> str:
        """``kubectl ARGS`` (see ``_exec``)."""
        assert self.cluster is not None
        return self._exec([str(self.cluster.tool("kubectl")), *args], cwd=cwd, input=input).stdout

    def kubectl_shown(self, *args: str, cwd: Path | None = None) -> str:
        """``kubectl ARGS``, printed with its output."""
        self.console.command("kubectl " + " ".join(args))
        out = self.kubectl(*args, cwd=cwd)
        self.console.block(out)
        return out

    def helm(self, *args: str, cwd: Path | None = None) -> str:
        assert self.cluster is not None
        return self._exec([str(self.cluster.tool("helm")), *args], cwd=cwd).stdout

    def modeldeploy_shown(self, *args: str, cwd: Path | None = None) -> str:
        """``modeldeploy ARGS``, printed with its output."""
        self.console.command("modeldeploy " + " ".join(args))
        out = self._exec([*tool_argv("modeldeploy", "modeldeploy.cli"), *args], cwd=cwd).stdout
        self.console.block(out)
        return out

    def _exists(self, *args: str) -> dict[str, Any] | None:
        """The object, or None when the API server says it is not found."""
        assert self.cluster is not None
        kubectl = str(self.cluster.tool("kubectl"))
        result = self._exec([kubectl, "get", *args, "-o", "json"], check=False, timeout=60)
        if result.returncode == 0:
            return dict(json.loads(result.stdout))
        if "NotFound" in result.stderr:
            return None
        raise DemoError(f"`kubectl get {' '.join(args)}` failed: {result.stderr.strip()}")

    def get_md(self) -> dict[str, Any]:
        return json.loads(self.kubectl("get", "mdep", NAME, "-n", self.namespace, "-o", "json"))

    # Step 1 ------------------------------------------------------------------------------
    def start_cluster(self) -> None:
        self.root = project_root()  # the checkout: its chart, and where `make cluster` runs
        default = self.cluster_root or self.root / ".cluster"
        self.reused = LocalCluster.load(default) is not None
        if not self.reused:
            self.console.info(
                "no `make cluster` running: starting a private cluster for this run (etcd, "
                "kube-apiserver, controller-manager, scheduler, KWOK nodes and a real node: "
                "containerd, kubelet, kube-proxy, CoreDNS, an S3 object store); stopped at the end"
            )
        self.cluster = self.stack.enter_context(
            running_cluster(default, self.workdir / "cluster", progress=self.console.info)
        )
        if self.reused:
            self.console.info("(started before the demo, e.g. by `make cluster`: left running)")
        self.env["KUBECONFIG"] = str(self.cluster.kubeconfig)
        self.env["PATH"] = f"{self.cluster.root / 'bin'}{os.pathsep}{self.env.get('PATH', '')}"
        self.console.info(f"export KUBECONFIG={self.cluster.kubeconfig}")
        self.kubectl_shown("get", "nodes", "-o", "wide")
        self.console.info(
            f"{NODE_NAME} is a real kubelet running containers; the KWOK nodes are simulated "
            "(tainted, for scale tests) and take none of the demo's pods"
        )

    # Step 2 ------------------------------------------------------------------------------
    def install_chart(self) -> None:
        assert self.cluster is not None and self.cluster.images is not None
        operator_image = self.cluster.images.ref("OPERATOR")
        server_image = self.cluster.images.ref("SERVER")
        for kind in ("cache", "config", "data"):
            self.env[f"HELM_{kind.upper()}_HOME"] = str(self.workdir / "helm" / kind)
        if self._exists("crd", "modeldeployments.serving.modeldeploy.io") is not None:
            self.console.info(
                "the CRDs are already in the cluster and `helm install` never replaces CRDs: "
                "applying this chart's first, as docs/install.md says for upgrades"
            )
            self.console.command("kubectl apply --server-side -f charts/modeldeploy/crds/")
            self.kubectl(
                "apply", "--server-side", "--force-conflicts", "-f", "charts/modeldeploy/crds/",
                cwd=self.root,
            )  # fmt: skip
        installed = self._exec(
            [str(self.cluster.tool("helm")), "status", self.release, "-n", RELEASE_NAMESPACE,
             "-o", "json"],
            check=False, timeout=60,
        )  # fmt: skip
        if installed.returncode != 0 and "not found" not in installed.stderr:
            raise DemoError(f"`helm status {self.release}` failed: {installed.stderr.strip()}")
        if installed.returncode == 0:
            description = json.loads(installed.stdout).get("info", {}).get("description")
            if description != MARK:
                raise DemoError(
                    f"Helm release {self.release} in {RELEASE_NAMESPACE} exists and was not "
                    "installed by the demo: uninstall it, or run `python -m modeldeploy_dev.demo "
                    "--release OTHER`"
                )
            self.console.info(f"removing release {self.release}, left by an earlier demo run")
            self.helm("uninstall", self.release, "-n", RELEASE_NAMESPACE, "--wait")
        repository, tag = operator_image.rsplit(":", 1)
        args = [
            "install", self.release, "charts/modeldeploy", "-n", RELEASE_NAMESPACE,
            "--create-namespace", "--wait", "--timeout", "3m", "--description", MARK,
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", f"operator.serverImage={server_image}",
            "--set", f"watchNamespaces={{{self.namespace}}}",
        ]  # fmt: skip
        self.console.info(
            "the images were built from this checkout by `make images` and loaded into the "
            "node's containerd, as a registry would serve them"
        )
        self.console.command("helm " + " ".join(f'"{a}"' if " " in a else a for a in args))
        out = self.helm(*args, cwd=self.root)
        if self.reused:
            self.stack.callback(self._quietly, "helm", "uninstall", self.release, "-n",
                                RELEASE_NAMESPACE)  # fmt: skip
        head, _, notes = out.partition("NOTES:")
        self.console.block(head)
        self.console.block(
            f"NOTES: {len(notes.strip().splitlines())} lines, the next steps for a user "
            f"(helm get notes {self.release} -n {RELEASE_NAMESPACE})"
        )
        selector = f"app.kubernetes.io/instance={self.release}"
        self.kubectl_shown("get", "pods", "-n", RELEASE_NAMESPACE, "-l", selector, "-o", "wide")
        self.console.info(
            f"the operator runs as a pod on {NODE_NAME} with the chart's ServiceAccount and "
            f"RBAC, watching namespace {self.namespace}"
        )

    def operator_logs(self, lines: int = 30) -> str:
        """The last lines of the operator pod's log (for a failure report)."""
        assert self.cluster is not None
        selector = f"app.kubernetes.io/instance={self.release}"
        result = self._exec(
            [str(self.cluster.tool("kubectl")), "logs", "-n", RELEASE_NAMESPACE, "-l", selector,
             f"--tail={lines}"],
            check=False, timeout=30,
        )  # fmt: skip
        return (result.stdout or result.stderr).strip()

    def create_namespace(self) -> None:
        existing = self._exists("namespace", self.namespace)
        if existing is not None:
            labels = existing["metadata"].get("labels") or {}
            if labels.get(OWNER_LABEL) != OWNER:
                raise DemoError(
                    f"namespace {self.namespace} exists and was not created by the demo: delete "
                    "it, or run `python -m modeldeploy_dev.demo --namespace OTHER`"
                )
            self.console.info(f"deleting namespace {self.namespace}, left by an earlier demo run")
            self.kubectl("delete", "namespace", self.namespace, "--timeout=120s")
        self.console.command(f"kubectl create namespace {self.namespace}")
        self.kubectl("create", "namespace", self.namespace)
        if self.reused:
            self.stack.callback(
                self._quietly, "kubectl", "delete", "namespace", self.namespace, "--wait=false"
            )
        # Marked as the demo's own: a later run may delete it if this one is killed.
        self.kubectl("label", "namespace", self.namespace, f"{OWNER_LABEL}={OWNER}")
        self.kubectl(
            "wait", "--for=create", "-n", self.namespace, "serviceaccount/default",
            "--timeout=60s",
        )  # fmt: skip
        secret = store_credentials(self.namespace)
        self.kubectl("apply", "-f", "-", input=json.dumps(secret))
        self.console.info(
            f"Secret {secret['metadata']['name']}: the object store's S3 credentials and "
            "endpoint, for spec.model.credentialsSecret"
        )

    # Step 4 ------------------------------------------------------------------------------
    def wait_stable(self, uri: str, watch: list[Child], timeout: float = 120) -> dict[str, Any]:
        """Until the ModelDeployment is Ready for its generation, serving ``uri``; prints
        each change of phase on the way."""
        last: list[str] = []

        def ready() -> dict[str, Any] | None:
            md = self.get_md()
            status = md.get("status") or {}
            said = condition(md, "Ready")
            line = f"phase {status.get('phase', '(none yet)')}: {said.get('message', '')}"
            if not last or last[-1] != line:
                last.append(line)
                self.console.info(line.rstrip(": "))
            done = (
                said.get("status") == "True"
                and status.get("observedGeneration") == md["metadata"]["generation"]
                and (status.get("stable") or {}).get("uri") == uri
                and not status.get("canary")
            )
            return md if done else None

        result: dict[str, Any] = wait_until(
            ready, timeout, f"{NAME} to become Ready", watch=watch, last=lambda: last[-1]
        )
        return result

    # Step 6 ------------------------------------------------------------------------------
    def follow_rollout(
        self,
        uri: str,
        traffic: Traffic,
        watch: list[Child],
        timeout: float,
        on_half: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Print each step of the rollout to ``uri`` until it is promoted, with the traffic
        each track answered. A rollback is a failure, with the operator's reason."""
        deadline = time.monotonic() + timeout
        said, analysed, shown_row = "", "", False
        while True:
            for child in watch:
                child.check()
            md = self.get_md()
            status = md.get("status") or {}
            canary = status.get("canary") or {}
            progressing = condition(md, "Progressing").get("message") or ""
            if canary:
                line = (
                    f"{status.get('phase')}, canary weight {canary.get('weight', 0)}%: "
                    f"{progressing}"
                )
                if line != said:
                    promoting = canary.get("state") == "Promoting"
                    traffic.mark(PROMOTING if promoting else int(canary.get("weight", 0)))
                    said = line
                    self.console.info(line)
            runs = canary.get("analysis") or []
            stamp = json.dumps([r.get("time") for r in runs])
            if runs and stamp != analysed:
                analysed = stamp
                self.console.info(
                    f"analysis run (passed {canary.get('passedChecks', 0)}, failed "
                    f"{canary.get('failedChecks', 0)}): {_checks(runs)}"
                )
            if canary.get("weight", 0) >= 50 and not shown_row:
                shown_row = True
                self.kubectl_shown("get", "mdep", "-n", self.namespace)
                if on_half is not None:
                    on_half()
            history = status.get("history") or []
            latest = history[0] if history else {}
            if (latest.get("model") or {}).get("uri") == uri and not canary:
                if latest.get("result") == "Promoted":
                    self.console.info(f"Promoted: {latest.get('message')}")
                    return md
                raise DemoError(
                    f"the rollout ended {latest.get('result')} ({latest.get('reason')}): "
                    f"{latest.get('message')}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"timed out after {timeout:.0f}s waiting for the canary to be promoted; "
                    f"last: {said or status}"
                )
            time.sleep(0.5)

    # Cleanup -----------------------------------------------------------------------------
    def _quietly(self, tool: str, *args: str) -> None:
        """A cleanup command: a failure is reported, never raised over the demo's result."""
        assert self.cluster is not None
        try:
            result = self._exec([str(self.cluster.tool(tool)), *args], check=False, timeout=120)
        except (OSError, subprocess.SubprocessError) as error:
            self.console.info(f"cleanup: `{tool} {' '.join(args)}` failed: {error}")
            return
        if result.returncode != 0:
            reason = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
            self.console.info(f"cleanup: `{tool} {' '.join(args)}` failed: {reason[0]}")
