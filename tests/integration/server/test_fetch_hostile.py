"""``modeldeploy-server fetch`` against hostile or careless sources, as real processes.

Every source is a real HTTP server on a loopback port (``http.server`` in a thread) and every
fetch is the real CLI in a subprocess: what a source receives is recorded by the source.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
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

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stopping = threading.Event()  # routes that stall wait on it
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
        scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def headers_seen(self, path: str) -> list[dict[str, str]]:
        return [headers for seen, headers in self.requests if seen.split("?", 1)[0] == path]

    def close(self) -> None:
        self.stopping.set()
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
def sources() -> Iterator[Callable[..., Source]]:
    started: list[Source] = []

    def start(tls: ssl.SSLContext | None = None) -> Source:
        started.append(Source(tls))
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


# -- redirects ----------------------------------------------------------------------------


def redirect_to(location: str, status: int = 302) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(handler: BaseHTTPRequestHandler) -> None:
        send(handler, status, b"", Location=location)

    return route


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


S3_ENV = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
          "AWS_SESSION_TOKEN": "session-token", "AWS_REGION": "us-east-1"}  # fmt: skip


@pytest.mark.parametrize("credential", ["bearer", "basic", "s3"])
def test_credentials_never_follow_a_redirect_to_another_origin(
    sources: Callable[..., Source], tmp_path: Path, credential: str
) -> None:
    origin, elsewhere = sources(), sources()  # two ports: two origins
    elsewhere.routes["/model.onnx"] = serve_payload
    env: dict[str, str] = {}
    if credential == "bearer":
        uri, env = f"{origin.url}/model.onnx", {"MODELDEPLOY_HTTP_AUTHORIZATION": "Bearer t0k"}
        path = "/model.onnx"
    elif credential == "basic":
        uri, path = origin.url.replace("://", "://user:p%40ss@") + "/model.onnx", "/model.onnx"
    else:
        uri, path = "s3://models/model.onnx", "/models/model.onnx"
        env = {**S3_ENV, "AWS_ENDPOINT_URL": origin.url}
    origin.routes[path] = redirect_to(f"{elsewhere.url}/model.onnx", 307)
    result = run_fetch(uri, tmp_path, "--sha256", DIGEST, env=env)
    assert result.returncode == 0, result.stderr  # followed, without the credentials
    sent = origin.headers_seen(path)[0]
    assert "authorization" in sent  # the origin got them...
    if credential == "s3":
        assert sent["x-amz-security-token"] == "session-token"
    (received,) = elsewhere.headers_seen("/model.onnx")
    leaked = {k: v for k, v in received.items() if k == "authorization" or k.startswith("x-amz-")}
    assert leaked == {}  # ...the redirect target none
    assert '"credentials_dropped"' in result.stderr


def test_credentials_follow_a_redirect_within_the_origin(
    sources: Callable[..., Source], tmp_path: Path
) -> None:
    origin = sources()
    origin.routes["/latest.onnx"] = redirect_to("/v3/model.onnx")
    origin.routes["/v3/model.onnx"] = needs_bearer("t0k")
    result = run_fetch(f"{origin.url}/latest.onnx", tmp_path, "--sha256", DIGEST,
                       env={"MODELDEPLOY_HTTP_AUTHORIZATION": "Bearer t0k"})  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for 127.0.0.1, and that certificate
    (for the client's SSL_CERT_FILE)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def test_a_redirect_from_https_to_http_is_refused(
    sources: Callable[..., Source], tmp_path: Path, tls: tuple[ssl.SSLContext, Path]
) -> None:
    context, cert = tls
    secure, plain = sources(context), sources()
    secure.routes["/model.onnx"] = serve_payload
    secure.routes["/moved.onnx"] = redirect_to(f"{plain.url}/model.onnx")
    plain.routes["/model.onnx"] = serve_payload
    env = {"SSL_CERT_FILE": str(cert), "MODELDEPLOY_HTTP_AUTHORIZATION": "Bearer t0k"}
    ok = run_fetch(f"{secure.url}/model.onnx", tmp_path / "ok", "--sha256", DIGEST, env=env)
    assert ok.returncode == 0, ok.stderr  # TLS itself works
    refused = run_fetch(f"{secure.url}/moved.onnx", tmp_path / "no", env=env)
    assert refused.returncode == 10, refused.stderr
    assert "from https to http" in refused.stderr
    assert plain.requests == []  # not a byte in clear text


def test_a_redirect_to_ftp_opens_no_connection(
    sources: Callable[..., Source], tmp_path: Path
) -> None:
    accepted: list[object] = []
    with socket.socket() as ftp:
        ftp.bind(("127.0.0.1", 0))
        ftp.listen(4)
        ftp.settimeout(0.2)
        origin = sources()
        origin.routes["/model.onnx"] = redirect_to(
            f"ftp://127.0.0.1:{ftp.getsockname()[1]}/model.onnx"
        )
        result = run_fetch(f"{origin.url}/model.onnx", tmp_path)
        with contextlib.suppress(TimeoutError):
            accepted.append(ftp.accept())
    assert result.returncode == 10, result.stderr
    assert "redirect to ftp:// refused" in result.stderr
    assert accepted == []


def test_redirects_are_followed_a_few_times_only(
    sources: Callable[..., Source], tmp_path: Path
) -> None:
    origin = sources()
    origin.routes["/loop.onnx"] = redirect_to("/loop.onnx")
    result = run_fetch(f"{origin.url}/loop.onnx", tmp_path)
    assert result.returncode == 10 and "more than 5 redirects" in result.stderr
    assert len(origin.requests) == 6


# -- size, time and interruptions ---------------------------------------------------------


def test_a_source_larger_than_max_bytes_is_refused(
    sources: Callable[..., Source], tmp_path: Path
) -> None:
    origin = sources()
    written: list[int] = []

    def endless(handler: BaseHTTPRequestHandler) -> None:  # no Content-Length: until close
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        sent = 0
        with contextlib.suppress(OSError):
            for _ in range(64):
                handler.wfile.write(b"\0" * (1 << 20))
                sent += 1 << 20
        written.append(sent)

    origin.routes["/model.onnx"] = serve_payload  # 200 000 bytes, said up front
    origin.routes["/endless.onnx"] = endless
    declared = run_fetch(f"{origin.url}/model.onnx", tmp_path, "--max-bytes", "100000")
    assert declared.returncode == 9, declared.stderr
    assert "200000 bytes, more than --max-bytes 100000" in declared.stderr
    streamed = run_fetch(f"{origin.url}/endless.onnx", tmp_path, "--max-bytes", "100000")
    assert streamed.returncode == 9 and "sent more than --max-bytes" in streamed.stderr
    deadline = time.monotonic() + 30
    while not written:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert written[0] < 64 << 20  # the client hung up: the source could not send it all
    assert list(tmp_path.iterdir()) == []


def test_a_drip_stops_at_the_overall_timeout(
    sources: Callable[..., Source], tmp_path: Path
) -> None:
    origin = sources()

    def drip(handler: BaseHTTPRequestHandler) -> None:  # 1 byte a second, never a silence
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(100):
                if origin.stopping.wait(1):
                    return
                handler.wfile.write(b"x")
                handler.wfile.flush()

    origin.routes["/model.onnx"] = drip
    started = time.monotonic()
    result = run_fetch(f"{origin.url}/model.onnx", tmp_path, "--timeout", "3",
                       "--read-timeout", "30", timeout=60)  # fmt: skip
    assert result.returncode == 6, result.stderr
    assert "timed out" in result.stderr
    assert time.monotonic() - started < 20  # about 3 s, not the 100 the drip would take
    assert list(tmp_path.iterdir()) == []


def stall_after(source: Source, size: int) -> Callable[[BaseHTTPRequestHandler], None]:
    """A route that promises 10 MiB, sends ``size`` bytes, then sends nothing more."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 << 20))
        handler.end_headers()
        with contextlib.suppress(OSError):
            handler.wfile.write(b"\0" * size)
            handler.wfile.flush()
            source.stopping.wait(60)

    return route


