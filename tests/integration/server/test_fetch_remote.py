"""Model fetch over real HTTP and from a real S3-compatible server (moto, with auth on).

The S3 server runs as its own process and checks SigV4 signatures and IAM policies, so
these tests exercise our signer, not a mock of a client.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from modeldeploy_server.fetch import (
    AccessDenied,
    DigestMismatch,
    SourceNotFound,
    SourceUnavailable,
    fetch,
)

from .conftest import SERVER, ServerProcess, free_port

pytestmark = pytest.mark.integration

PAYLOAD = os.urandom(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        path = self.path
        count = self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/missing.onnx":
            return self._send(404, b"not here")
        if path == "/secret.onnx" and self.headers.get("Authorization") != "Bearer t0k":
            return self._send(403, b"no")
        if path == "/basic.onnx":
            expected = "Basic " + base64.b64encode(b"user:p@ss").decode()
            if self.headers.get("Authorization") != expected:
                return self._send(401, b"who?")
        if path == "/flaky.onnx" and count <= 2:
            return self._send(503, b"busy")
        if path == "/down.onnx":
            return self._send(500, b"broken")
        if path == "/truncated.onnx" and count == 1:
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:1000])
            self.wfile.flush()
            self.close_connection = True
            return None
        return self._send(200, PAYLOAD)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_source() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _no_sleep(seconds: float) -> None:
    pass


def test_http_download_is_verified_and_placed(http_source: str, tmp_path: Path) -> None:
    placed = fetch(f"{http_source}/model.onnx", tmp_path, sha256=DIGEST)
    assert placed.read_bytes() == PAYLOAD


def test_http_retries_transient_failures(http_source: str, tmp_path: Path) -> None:
    delays: list[float] = []
    placed = fetch(f"{http_source}/flaky.onnx", tmp_path, sha256=DIGEST, sleep=delays.append)
    assert placed.read_bytes() == PAYLOAD and len(delays) == 2
    placed = fetch(
        f"{http_source}/truncated.onnx", tmp_path / "t", sha256=DIGEST, sleep=delays.append
    )
    assert placed.read_bytes() == PAYLOAD and len(delays) == 3


def test_http_gives_up_after_the_attempts(http_source: str, tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match=r"unavailable after 3 attempts: .*HTTP 500"):
        fetch(f"{http_source}/down.onnx", tmp_path, attempts=3, sleep=_no_sleep)
    closed = free_port()
    with pytest.raises(SourceUnavailable, match=r"Connection refused|ConnectionRefused"):
        fetch(f"http://127.0.0.1:{closed}/m.onnx", tmp_path, attempts=2, sleep=_no_sleep)
    assert list(tmp_path.iterdir()) == []


def test_http_timeouts_are_bounded(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match="timed out"):
            fetch(f"http://127.0.0.1:{silent.getsockname()[1]}/m.onnx", tmp_path,
                  timeout=0.3, attempts=2, sleep=_no_sleep)  # fmt: skip
        assert time.monotonic() - started < 5


def test_http_errors_are_classified(http_source: str, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="HTTP 404"):
        fetch(f"{http_source}/missing.onnx", tmp_path, sleep=_no_sleep)
    with pytest.raises(AccessDenied, match="HTTP 403"):
        fetch(f"{http_source}/secret.onnx", tmp_path, sleep=_no_sleep)
    with pytest.raises(DigestMismatch):
        fetch(f"{http_source}/model.onnx", tmp_path, sha256="f" * 64)
    assert list(tmp_path.iterdir()) == []


def test_http_credentials(http_source: str, tmp_path: Path) -> None:
    env = {"MODELDEPLOY_HTTP_AUTHORIZATION": "Bearer t0k"}
    assert fetch(f"{http_source}/secret.onnx", tmp_path, sha256=DIGEST, environ=env).exists()
    port = http_source.rsplit(":", 1)[1]
    uri = f"http://user:p%40ss@127.0.0.1:{port}/basic.onnx"
    assert fetch(uri, tmp_path / "b", sha256=DIGEST, environ={}).exists()


def _cli_fetch(
    uri: str, dest: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SERVER), "fetch", "--model-uri", uri, "--dest", str(dest), "--attempts", "1", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_cli_exit_codes_over_http(http_source: str, tmp_path: Path) -> None:
    ok = _cli_fetch(f"{http_source}/model.onnx", tmp_path, "--sha256", DIGEST)
    assert ok.returncode == 0, ok.stderr
    assert '"message":"download complete"' in ok.stderr and '"percent":100.0' in ok.stderr
    assert _cli_fetch(f"{http_source}/missing.onnx", tmp_path).returncode == 3
    assert _cli_fetch(f"{http_source}/secret.onnx", tmp_path).returncode == 4
    mismatch = _cli_fetch(f"{http_source}/model.onnx", tmp_path / "x", "--sha256", "0" * 64)
    assert mismatch.returncode == 5 and "sha256 mismatch" in mismatch.stderr
    assert _cli_fetch(f"{http_source}/down.onnx", tmp_path).returncode == 6


# -- S3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3+IAM server process with a bucket, a user allowed one prefix, auth on."""
    boto3 = pytest.importorskip("boto3")
    moto_server = Path(sys.executable).with_name("moto_server")
    if not moto_server.exists():
        pytest.skip("moto[server] is not installed")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen([str(moto_server), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(endpoint + "/moto-api/", timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.1)
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "admin", "aws_secret_access_key": "admin"}  # fmt: skip
        s3 = boto3.client("s3", **admin)
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="allowed/model v1.onnx", Body=PAYLOAD)
        s3.put_object(Bucket="models", Key="private/model.onnx", Body=PAYLOAD)
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="reader")
        iam.put_user_policy(
            UserName="reader",
            PolicyName="read-allowed",
            PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
            '"Action": "s3:GetObject", "Resource": "arn:aws:s3:::models/allowed/*"}]}',
        )
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        # From now on every request must be signed by a known key and allowed by policy.
        requests.post(endpoint + "/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        yield {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_s3_download_with_signed_requests(s3_server: dict[str, str], tmp_path: Path) -> None:
    result = _cli_fetch(
        "s3://models/allowed/model v1.onnx", tmp_path, "--sha256", DIGEST, env=s3_server
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model.onnx").read_bytes() == PAYLOAD


def test_s3_errors_have_distinct_exit_codes(s3_server: dict[str, str], tmp_path: Path) -> None:
    wrong_secret = {**s3_server, "AWS_SECRET_ACCESS_KEY": "wrong"}
    denied = _cli_fetch("s3://models/allowed/model v1.onnx", tmp_path, env=wrong_secret)
    assert denied.returncode == 4 and "SignatureDoesNotMatch" in denied.stderr
    forbidden = _cli_fetch("s3://models/private/model.onnx", tmp_path, env=s3_server)
    assert forbidden.returncode == 4 and "AccessDenied" in forbidden.stderr
    missing = _cli_fetch("s3://models/allowed/nope.onnx", tmp_path, env=s3_server)
    assert missing.returncode == 3 and "NoSuchKey" in missing.stderr, missing.stderr
    mismatch = _cli_fetch(
        "s3://models/allowed/model v1.onnx", tmp_path, "--sha256", "1" * 64, env=s3_server
    )
    assert mismatch.returncode == 5
    assert list(tmp_path.iterdir()) == []


def test_server_serves_a_model_from_s3(
    s3_server: dict[str, str], models: dict[str, Path], tmp_path: Path, new_server: Any
) -> None:
    import boto3

    body = models["regressor"].read_bytes()
    # The reader may not upload: lift auth for the upload, then put it back.
    requests.post(s3_server["AWS_ENDPOINT_URL"] + "/moto-api/reset-auth", data=b"1000", timeout=10)
    try:
        admin = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"],
                             region_name="us-east-1",
                             aws_access_key_id="admin", aws_secret_access_key="admin")  # fmt: skip
        admin.put_object(Bucket="models", Key="allowed/regressor.onnx", Body=body)
    finally:
        requests.post(s3_server["AWS_ENDPOINT_URL"] + "/moto-api/reset-auth", data=b"0", timeout=10)
    digest = hashlib.sha256(body).hexdigest()
    server: ServerProcess = new_server(
        "s3://models/allowed/regressor.onnx", "--sha256", digest,
        "--model-cache-dir", str(tmp_path / "cache"), name="reg", env=s3_server,
    )  # fmt: skip
    server.wait_ready()
    response = server.post("/v2/models/reg/infer", json={"inputs": [
        {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})  # fmt: skip
    assert response.status_code == 200
    metrics = requests.get(server.metrics_url, timeout=10).text
    assert f'sha256="{digest}"' in metrics and 'uri="s3://models/allowed/regressor.onnx"' in metrics
