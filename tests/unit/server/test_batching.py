"""Dynamic batching: no delay when idle, batches under concurrency, failures isolated."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from modeldeploy_server.batching import Batcher
from modeldeploy_server.errors import InferenceFailed
from modeldeploy_server.metrics import WorkerMetrics
from modeldeploy_server.tensors import TensorSpec


class DoublingModel:
    """y = 2x per row; records every call's row count and thread."""

    name = "double"
    version = None
    platform = "test"

    def __init__(self, batchable: bool = True, seconds: float = 0.0) -> None:
        self.inputs = [TensorSpec("x", "FP32", (-1, 2))]
        self.outputs = [TensorSpec("y", "FP32", (-1, 2)), TensorSpec("s", "FP32", (-1,))]
        self.batchable = batchable
        self.seconds = seconds
        self.calls: list[int] = []
        self.threads: list[str] = []

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        x = inputs["x"]
        self.calls.append(x.shape[0])
        self.threads.append(threading.current_thread().name)
        if self.seconds:
            time.sleep(self.seconds)
        if np.isnan(x).any():
            raise InferenceFailed("nan in input")
        values = {"y": x * 2, "s": x.sum(axis=1)}
        return [values[name] for name in outputs]


def _batcher(model: DoublingModel, metrics: WorkerMetrics | None = None, **kwargs: Any) -> Batcher:
    options: dict[str, Any] = {"max_batch_size": 8, "max_delay": 0.002, "inline_threshold": 1.0}
    options.update(kwargs)
    return Batcher(model, metrics or WorkerMetrics(), **options)


def _rows(n: int, start: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + 2 * n, dtype=np.float32).reshape(n, 2)}


def test_a_request_to_an_idle_batcher_runs_alone_and_at_once() -> None:
    model = DoublingModel()
    batcher = _batcher(model, max_delay=10.0)  # a long delay must not apply when idle

    async def one() -> list[np.ndarray]:
        started = time.perf_counter()
        result = await batcher.submit(_rows(1), ["y"], 1)
        assert time.perf_counter() - started < 1.0
        return result

    (y,) = asyncio.run(one())
    np.testing.assert_array_equal(y, [[0, 2]])
    assert model.calls == [1]


def test_concurrent_requests_run_as_one_batch_and_get_their_own_rows() -> None:
    model = DoublingModel()
    metrics = WorkerMetrics()
    batcher = _batcher(model, metrics)

    async def many() -> list[list[np.ndarray]]:
        futures = [batcher.submit(_rows(2, 10 * i), ["s", "y"], 2) for i in range(3)]
        return list(await asyncio.gather(*futures))

    results = asyncio.run(many())
    assert model.calls == [6]
    for i, (s, y) in enumerate(results):
        x = _rows(2, 10 * i)["x"]
        np.testing.assert_array_equal(y, x * 2)
        np.testing.assert_array_equal(s, x.sum(axis=1))
    assert metrics.batch_size["double"].counts[metrics.batch_size["double"].bounds.index(8)] == 1
    assert sum(metrics.queue_duration["double"].counts) == 3


def test_batches_stop_at_max_batch_size_and_big_requests_run_alone() -> None:
    model = DoublingModel()
    batcher = _batcher(model, max_batch_size=4)

    async def many() -> None:
        sizes = [1, 2, 1, 3, 9, 1]
        await asyncio.gather(*(batcher.submit(_rows(n), ["y"], n) for n in sizes))

    asyncio.run(many())
    assert model.calls == [4, 3, 9, 1]


def test_requests_with_different_trailing_shapes_are_not_mixed() -> None:
    model = DoublingModel()
    batcher = _batcher(model)

    async def mixed() -> list[Any]:
        narrow = {"x": np.ones((1, 2), np.float32)}
        wide = {"x": np.ones((1, 3), np.float32)}
        futures = [batcher.submit(narrow, ["y"], 1), batcher.submit(wide, ["y"], 1),
                   batcher.submit(narrow, ["y"], 1)]  # fmt: skip
        return list(await asyncio.gather(*futures))

    results = asyncio.run(mixed())
    assert sorted(model.calls) == [1, 2]
    assert [r[0].shape for r in results] == [(1, 2), (1, 3), (1, 2)]


