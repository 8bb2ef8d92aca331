"""``modeldeploy-server fetch`` against hostile or careless sources, as real processes.

Every source is a real HTTP server on a loopback port (``http.server`` in a thread) and every
fetch is the real CLI in a subprocess: what a source receives is recorded by the source.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.conftest import CRD_FILE

from .conftest import SERVER, ServerProcess

pytestmark = pytest.mark.integration

PAYLOAD = os.urandom(200_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class Source:
    """A loopback HTTP server whose answers a test scripts per path; it records each request."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                source.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = source.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    send(self, 404, b"no such file")
                else:
                    route(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def headers_seen(self, path: str) -> list[dict[str, str]]:
        return [headers for seen, headers in self.requests if seen.split("?", 1)[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def serve_payload(handler: BaseHTTPRequestHandler) -> None:
    send(handler, 200, PAYLOAD)


def needs_bearer(token: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Authorization") != f"Bearer {token}":
            send(handler, 401, b"who are you?")
        else:
            send(handler, 200, PAYLOAD)

    return route


@pytest.fixture
def sources() -> Iterator[Callable[[], Source]]:
    started: list[Source] = []

    def start() -> Source:
        started.append(Source())
        return started[-1]

    yield start
    for source in started:
        source.close()


def run_fetch(
    uri: str, dest: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real ``modeldeploy-server fetch``; no ambient credentials or proxies."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "MODELDEPLOY_")) and "proxy" not in k.lower()}  # fmt: skip
    return subprocess.run(
        [str(SERVER), "fetch", "--model-uri", uri, "--dest", str(dest), "--attempts", "1", *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def test_the_variable_the_crd_names_for_https_credentials_is_the_one_fetch_sends(
    sources: Callable[[], Source], tmp_path: Path
) -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    model = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["model"]
    description = " ".join(model["properties"]["credentialsSecret"]["description"].split())
    named = re.search(r"([A-Z][A-Z0-9_]*AUTHORIZATION)\b[^;]*for http", description)
    assert named, description
    origin = sources()
    origin.routes["/model.onnx"] = needs_bearer("t0k")
    # A user puts the variable the CRD names into the Secret; the init container gets it.
    result = run_fetch(f"{origin.url}/model.onnx", tmp_path, "--sha256", DIGEST,
                       env={named.group(1): "Bearer t0k"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model.onnx").read_bytes() == PAYLOAD


def test_secrets_in_the_model_uri_reach_no_log_line_and_no_metric(
    models: dict[str, Path], sources: Callable[[], Source], new_server: Any, tmp_path: Path
) -> None:
    origin = sources()
    model = models["regressor"].read_bytes()
    expected = "Basic " + base64.b64encode(b"reader:s3cr3t-pass").decode()

    def route(handler: BaseHTTPRequestHandler) -> None:
        authorized = handler.headers.get("Authorization") == expected
        send(handler, 200 if authorized else 401, model if authorized else b"who?")

    origin.routes["/regressor.onnx"] = route
    port = origin.url.rsplit(":", 1)[1]
    uri = (f"http://reader:s3cr3t-pass@127.0.0.1:{port}/regressor.onnx"
           "?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=f00dfeed")  # fmt: skip
    server: ServerProcess = new_server(uri, "--model-cache-dir", str(tmp_path / "cache"),
                                       name="reg")  # fmt: skip
    server.wait_ready()
    metrics = requests.get(server.metrics_url, timeout=10).text
    assert f'uri="http://127.0.0.1:{port}/regressor.onnx"' in metrics
    log = server.log()
    assert f'"uri":"http://127.0.0.1:{port}/regressor.onnx"' in log  # the "starting" line
    for secret in ("s3cr3t-pass", "reader", "AKIDEXAMPLE", "f00dfeed"):
        assert secret not in log and secret not in metrics, secret
