"""Mirroring over loopback: a stable app (in-process) mirrors to a canary that is our real
HTTP app on a real 127.0.0.1 listener; and to canaries that are down, slow or absent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy_server.metrics import aggregate, render
from modeldeploy_server.profile import parse_profile
from modeldeploy_server.shadow import ShadowMirror, ShadowOptions
from modeldeploy_server.shadow_client import ShadowClient
from modeldeploy_server.shadow_config import ShadowTarget
from modeldeploy_server.shadow_metrics import ShadowTally
from tests.support.onnx_models import make_classifier, make_regressor, sample_rows
from tests.support.profiles import build_profile, classifier_training_rows

from .conftest import AsgiClient, make_app


def _body(rows: np.ndarray) -> dict[str, Any]:
    data = rows.reshape(-1).tolist()
    return {"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32", "data": data}]}


def _listen(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


class Canary:
    """Our REST app behind uvicorn on 127.0.0.1, on the test's loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, model: Path, profile: Any = None, port: int = 0
    ) -> None:
        self.client, self.dataplane, self.metrics = make_app(loop, model, profile=profile)
        self.sock = _listen(port)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(self.client.app, lifespan="off", log_config=None)
        self.server = uvicorn.Server(config)
        self.task = loop.create_task(self.server.serve(sockets=[self.sock]))
        self.loop = loop

    def stop(self) -> None:
        self.server.should_exit = True
        self.loop.run_until_complete(self.task)


def _stable(
    loop: asyncio.AbstractEventLoop, model: Path, target: ShadowTarget | None, **options: Any
) -> tuple[AsgiClient, ShadowMirror, ShadowTally]:
    profile = parse_profile(build_profile(classifier_training_rows(), model))
    client, dataplane, metrics = make_app(loop, model, profile=profile)
    tally = metrics.shadow = ShadowTally("m")
    mirror = ShadowMirror(ShadowOptions(**options), tally)
    assert dataplane.slot.model is not None
    mirror.attach(dataplane.slot.model.outputs, profile)
    mirror.set_target(target)
    dataplane.mirror = mirror
    return client, mirror, tally


def _start(loop: asyncio.AbstractEventLoop, mirror: ShadowMirror) -> None:
    async def start() -> None:
        mirror.start()

    loop.run_until_complete(start())


def _until(loop: asyncio.AbstractEventLoop, done: Any, timeout: float = 10.0) -> None:
    async def wait() -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)

    loop.run_until_complete(wait())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shadow")
    return {
        "v1": make_classifier(root / "v1.onnx", seed=0),
        "v1-again": make_classifier(root / "v1-again.onnx", seed=0),
        "v2": make_classifier(root / "v2.onnx", seed=0, trees=2),
        "regressor": make_regressor(root / "regressor.onnx"),
    }


@pytest.fixture
def canary(loop: asyncio.AbstractEventLoop, models: dict[str, Path]) -> Iterator[Canary]:
    server = Canary(loop, models["v1-again"])
    yield server
    server.stop()


def test_an_equivalent_canary_agrees_on_every_row_in_every_slice(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path], canary: Canary
) -> None:
    client, mirror, tally = _stable(loop, models["v1"], ShadowTarget("127.0.0.1", canary.port))
    _start(loop, mirror)
    rows = classifier_training_rows()[:50]
    for start in range(0, 50, 10):
        assert client.post("/v2/models/m/infer", _body(rows[start : start + 10])).status == 200
    _until(loop, lambda: tally.rows == 50)
    mirror.stop()
    assert tally.disagreements == 0 and tally.dropped == {}
    assert sum(v for (f, _), v in tally.slice_rows.items() if f == "f0") == 50
    assert set(tally.slice_disagreements.values()) == {0}
    # The canary answered copies: counted apart, not as client requests, not monitored.
    assert canary.metrics.shadow_requests == {("m", 200): 5}
    assert canary.metrics.requests == {}


