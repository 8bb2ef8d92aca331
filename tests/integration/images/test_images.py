"""The images `make images` builds, run as a pod runs them: uid 10001, a read-only root, all
capabilities dropped. Every request goes to 127.0.0.1 (the server shares the host's network
namespace and listens on loopback only)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest
import requests

from tests.support.images import RESTRICTED, RLIMITS, build_images, podman
from tests.support.servers import free_port, wait_for

# The first test builds the images when the cache is cold (several minutes on 2 busy cores).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

SERVER_SIZE_BUDGET = 250e6  # bytes, uncompressed: benchmarks/IMAGES.md


def run(
    image: str, *args: str, options: tuple[str, ...] = (), timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``podman run`` of ``image`` restricted like a pod, with no network unless ``options``
    give one; returns the completed process (text)."""
    network = () if "--network" in options else ("--network", "none")
    return subprocess.run(
        podman("run", "--rm", *RESTRICTED, *network, *options, image, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def inspect(image: str, template: str) -> str:
    return subprocess.run(
        podman("image", "inspect", "--format", template, image),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def wait_running(name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(
            podman("container", "inspect", "--format", "{{.State.Running}}", name),
            capture_output=True,
            text=True,
            timeout=30,
        )
        if state.stdout.strip() == "true":
            return
        time.sleep(0.2)
    pytest.fail(f"container {name} is not running after {timeout} s")


def stop(name: str) -> float:
    """Stop a container as the kubelet does (SIGTERM, then SIGKILL after 30 s); seconds taken."""
    start = time.monotonic()
    subprocess.run(podman("stop", "--time", "30", name), capture_output=True, timeout=90)
    return time.monotonic() - start


def test_an_unchanged_tree_builds_nothing(images: dict[str, str]) -> None:
    start = time.monotonic()
    again = build_images()
    assert again == images
    assert time.monotonic() - start < 60  # about a second when the machine is idle


def test_each_archive_names_its_image(images: dict[str, str]) -> None:
    # containerd's `ctr images import` names an image after the archive's ref annotation.
    for prefix in ("SERVER", "OPERATOR", "PAUSE"):
        with tarfile.open(images[f"{prefix}_ARCHIVE"]) as archive:
            member = archive.extractfile("index.json")
            assert member is not None
            index = json.load(member)
        names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
        assert names == [images[f"{prefix}_IMAGE"]]


def test_server_version(images: dict[str, str]) -> None:
    result = run(images["SERVER_IMAGE"], "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"modeldeploy-server {version('modeldeploy')}"


def test_server_image_is_small_non_root_and_has_no_installer(images: dict[str, str]) -> None:
    image = images["SERVER_IMAGE"]
    assert float(inspect(image, "{{.Size}}")) < SERVER_SIZE_BUDGET
    assert inspect(image, "{{.Config.User}}") == "10001:10001"
    probe = (
        "import importlib.util as u; print([u.find_spec(m) is None for m in ('pip', 'setuptools')])"
    )
    result = run(image, "-c", probe, options=("--entrypoint", "python3"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[True, True]"


def test_fetch_then_serve_on_loopback(
    images: dict[str, str], models: dict[str, Path], tmp_path: Path
) -> None:
    """The pod: the init container fetches the model into an emptyDir, the server loads it."""
    image = images["SERVER_IMAGE"]
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(models["classifier"], source / "model.onnx")
    empty_dir = tmp_path / "models"
    empty_dir.mkdir()
    empty_dir.chmod(0o777)  # what fsGroup gives uid 10001 on a real emptyDir
    digest = hashlib.sha256((source / "model.onnx").read_bytes()).hexdigest()

    fetch = run(
        image,
        "fetch", "--model-uri", "file:///srv/model.onnx", "--sha256", digest, "--dest", "/models",
        options=("-v", f"{source}:/srv:ro", "-v", f"{empty_dir}:/models"),
    )  # fmt: skip
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    assert '"message":"model placed"' in fetch.stderr
    assert (empty_dir / "model.onnx").read_bytes() == (source / "model.onnx").read_bytes()

    http_port, metrics_port = free_port(), free_port()
    name = f"modeldeploy-test-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path / "server.log"
    command = podman(
        "run", "--rm", *RESTRICTED, "--name", name, "--network", "host",
        "-v", f"{empty_dir}:/models:ro", image,
        "--model-name", "rf", "--model-uri", "file:///models/model.onnx", "--sha256", digest,
        "--host", "127.0.0.1", "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        "--workers", "1",
    )  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{http_port}"
            ready = wait_for(process, url + "/v2/health/ready", 200, 120, log_path.read_text)
            assert ready.json() == {"ready": True}
            row = {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
            response = requests.post(
                url + "/v2/models/rf/infer", json={"inputs": [row]}, timeout=10
            )
            assert response.status_code == 200, response.text
            metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
            assert metrics.ok
        finally:
            stop(name)
            code = process.wait(60)
    text = log_path.read_text()
    assert code == 0, text  # drained and exited on SIGTERM
    assert "Read-only file system" not in text and "Permission denied" not in text, text


def test_operator_image_starts_as_the_chart_runs_it(images: dict[str, str]) -> None:
    image = images["OPERATOR_IMAGE"]
    assert inspect(image, "{{.Config.User}}") == "10001:10001"
    result = run(image, "--help")
    assert result.returncode == 0, result.stderr
    assert "--all-namespaces" in result.stdout
    imports = run(
        image,
        "-c",
        "import modeldeploy.handlers, modeldeploy.kube",
        options=("--entrypoint", "python3"),
    )
    assert imports.returncode == 0, imports.stderr


def test_pause_reaps_orphans_and_exits_0_on_sigterm(images: dict[str, str]) -> None:
    """As a pod's PID 1: a process orphaned in its PID namespace is reaped, not left a zombie,
    and SIGTERM ends it at once with status 0."""
    name = f"modeldeploy-pause-{uuid.uuid4().hex[:8]}"
    command = podman(
        "run", "--rm", "--name", name, "--network", "none", "--read-only",
        "--cap-drop", "all", "--security-opt", "no-new-privileges", *RLIMITS,
        images["PAUSE_IMAGE"],
    )  # fmt: skip
    pause = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_running(name)
        # A subshell starts `sleep` in the background and exits: the sleep is reparented to
        # PID 1 (pause). When it ends, only PID 1 can reap it.
        script = (
            "(sleep 0.2 &); sleep 1.5; "
            'for f in /proc/[0-9]*/stat; do read -r line < "$f" && echo "$line"; done'
        )
        states = run(
            images["SERVER_IMAGE"],
            "-c",
            script,
            options=("--pid", f"container:{name}", "--entrypoint", "/bin/sh"),
        )
        assert states.returncode == 0, states.stderr
        processes = [line.split()[:3] for line in states.stdout.splitlines()]
        assert ["1", "(pause)", "S"] in processes, processes
        assert not [p for p in processes if p[2] == "Z"], processes
    finally:
        seconds = stop(name)
        code = pause.wait(60)
    assert code == 0, pause.stdout.read() if pause.stdout else ""
    assert seconds < 10  # SIGTERM, not the SIGKILL 30 s later
