"""`make demo` end to end: the demo as a user runs it (``python -m modeldeploy_dev.demo``, what the
Makefile target runs), against the session's control plane, with its own namespace and Helm
release so that it cannot collide with someone's `make demo` on a shared cluster.

Each run is checked for what a user must see (each step announced, the prediction's JSON, the
weights of the canary, the promotion and the history) and for what it must leave behind:
nothing (no process of its own, no Helm release, its namespace gone or going).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def demo_command(cluster: Any, workdir: Path) -> tuple[list[str], str, str]:
    suffix = uuid.uuid4().hex[:6]
    namespace, release = f"demo-e2e-{suffix}", f"modeldeploy-e2e-{suffix}"
    command = [
        sys.executable, "-m", "modeldeploy_dev.demo", "--namespace", namespace,
        "--release", release, "--workdir", str(workdir), "--cluster-root", str(cluster.root),
    ]  # fmt: skip
    return command, namespace, release


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (the demo's work directory
    is on the command line of everything it starts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if text in line and "modeldeploy_dev.demo" not in line:
            found.append(line)
    return found


def printed_json_after(out: str, marker: str) -> Any:
    """The JSON document printed (indented) on the lines after the line holding ``marker``."""
    lines = out[out.index(marker) :].splitlines()[1:]
    indent = len(lines[0]) - len(lines[0].lstrip())
    assert lines[0].strip() == "{", lines[:3]
    end = next(i for i, line in enumerate(lines) if line == " " * indent + "}")
    return json.loads("\n".join(line[indent:] for line in lines[: end + 1]))


def assert_no_release(cluster: Any, release: str) -> None:
    helm = subprocess.run(
        [str(cluster.tool("helm")), f"--kubeconfig={cluster.kubeconfig}", "status", release,
         "-n", "modeldeploy-system"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert helm.returncode != 0 and "not found" in helm.stderr, helm.stdout


def assert_left_nothing(cluster: Any, workdir: Path, namespace: str, release: str) -> None:
    assert processes_mentioning(str(workdir)) == []
    assert_no_release(cluster, release)
    found = cluster.kubectl("get", "namespace", namespace, "-o", "json", check=False)
    if found.returncode == 0:  # deleted without waiting: it may still be terminating
        assert json.loads(found.stdout)["status"]["phase"] == "Terminating"


def test_the_demo_serves_a_prediction_and_promotes_a_canary(cluster: Any, tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    command, namespace, release = demo_command(cluster, workdir)
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-6000:] + result.stderr[-3000:]

    for number in range(1, 7):
        assert re.search(rf"^\[\s*[\d.]+s\] ==> {number}/6 ", out, re.MULTILINE), out
    # The chart installed, its operator a pod Running on the real node.
    assert f"helm install {release} charts/modeldeploy -n modeldeploy-system" in out
    assert "deployed" in out
    assert re.search(rf"^\s*{release}-\S+\s+1/1\s+Running\s.*modeldeploy-node", out, re.M), out
    # The export's report, the upload, and the ModelDeployment Ready on real pods.
    assert "labels         150/150 identical  OK" in out
    assert "s3://models/iris/v1/ --recursive" in out
    assert re.search(
        r"phase Ready: 4 of 4 pod\(s\) ready; serving s3://models/iris/v1/model.onnx", out
    )
    row = r"^\s*iris-\S+\s+1/1\s+Running\s.*modeldeploy-node"
    assert len(re.findall(row, out, re.M)) >= 4, out
    # The prediction through the Service's cluster address, as `modeldeploy predict` printed it.
    response = printed_json_after(out, "$ modeldeploy predict iris --url http://10.96.")
    assert response["model_name"] == "iris" and response["model_version"] == "1"
    labels = next(o for o in response["outputs"] if o["name"] == "label")
    assert labels["data"] == [0, 1, 2]
    assert "the model says: setosa, versicolor, virginica" in out
    # `kubectl logs` of a serving pod shows the real server.
    assert "$ kubectl logs iris-" in out
    # The canary's steps, its analysis from Prometheus, the promotion and the history.
    assert "canary weight 25%" in out and "canary weight 50%" in out
    passed = r"analysis run \(passed [1-9].*error-rate 0 \(max 0.01, \d+ samples\) Passed"
    assert re.search(passed, out), out
    assert "prediction-drift" in out
    assert "Promoted: promoted at step 4 of 4" in out
    assert re.search(r"Promoted\s+Promoted\s+s3://models/iris/v2/model.onnx \(version 2\)", out)
    served = re.search(r"(\d+) of (\d+) requests answered 200", out)
    assert served and int(served[1]) > 0 and served[1] == served[2], out
    assert re.search(r"weight 25%: the canary answered \d+% of \d+ requests", out), out
    # The canary's HTTPRoute on the cluster's gateway carried the demo's traffic.
    assert "traffic through the gateway (http://10.244.0.1:80" in out, out
    assert "(Gateway API: the HTTPRoute's weights, request by request)" in out, out
    assert re.search(r"demo finished in \d+s", out)
    assert_left_nothing(cluster, workdir, namespace, release)


def test_ctrl_c_mid_rollout_stops_everything_the_demo_started(cluster: Any, tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    command, namespace, release = demo_command(cluster, workdir)
    demo = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            seen.append(line)
            if "canary weight 25%" in line:  # mid-rollout: every process is running
                demo.send_signal(signal.SIGINT)
                break
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    out = "".join(seen) + rest
    assert demo.returncode == 130, out[-4000:]
    assert "interrupted: stopping everything the demo started" in out
    assert_left_nothing(cluster, workdir, namespace, release)


def test_a_namespace_the_demo_does_not_own_is_refused_and_the_release_removed(
    cluster: Any, tmp_path: Path
) -> None:
    workdir = tmp_path / "demo"
    command, namespace, release = demo_command(cluster, workdir)
    cluster.kubectl("create", "namespace", namespace)
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        # The user's namespace is theirs: the demo left it alone.
        found = cluster.kubectl("get", "namespace", namespace, "-o", "json", check=False)
        assert json.loads(found.stdout)["status"]["phase"] == "Active"
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    assert result.returncode == 1, result.stdout[-4000:]
    assert re.search(
        rf"FAILED at step 2/6 \(.*\): namespace {namespace} exists and was not created by the "
        "demo: delete it, or run `python -m modeldeploy_dev.demo --namespace OTHER`",
        result.stdout,
    ), result.stdout[-4000:]
    assert processes_mentioning(str(workdir)) == []
    assert_no_release(cluster, release)
