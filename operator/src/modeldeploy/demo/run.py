"""The demo's six steps, and its command line (``python -m modeldeploy.demo``, ``make demo``).

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

from modeldeploy.demo import DemoError
from modeldeploy.demo.cluster import NAME, ClusterSession
from modeldeploy.demo.console import Console
from modeldeploy.demo.models import CLASSES, QUESTION, Trained, train
from modeldeploy.demo.processes import (
    Child,
    Children,
    Prometheus,
    http_status,
    tool_argv,
    wait_until,
)
from modeldeploy.demo.traffic import Traffic
from modeldeploy.devcluster import ControlPlaneError, free_port

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
CHECKS = [
    {"name": "error-rate", "max": 0.01},
    {"name": "latency-p99", "max": 0.25},
    {"name": "prediction-drift", "max": 0.1},
]
ROLLOUT_TIMEOUT = 180.0


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
        self.prometheus = Prometheus(workdir / "prometheus", self.children)
        self.operator: Child | None = None

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
        with c.step(1, "Start the local Kubernetes control plane"):
            self.session.start_cluster()
            # Before the cluster goes (a private one stops at the end): every process.
            self.stack.callback(self.children.stop_all)
        with c.step(2, "Install the Helm chart; run the operator as its ServiceAccount"):
            self.session.install_chart()
            self.session.create_namespace()
            self.operator = self.session.start_operator(self.children)
        with c.step(3, "Train a scikit-learn model and export it with `modeldeploy export`"):
            first = self._train(1)
            snippet = self._export(first, 1)
        with c.step(4, "Apply a ModelDeployment (canary strategy, analysis) and wait for Ready"):
            self._start_prometheus()
            self._apply(snippet)
        with c.step(5, "Serve the model with modeldeploy-server and send a real prediction"):
            stable = self._serve("stable", snippet["spec"]["model"])
            self.prometheus.set_targets([self._target("stable", stable)])
            c.info(f"Prometheus scrapes the stable server's metrics on {stable[1]}")
            self._predict(stable[0])
        with c.step(6, "Roll out a second model version as a canary until it is promoted"):
            second = self._train(2)
            update = self._export(second, 2)["spec"]["model"]
            canary = self._serve("canary", update)
            self.prometheus.set_targets(
                [self._target("stable", stable), self._target("canary", canary)]
            )
            c.info("Prometheus scrapes both servers; light traffic flows, split by the weight")
            urls = {"stable": stable[0], "canary": canary[0]}
            self._canary(update, urls, second.rows_by_class)
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
        """``modeldeploy export``; returns the ModelDeployment snippet it printed."""
        output = self.workdir / f"v{version}" / "model.onnx"
        args = [
            "export", str(trained.model_file.relative_to(self.workdir)),
            "--sample", str(trained.sample_file.relative_to(self.workdir)),
            "--output", str(output.relative_to(self.workdir)),
            "--name", NAME, "--version", str(version),
            "--uri", output.as_uri(),
        ]  # fmt: skip
        text = self.session.modeldeploy_shown(*args, cwd=self.workdir)
        start, end = text.find("# ModelDeployment:"), text.find("# EOF")
        if start < 0 or end < start:
            raise DemoError("modeldeploy export printed no ModelDeployment snippet")
        snippet = yaml.safe_load(text[text.index("\n", start) + 1 : end])
        if not isinstance(snippet, dict) or "model" not in snippet.get("spec", {}):
            raise DemoError(f"modeldeploy export printed a snippet without spec.model: {snippet}")
        return snippet

    # Step 4: the ModelDeployment ---------------------------------------------------------
    def _start_prometheus(self) -> None:
        self.prometheus.start()
        self.console.info(
            f"Prometheus {self.prometheus.url} (the Debian package) started: the canary "
            "analysis will read the servers' metrics from it"
        )

    def _apply(self, snippet: dict[str, Any]) -> None:
        manifest = json.loads(json.dumps(snippet))
        manifest["spec"]["replicas"] = 4
        rollout = json.loads(json.dumps(ROLLOUT))
        rollout["analysis"] = {
            "interval": "5s",
            "failureLimit": 2,
            "prometheus": {"address": self.prometheus.url},
            "metrics": CHECKS,
        }
        manifest["spec"]["rollout"] = rollout
        path = self.workdir / f"{NAME}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        self.console.info(
            f"{path.name}: the snippet export printed, with 4 replicas and a canary rollout"
        )
        self.console.block(path.read_text())
        self.console.info(
            "model URIs are file:// paths on this machine: the simulated pods fetch nothing, "
            "the local servers below load them"
        )
        self.session.kubectl_shown("apply", "-n", self.namespace, "-f", path.name, cwd=self.workdir)
        uri = manifest["spec"]["model"]["uri"]
        self.session.wait_stable(uri, [self.operator] if self.operator else [])
        self.session.kubectl_shown("get", "mdep", "-n", self.namespace)
        self.session.kubectl_shown(
            "get", "deployments,services,pods", "-n", self.namespace,
            "-l", f"serving.modeldeploy.io/deployment={NAME}",
        )  # fmt: skip

    # Step 5: a server and a prediction ---------------------------------------------------
    def _serve(self, track: str, model: dict[str, Any]) -> tuple[str, str]:
        """A ``modeldeploy-server`` for ``track`` of the ModelDeployment: (URL, metrics
        address). It gets what the operator gives the pods: the model, its sha256 and
        profile, and the deployment's name and track for its metric labels."""
        port, metrics_port = free_port(), free_port()
        args = [
            "serve", "--model-name", NAME, "--model-uri", model["uri"],
            "--sha256", model["sha256"], "--model-version", str(model.get("version", "")),
            "--host", "127.0.0.1", "--http-port", str(port),
            "--metrics-port", str(metrics_port), "--workers", "1",
            "--model-cache-dir", str(self.workdir / "cache" / track), "--log-format", "text",
        ]  # fmt: skip
        profile = model.get("profile")
        if profile:
            args += ["--profile-uri", profile["uri"], "--profile-sha256", profile["sha256"]]
        identity = {
            "MODELDEPLOY_DEPLOYMENT_NAME": NAME,
            "MODELDEPLOY_TRACK": track,
            "MODELDEPLOY_NAMESPACE": self.namespace,
        }
        shown = " ".join(f"{k}={v}" for k, v in identity.items())
        self.console.command(f"{shown} modeldeploy-server serve --model-uri {model['uri']} ...")
        argv = [*tool_argv("modeldeploy-server", "modeldeploy_server"), *args]
        child = self.children.start(f"server-{track}", argv, env={**self.session.env, **identity})
        self.stack.callback(self.children.stop, child)
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_status(f"{url}/v2/health/ready") == 200,
            60,
            f"the {track} server to be ready on {url}",
            watch=[child],
        )
        self.console.info(
            f"{track} server ready on {url} (model version {model.get('version')}, pid "
            f"{child.process.pid}, log {child.log.relative_to(self.workdir)})"
        )
        return url, f"127.0.0.1:{metrics_port}"

    def _target(self, track: str, server: tuple[str, str]) -> tuple[str, dict[str, str]]:
        # The namespace label is what a ServiceMonitor adds; the server adds deployment and
        # track to its series itself.
        return server[1], {"namespace": self.namespace, "job": f"{NAME}-{track}"}

    def _predict(self, url: str) -> None:
        rows = self.workdir / "flowers.json"
        rows.write_text(json.dumps(QUESTION))
        self.console.info(f"flowers.json: {json.dumps(QUESTION)}")
        args = ["predict", NAME, "--url", url, "--data", rows.name]
        answer = json.loads(self.session.modeldeploy_shown(*args, cwd=self.workdir))
        labels = next(o["data"] for o in answer["outputs"] if o["name"] == "label")
        names = ", ".join(CLASSES[int(label)] for label in labels)
        self.console.info(f"the model says: {names}")

    # Step 6: the canary ------------------------------------------------------------------
    def _canary(
        self, model: dict[str, Any], urls: dict[str, str], rows_by_class: list[list[list[float]]]
    ) -> None:
        traffic = Traffic(NAME, urls, rows_by_class).start()
        self.stack.callback(traffic.stop)
        patch = json.dumps({"spec": {"model": model}}, separators=(",", ":"))
        self.console.command(
            f"kubectl patch mdep {NAME} -n {self.namespace} --type=merge -p "
            f'\'{{"spec":{{"model":{{"uri":"{model["uri"]}",...}}}}}}\''
        )
        self.session.kubectl("patch", "mdep", NAME, "-n", self.namespace, "--type=merge",
                             "-p", patch)  # fmt: skip
        watch = [c for c in (self.operator, self.prometheus.child) if c is not None]
        self.session.follow_rollout(model["uri"], traffic, watch, ROLLOUT_TIMEOUT)
        traffic.stop()
        self.console.info(f"traffic during the rollout: {traffic.summary()}")
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
        c.line(f"    logs and files are kept in {self.workdir}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modeldeploy.demo",
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