def test_one_bad_request_fails_alone() -> None:
    model = DoublingModel()
    batcher = _batcher(model)

    async def with_a_bad_one() -> list[Any]:
        bad = {"x": np.array([[np.nan, 1]], np.float32)}
        futures = [batcher.submit(_rows(1), ["y"], 1), batcher.submit(bad, ["y"], 1),
                   batcher.submit(_rows(1, 4), ["y"], 1)]  # fmt: skip
        return list(await asyncio.gather(*futures, return_exceptions=True))

    good, bad, other = asyncio.run(with_a_bad_one())
    assert isinstance(bad, InferenceFailed)
    np.testing.assert_array_equal(good[0], [[0, 2]])
    np.testing.assert_array_equal(other[0], [[8, 10]])
    assert model.calls == [3, 1, 1, 1]  # the batch, then each request alone


def test_unbatchable_models_run_each_request_alone() -> None:
    model = DoublingModel(batchable=False)
    batcher = _batcher(model)

    async def many() -> None:
        await asyncio.gather(*(batcher.submit(_rows(1), ["y"], 1) for _ in range(3)))

    asyncio.run(many())
    assert model.calls == [1, 1, 1]


def test_slow_models_run_in_the_inference_thread_and_the_loop_stays_free() -> None:
    model = DoublingModel(seconds=0.05)
    batcher = _batcher(model, inline_threshold=0.0)

    async def run() -> int:
        ticks = 0
        future = batcher.submit(_rows(1), ["y"], 1)
        while not future.done():  # the loop keeps turning while the model runs
            ticks += 1
            await asyncio.sleep(0.005)
        await future
        return ticks

    assert asyncio.run(run()) >= 3
    assert model.threads and all(name.startswith("inference") for name in model.threads)
    batcher.close()


def test_queue_forms_while_a_slow_batch_runs() -> None:
    model = DoublingModel(seconds=0.05)
    batcher = _batcher(model, inline_threshold=0.0)

    async def run() -> None:
        first = batcher.submit(_rows(1), ["y"], 1)
        await asyncio.sleep(0)  # the first batch starts
        rest = [batcher.submit(_rows(1), ["y"], 1) for _ in range(5)]
        await asyncio.gather(first, *rest)

    asyncio.run(run())
    assert model.calls == [1, 5]
    batcher.close()


@pytest.mark.parametrize("arrives", [True, False])
def test_a_batch_waits_for_requests_on_their_way_at_most_max_delay(arrives: bool) -> None:
    model = DoublingModel()
    batcher = _batcher(model, max_delay=0.2)

    async def run() -> float:
        started = time.perf_counter()
        batcher.expect()  # a second request's body is being read
        first = batcher.submit(_rows(1), ["y"], 1)
        await asyncio.sleep(0.01)
        assert not first.done()  # held back for the request on its way
        if arrives:
            second = batcher.submit(_rows(1), ["y"], 1)
            batcher.arrived()
            await asyncio.gather(first, second)
        else:
            await first  # the arrival never comes: the delay bounds the wait
            batcher.arrived()
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    if arrives:
        assert model.calls == [2]
        assert elapsed < 0.15
    else:
        assert model.calls == [1]
        assert elapsed >= 0.19


def test_requests_cancelled_while_queued_never_run() -> None:
    model = DoublingModel(seconds=0.2)
    batcher = _batcher(model, inline_threshold=0.0)  # in the thread: the loop stays free

    async def scenario() -> list[np.ndarray]:
        first = batcher.submit(_rows(1), ["y"], 1)
        await asyncio.sleep(0.05)  # running now; the next ones queue behind it
        queued = [batcher.submit(_rows(1, 10.0 * i), ["y"], 1) for i in range(1, 4)]
        queued[0].cancel()  # their clients went away
        queued[2].cancel()
        return [*(await first), *(await queued[1])]

    y0, y2 = asyncio.run(scenario())
    np.testing.assert_array_equal(y0, [[0, 2]])
    np.testing.assert_array_equal(y2, [[40, 42]])
    assert model.calls == [1, 1]  # the first, then only the one still wanted
