"""Hostile and careless connections against a real server process on loopback: deadlines for
the head and the body, caps on the head, on connections and on body bytes in flight, a
lingering close, and the same care on the metrics port.

Time bounds here are generous on purpose (a shared machine): they tell "closed by a
deadline" from "kept open as long as the client likes", not how fast anything is.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from .conftest import ServerProcess

pytestmark = pytest.mark.integration

BODY = orjson.dumps(
    {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
)
INFER = "/v2/models/clf/infer"


def infer_head(length: int, path: str = INFER) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def padded_body(size: int) -> bytes:
    """A valid infer body of exactly ``size`` bytes (JSON allows trailing spaces)."""
    return BODY + b" " * (size - len(BODY))


def connect(port: int, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if data:
        sock.sendall(data)
    return sock


def read_reply(sock: socket.socket, timeout: float = 30) -> bytes:
    """What the server sends until it closes (b"" if it closed without a word), or until
    ``timeout`` seconds pass without a byte."""
    sock.settimeout(timeout)
    reply = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    return int(reply[9:12])


def error_of(reply: bytes) -> str:
    return str(orjson.loads(reply.partition(b"\r\n\r\n")[2])["error"])


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    """Sockets a test opens, closed after it."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_a_connection_that_sends_no_head_in_time_is_closed(
    models: dict[str, Path], new_server: Any
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--header-timeout", "1", name="clf")
    server.wait_ready()
    silent = connect(server.http_port)
    half = connect(server.http_port, b"POST /v2/models/clf/infer HTTP/1.1\r\nHost: x\r\nCont")
    started = time.monotonic()
    assert read_reply(silent) == b""  # nothing asked, nothing answered: closed
    reply = read_reply(half)
    assert time.monotonic() - started < 15
    assert status_of(reply) == 408 and "did not arrive within 1 s" in error_of(reply)
    # A kept-alive connection gets the same deadline for its next head, from its first byte.
    kept = connect(server.http_port, infer_head(len(BODY)) + BODY)
    kept.settimeout(30)
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /v2 HTTP/1.1\r\n")
    assert status_of(read_reply(kept)) == 408
    assert server.metric("modeldeploy_http_limit_hits_total", limit="header-timeout") == 3
    assert server.warnings("header-timeout"), server.log()
    assert server.post(INFER, data=BODY).status_code == 200


def test_a_body_slower_than_the_minimum_rate_gets_408(
    models: dict[str, Path], new_server: Any, closing: list[socket.socket]
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--min-body-rate", "1000", name="clf")
    server.wait_ready()
    drip = connect(server.http_port, infer_head(10_000) + b"{")
    burst_then_silence = connect(server.http_port, infer_head(60_000) + b" " * 20_000)
    closing += [drip, burst_then_silence]
    started = time.monotonic()

    def dripping() -> None:  # 1 byte a second, far below 1000 bytes/s
        with contextlib.suppress(OSError):
            for _ in range(30):
                time.sleep(1)
                drip.sendall(b" ")

    threading.Thread(target=dripping, daemon=True).start()
    for sock in (drip, burst_then_silence):
        reply = read_reply(sock)
        assert status_of(reply) == 408, reply
        assert "arrived at under 1000 bytes/s" in error_of(reply)
    assert time.monotonic() - started < 25  # the 5 s window, twice at most, not 30 s
    assert server.metric("modeldeploy_http_limit_hits_total", limit="body-rate") == 2
    assert server.post(INFER, data=BODY).status_code == 200


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000 + b"\r\n", 431),
        (b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: aaaaaaaa\r\n" * 5_000, 431),
        (b"GET /v2?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n", 414),
    ],
    ids=["one long header", "many headers", "long URL"],
)
def test_a_head_over_64_kib_gets_431_or_414(
    servers: dict[str, ServerProcess], head: bytes, status: int
) -> None:
    server = servers["classifier"]
    sock = connect(server.http_port)
    with contextlib.suppress(OSError):  # the answer may come while we still send
        sock.sendall(head + b"\r\n")
        for _ in range(100):  # and more: 200 MiB of head used to be read in full
            sock.sendall(b"X-More: " + b"b" * 65536 + b"\r\n")
    reply = read_reply(sock)
    sock.close()
    assert status_of(reply) == status
    assert "exceeds 65536 bytes" in error_of(reply)
    assert server.get("/v2/health/ready").status_code == 200