def test_a_different_canary_disagrees_and_the_slices_say_where(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    canary = Canary(loop, models["v2"])
    try:
        client, mirror, tally = _stable(loop, models["v1"], ShadowTarget("127.0.0.1", canary.port))
        _start(loop, mirror)
        rows = sample_rows(200, seed=3) * 2
        assert client.post("/v2/models/m/infer", _body(rows)).status == 200
        _until(loop, lambda: tally.rows == 200)
        mirror.stop()
    finally:
        canary.stop()
    assert 0 < tally.disagreements < 200
    assert sum(tally.slice_disagreements.values()) == 4 * tally.disagreements  # 4 features
    assert tally.probability_difference.counts.sum() == 200
    text, _ = render(aggregate([client.app.metrics.snapshot()]), "iris", "stable", None)
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    wrong = families["modeldeploy_shadow_disagreements"].samples
    assert {s.labels["feature"] for s in wrong} == {"f0", "f1", "f2", "f3"}
    assert all(s.labels["bin"] for s in wrong)
    overall = families["modeldeploy_shadow_disagreeing_rows"].samples[0].value
    assert overall == tally.disagreements
    assert families["modeldeploy_shadow_rows"].samples[0].value == 200


def test_a_regressor_records_its_errors(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path], canary: Canary
) -> None:
    client, dataplane, _metrics = make_app(loop, models["regressor"])
    tally = ShadowTally("m")
    mirror = ShadowMirror(ShadowOptions(), tally)
    assert dataplane.slot.model is not None
    mirror.attach(dataplane.slot.model.outputs, None)
    mirror.set_target(ShadowTarget("127.0.0.1", canary.port))  # a classifier: unpairable
    dataplane.mirror = mirror
    _start(loop, mirror)
    assert client.post("/v2/models/m/infer", _body(sample_rows(4))).status == 200
    _until(loop, lambda: tally.dropped)
    mirror.stop()
    assert tally.dropped == {"canary_error": 1}  # the canary has no output "variable": 400