def start_fetch(uri: str, dest: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SERVER), "fetch", "--model-uri", uri, "--dest", str(dest), "--attempts", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def partials(dest: Path) -> list[Path]:
    return sorted(dest.glob(".*.partial"))


def wait_for_partial(dest: Path, size: int, process: subprocess.Popen[str]) -> Path:
    deadline = time.monotonic() + 30
    while True:
        found = [p for p in partials(dest) if p.stat().st_size >= size]
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no partial download appeared"
        time.sleep(0.05)


def test_sigterm_during_a_download_removes_the_partial_file(
    sources: Callable[..., Source], tmp_path: Path
) -> None:
    origin = sources()
    origin.routes["/model.onnx"] = stall_after(origin, 1 << 20)
    fetching = start_fetch(f"{origin.url}/model.onnx", tmp_path)
    try:
        wait_for_partial(tmp_path, 1 << 20, fetching)
        fetching.send_signal(signal.SIGTERM)
        _, stderr = fetching.communicate(timeout=30)
    finally:
        fetching.kill()
    assert fetching.returncode == 143, stderr
    assert "stopped by SIGTERM" in stderr
    assert partials(tmp_path) == []


def test_a_partial_left_by_sigkill_is_removed_by_the_next_fetch_and_a_live_one_kept(
    sources: Callable[..., Source], tmp_path: Path
) -> None:
    origin = sources()
    origin.routes["/stall.onnx"] = stall_after(origin, 1 << 20)
    origin.routes["/model.onnx"] = serve_payload
    killed = start_fetch(f"{origin.url}/stall.onnx", tmp_path, "--filename", "a.onnx")
    wait_for_partial(tmp_path, 1 << 20, killed)
    killed.kill()  # SIGKILL: nothing can clean up
    killed.communicate(timeout=30)
    (stale,) = partials(tmp_path)
    # The next fetch into the same directory removes it first...
    running = start_fetch(f"{origin.url}/stall.onnx", tmp_path, "--filename", "b.onnx")
    try:
        deadline = time.monotonic() + 30
        while not (live := [p for p in partials(tmp_path) if p != stale]) or stale.exists():
            assert running.poll() is None and time.monotonic() < deadline, partials(tmp_path)
            time.sleep(0.05)
        # ...and a fetch that starts while that one runs keeps its partial file.
        result = run_fetch(f"{origin.url}/model.onnx", tmp_path, "--sha256", DIGEST)
        assert result.returncode == 0, result.stderr
        assert partials(tmp_path) == live
    finally:
        running.send_signal(signal.SIGTERM)
        _, stderr = running.communicate(timeout=30)
    assert "removed a partial download left by an interrupted fetch" in stderr
    assert partials(tmp_path) == []