def test_500_slow_connections_do_not_stop_normal_requests(
    models: dict[str, Path], new_server: Any, closing: list[socket.socket]
) -> None:
    # As a new user would run it, with the open-file limit the issue was found with.
    server: ServerProcess = new_server(models["classifier"], name="clf", nofile=400)
    server.wait_ready()
    kinds = [b"", b"POST /v2/models/clf/infer HTTP/1.1\r\nHost: x\r\n", infer_head(50_000) + b"{"]
    for index in range(500):
        closing.append(connect(server.http_port, kinds[index % 3]))
    statuses = []
    for _ in range(20):  # a new connection each time, as a load balancer's would be
        statuses.append(requests.post(server.url + INFER, data=BODY, timeout=2).status_code)
    assert statuses == [200] * 20
    assert server.get("/v2/health/ready", timeout=2).status_code == 200
    hits = server.metric("modeldeploy_http_limit_hits_total", limit="connections")
    assert hits >= 100  # the cap (fitted to 400 descriptors) was reached and made room
    # ...and said so, without a line per connection.
    assert 1 <= len(server.warnings("connections")) <= 3, server.warnings("connections")
    cap = server.warnings("connections")[0]["max_connections"]
    assert cap < 400


def test_connections_beyond_the_cap_get_503_when_none_can_make_room(
    models: dict[str, Path], new_server: Any, closing: list[socket.socket]
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--max-connections", "20",
                                       "--min-body-rate", "0", name="clf")  # fmt: skip
    server.wait_ready()
    for _ in range(20):  # each in the middle of a request: none waits for a head
        closing.append(connect(server.http_port, infer_head(1000) + b"{"))
    time.sleep(0.5)
    refused = requests.post(server.url + INFER, data=BODY, timeout=10)
    assert refused.status_code == 503
    assert refused.headers["Connection"] == "close" and refused.headers["Retry-After"] == "1"
    assert "connections are open" in refused.json()["error"]
    assert server.warnings("connections")
    for sock in closing:
        sock.close()
    deadline = time.monotonic() + 30
    while requests.post(server.url + INFER, data=BODY, timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the server never took new connections again"
        time.sleep(0.2)


def test_request_bodies_in_flight_are_bounded_per_worker(
    models: dict[str, Path], new_server: Any, closing: list[socket.socket]
) -> None:
    mib = 1 << 20
    server: ServerProcess = new_server(models["classifier"], "--max-request-bytes", str(4 * mib),
                                       "--max-inflight-body-bytes", str(8 * mib),
                                       "--min-body-rate", "0", name="clf")  # fmt: skip
    server.wait_ready()
    for _ in range(20):  # 20 unfinished 4 MiB bodies, 3 MiB of each sent
        sock = connect(server.http_port)
        closing.append(sock)
        with contextlib.suppress(OSError):
            sock.sendall(infer_head(4 * mib) + b" " * (3 * mib))
    refused = 0
    for sock in closing:
        sock.settimeout(1)
        with contextlib.suppress(TimeoutError):
            reply = sock.recv(65536)  # the refused got their answer at once; the others none
            assert status_of(reply) == 503 and b"retry-after: 1" in reply.lower()
            refused += 1
    # At most two 3 MiB parts fit in 8 MiB; every other body was refused, not buffered.
    assert refused >= 18, refused
    assert server.metric("modeldeploy_http_limit_hits_total", limit="inflight-body-bytes") >= 18
    assert server.warnings("inflight-body-bytes")
    for sock in closing:
        sock.close()
    deadline = time.monotonic() + 30
    while server.metric("modeldeploy_inflight_requests") > 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    full = requests.post(server.url + INFER, data=padded_body(4 * mib), timeout=30)
    assert full.status_code == 200, full.text


def test_an_early_413_reaches_an_ordinary_client_instead_of_a_reset(
    models: dict[str, Path], new_server: Any
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--max-request-bytes", "65536",
                                       name="clf")  # fmt: skip
    server.wait_ready()
    big = padded_body(32 << 20)  # refused from its Content-Length, while it is still sent

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused mid-body
        for _ in range(32):
            yield b" " * (1 << 20)

    # The standard library's client (urllib's) sends the whole body before it reads.
    for body in (big, big, chunks()):
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
        connection.request("POST", INFER, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 413
        assert "exceeds the limit of 65536 bytes" in orjson.loads(response.read())["error"]
        connection.close()
    assert server.post(INFER, data=BODY).status_code == 200


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def test_the_metrics_port_holds_no_thread_per_connection(
    models: dict[str, Path], new_server: Any, closing: list[socket.socket]
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--header-timeout", "3", name="clf")
    server.wait_ready()
    threads_before = _threads(server.process.pid)
    for index in range(500):
        closing.append(connect(server.metrics_port, b"GET /metr" if index % 2 else b""))
    time.sleep(0.5)
    assert _threads(server.process.pid) <= threads_before + 2
    scrape = requests.get(server.metrics_url, timeout=2)
    assert scrape.status_code == 200 and "modeldeploy_requests" in scrape.text
    replies = [read_reply(sock) for sock in closing[:10]]  # closed by the head deadline
    assert all(reply in (b"",) or status_of(reply) in (408, 503) for reply in replies)
    assert server.metric("modeldeploy_http_limit_hits_total", listener="metrics") >= 10