def test_the_client_is_answered_when_the_canary_is_down(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    sock = _listen()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client, mirror, tally = _stable(loop, models["v1"], ShadowTarget("127.0.0.1", port))
    _start(loop, mirror)
    for _ in range(3):
        assert client.post("/v2/models/m/infer", _body(sample_rows(2))).status == 200
    _until(loop, lambda: tally.dropped.get("canary_error") == 3)
    mirror.stop()
    assert tally.rows == 0


def _closed_port() -> int:
    sock = _listen()
    port: int = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return port


def _count_posts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the copies the mirror tries to send (connection attempts included)."""
    attempts: list[int] = []
    post = ShadowClient.post

    async def counted(self: ShadowClient, *args: Any, **kwargs: Any) -> Any:
        attempts.append(self.port)
        return await post(self, *args, **kwargs)

    monkeypatch.setattr(ShadowClient, "post", counted)
    return attempts


def test_an_unreachable_canary_is_not_tried_for_every_copy(
    loop: asyncio.AbstractEventLoop,
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After three refused connections in a row, copies are counted as dropped without an
    encode or a connection attempt each, until the retry delay has passed."""
    caplog.set_level(logging.INFO, logger="modeldeploy_server.shadow")
    attempts = _count_posts(monkeypatch)
    target = ShadowTarget("127.0.0.1", _closed_port())
    client, mirror, tally = _stable(loop, models["v1"], target, concurrency=1, retry_delay=60)
    _start(loop, mirror)
    for _ in range(20):
        assert client.post("/v2/models/m/infer", _body(sample_rows(1))).status == 200
    _until(loop, lambda: tally.dropped.get("canary_error") == 20)
    mirror.stop()
    assert len(attempts) == 3 and tally.rows == 0
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1  # once for the outage, not once per copy


def test_a_canary_that_comes_back_gets_copies_again(
    loop: asyncio.AbstractEventLoop,
    models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="modeldeploy_server.shadow")
    attempts = _count_posts(monkeypatch)
    port = _closed_port()
    client, mirror, tally = _stable(
        loop,
        models["v1"],
        ShadowTarget("127.0.0.1", port),
        concurrency=1,
        retry_delay=1,
        max_retry_delay=1,
    )
    _start(loop, mirror)
    for _ in range(5):
        client.post("/v2/models/m/infer", _body(sample_rows(1)))
    _until(loop, lambda: tally.dropped.get("canary_error") == 5)
    assert len(attempts) < 5
    canary = Canary(loop, models["v1-again"], port=port)  # the canary's pod is back

    deadline = time.monotonic() + 10
    while tally.rows == 0:  # copies keep coming, as a client's requests do
        assert time.monotonic() < deadline, "the mirror never tried the canary again"
        client.post("/v2/models/m/infer", _body(sample_rows(1)))
        loop.run_until_complete(asyncio.sleep(0.02))
    mirror.stop()
    canary.stop()
    assert tally.disagreements == 0
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_a_silent_canary_times_out_and_the_client_never_waits_for_it(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = loop.run_until_complete(asyncio.start_server(never_answer, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    client, mirror, tally = _stable(
        loop, models["v1"], ShadowTarget("127.0.0.1", port), timeout=2.0
    )
    _start(loop, mirror)
    started = time.perf_counter()
    assert client.post("/v2/models/m/infer", _body(sample_rows(2))).status == 200
    # Causal, not a benchmark: had the client waited for the canary, it would have waited
    # out the whole shadow timeout.
    assert time.perf_counter() - started < 1.0
    _until(loop, lambda: tally.dropped.get("timeout") == 1)
    mirror.stop()
    server.close()
    for writer in accepted:
        writer.close()


def test_a_full_queue_drops_the_copy_and_counts_it(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    client, mirror, tally = _stable(
        loop, models["v1"], ShadowTarget("127.0.0.1", 9), queue_size=2
    )  # not started: nothing takes copies off the queue
    for _ in range(5):
        assert client.post("/v2/models/m/infer", _body(sample_rows(1))).status == 200
    assert mirror.queue.qsize() == 2 and tally.dropped == {"queue_full": 3}


def test_a_copy_is_never_mirrored_onward(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    client, mirror, _tally = _stable(loop, models["v1"], ShadowTarget("127.0.0.1", 9))
    headers = {"modeldeploy-shadow": "1"}
    response = client.post("/v2/models/m/infer", _body(sample_rows(1)), headers=headers)
    assert response.status == 200 and mirror.queue.empty()
    metrics = client.app.metrics
    assert metrics.requests == {} and metrics.shadow_requests == {("m", 200): 1}


def test_a_copy_counts_its_predictions_but_not_its_inputs(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    """The canary's prediction counters include the copies (prediction-drift compares them
    during a shadow step); its data-quality counters leave them out (the stable checked them)."""
    profile = parse_profile(build_profile(classifier_training_rows(), models["v1"]))
    client, dataplane, _metrics = make_app(loop, models["v1"], profile=profile)
    monitor = dataplane.slot.monitor
    assert monitor is not None and monitor.inputs is not None
    before = monitor.snapshot()["inputs"]
    rows = np.full((3, 4), 90.0, dtype=np.float32)  # far outside the profile
    copy = client.post("/v2/models/m/infer", _body(rows), headers={"modeldeploy-shadow": "1"})
    assert copy.status == 200
    predicted = lambda: sum(count for _, count in monitor.snapshot()["classes"])  # noqa: E731
    assert predicted() == 3
    assert monitor.snapshot()["inputs"] == before
    assert client.post("/v2/models/m/infer", _body(rows)).status == 200
    assert predicted() == 6
    assert monitor.snapshot()["inputs"] != before


def test_percent_samples_requests(loop: asyncio.AbstractEventLoop, models: dict[str, Path]) -> None:
    client, mirror, _tally = _stable(
        loop, models["v1"], ShadowTarget("127.0.0.1", 9, percent=0.0), queue_size=1000
    )
    for _ in range(20):
        client.post("/v2/models/m/infer", _body(sample_rows(1)))
    assert mirror.queue.empty()
    mirror.set_target(ShadowTarget("127.0.0.1", 9, percent=50.0))
    for _ in range(400):
        client.post("/v2/models/m/infer", _body(sample_rows(1)))
    assert 120 < mirror.queue.qsize() < 280


def test_copies_travel_on_kept_alive_connections(loop: asyncio.AbstractEventLoop) -> None:
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                await reader.readexactly(2)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async def run() -> list[int]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        client = ShadowClient("127.0.0.1", server.sockets[0].getsockname()[1])
        statuses = []
        for _ in range(10):
            response = await client.post("/x", [], b"{}", timeout=2.0)
            statuses.append(response.status)
        client.close()
        server.close()
        return statuses

    assert loop.run_until_complete(run()) == [200] * 10
    assert connections == 1


def test_a_kept_alive_connection_the_canary_closed_is_replaced(
    loop: asyncio.AbstractEventLoop,
) -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # as an idle timeout would, without saying so in the answer

    async def run() -> list[int]:
        server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
        client = ShadowClient("127.0.0.1", server.sockets[0].getsockname()[1])
        statuses = []
        for _ in range(3):
            statuses.append((await client.post("/x", [], b"{}", timeout=2.0)).status)
            await asyncio.sleep(0.05)
        client.close()
        server.close()
        return statuses

    assert loop.run_until_complete(run()) == [200, 200, 200]
