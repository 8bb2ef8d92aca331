"""Dynamic batching: concurrent requests for one model run as one call.

Rules, in order:

- A request that finds the model idle (nothing queued, nothing running) runs at the next
  turn of the event loop: no delay when idle.
- While a batch runs, new requests queue; when it ends, the queue runs as the next batch
  (at most ``max_batch_size`` rows; a single larger request runs alone).
- ``max_delay`` bounds one extra wait: when requests are known to be on their way (their
  bodies are being read or decoded), a batch that is not full waits for them, never
  longer than ``max_delay`` after its oldest request was queued.

Fast models run on the event loop itself (a thread hand-off would cost more than the
model); a batch whose expected time (rows x measured seconds per row) reaches
``inline_threshold`` runs in one dedicated thread, so the loop keeps answering health
checks and reading requests. A model whose run time depends on values rather than rows
should be served with ``--inline-inference-ms 0`` (always the thread).
A batch that fails is retried request by request, so one bad request fails alone; a request
abandoned while queued (its client went away) leaves the queue without running.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .metrics import WorkerMetrics
from .runtime import Model

Outputs = list[np.ndarray]


@dataclass(slots=True)
class _Pending:
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    rows: int
    signature: tuple[object, ...] | None
    future: asyncio.Future[Outputs]
    queued_at: float
    queue_seconds: float = 0.0
    result: Outputs | BaseException | None = field(default=None)


def _signature(inputs: dict[str, np.ndarray]) -> tuple[object, ...]:
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items())


class Batcher:
    """Queues requests for one model and runs them in batches."""

    def __init__(
        self,
        model: Model,
        metrics: WorkerMetrics,
        *,
        max_batch_size: int,
        max_delay: float,
        inline_threshold: float,
        initial_seconds_per_row: float = 0.0,
    ) -> None:
        self.model = model
        self._metrics = metrics
        self._max_rows = max(1, max_batch_size)
        self._max_delay = max(0.0, max_delay)
        self._inline_threshold = inline_threshold
        self._batching = model.batchable and self._max_rows > 1
        self._output_order = {spec.name: i for i, spec in enumerate(model.outputs)}
        self._pending: deque[_Pending] = deque()
        self._pending_rows = 0
        self._arriving = 0
        self._busy = False
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._seconds_per_row = initial_seconds_per_row
        # Started now: starting a thread from the loop later waits for the interpreter lock,
        # which a decode in another thread may hold for a while.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._executor.submit(int).result()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- arrivals: requests whose bodies are still being read or decoded ---------------
    def expect(self) -> None:
        """Note a request on its way to this model (its body is being read)."""
        self._arriving += 1

    def arrived(self) -> None:
        """The noted request was queued or failed before queueing."""
        self._arriving -= 1
        if self._arriving == 0 and self._pending:
            self._schedule()

    # -- queueing ----------------------------------------------------------------------
    def submit(
        self, inputs: dict[str, np.ndarray], outputs: list[str], rows: int
    ) -> asyncio.Future[Outputs]:
        """Queue one request; the future resolves to its outputs in ``outputs`` order."""
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Outputs] = loop.create_future()
        # rows 0: no usable batch dimension; the request runs alone.
        signature = _signature(inputs) if self._batching and rows > 0 else None
        self._pending.append(
            _Pending(inputs, outputs, max(rows, 1), signature, future, time.perf_counter())
        )
        self._pending_rows += max(rows, 1)
        self._schedule()
        return future

    def _schedule(self) -> None:
        if not self._busy and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        self._scheduled = False
        if self._busy or not self._pending:
            return
        self._drop_abandoned()
        if not self._pending:
            return
        if (
            not force
            and self._batching
            and self._arriving > 0
            and self._pending_rows < self._max_rows
            and self._max_delay > 0
        ):
            waited = time.perf_counter() - self._pending[0].queued_at
            if waited < self._max_delay:
                if self._timer is None and self._loop is not None:
                    self._timer = self._loop.call_later(self._max_delay - waited, self._on_timer)
                return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take()
        rows = sum(item.rows for item in batch)
        self._busy = True
        if self._seconds_per_row * rows < self._inline_threshold:
            try:
                elapsed = self._compute(batch)
            finally:
                self._busy = False
            self._deliver(batch, elapsed)
        else:
            job = self._executor.submit(self._compute, batch, False)
            loop = self._loop
            assert loop is not None
            job.add_done_callback(
                lambda done: loop.call_soon_threadsafe(self._finished, batch, done)
            )

    def _finished(self, batch: list[_Pending], job: Future[float]) -> None:
        self._busy = False
        try:
            elapsed = job.result()
        except BaseException as exc:  # _compute catches per item; this is a safety net
            for item in batch:
                item.result = exc
            elapsed = 0.0
        self._deliver(batch, elapsed)

    def _drop_abandoned(self) -> None:
        """Requests whose future is already done (their client went away, the request's
        task was cancelled) leave the queue instead of running for nobody."""
        if any(item.future.done() for item in self._pending):
            self._pending = deque(item for item in self._pending if not item.future.done())
            self._pending_rows = sum(item.rows for item in self._pending)

    def _take(self) -> list[_Pending]:
        first = self._pending.popleft()
        batch = [first]
        rows = first.rows
        if first.signature is not None:
            skipped: list[_Pending] = []
            while self._pending and rows < self._max_rows:
                item = self._pending[0]
                if rows + item.rows > self._max_rows:
                    break
                self._pending.popleft()
                if item.signature == first.signature:  # same dtypes and trailing dims
                    batch.append(item)
                    rows += item.rows
                else:
                    skipped.append(item)
            self._pending.extendleft(reversed(skipped))
        self._pending_rows -= rows
        return batch

    # -- execution (may run in the inference thread: touches only the batch) ----------
    def _compute(self, batch: list[_Pending], inline: bool = True) -> float:
        started = time.perf_counter()
        cpu_started = time.thread_time()
        for item in batch:
            item.queue_seconds = started - item.queued_at
        if len(batch) > 1:
            try:
                self._run_together(batch)
            except Exception:
                for item in batch:
                    item.result = None
        for item in batch:
            if item.result is None:
                try:
                    item.result = self.model.predict(item.inputs, item.outputs)
                except Exception as exc:
                    item.result = exc
        elapsed = time.perf_counter() - started
        # What the batch would cost the loop: wall time when run there; in the thread, its
        # CPU time (wall time there includes waiting for the GIL, which would keep a fast
        # model out of the loop for good under load).
        cost = elapsed if inline else time.thread_time() - cpu_started
        rows = sum(item.rows for item in batch)
        per_row = cost / max(rows, 1)
        # Up at once (a batch that blocked the loop must not be repeated), down slowly (an
        # exponentially weighted mean forgets one slow batch: a GC pause, a cold cache).
        if per_row > self._seconds_per_row:
            self._seconds_per_row = per_row
        else:
            self._seconds_per_row += 0.1 * (per_row - self._seconds_per_row)
        return elapsed

    def _run_together(self, batch: list[_Pending]) -> None:
        names = list(batch[0].inputs)
        feed = {name: np.concatenate([item.inputs[name] for item in batch]) for name in names}
        wanted = sorted(
            {name for item in batch for name in item.outputs}, key=self._output_order.__getitem__
        )
        results = dict(zip(wanted, self.model.predict(feed, wanted), strict=True))
        total = sum(item.rows for item in batch)
        if any(a.ndim == 0 or a.shape[0] != total for a in results.values()):
            raise ValueError("outputs do not follow the batch dimension")
        offset = 0
        for item in batch:
            end = offset + item.rows
            item.result = [results[name][offset:end] for name in item.outputs]
            offset = end

    def _deliver(self, batch: list[_Pending], elapsed: float) -> None:
        name = self.model.name
        rows = sum(item.rows for item in batch)
        self._metrics.inference_done(name, elapsed, rows)
        for item in batch:
            self._metrics.queue_done(name, item.queue_seconds)
            if item.future.done():  # the client went away or shutdown cancelled it
                continue
            result = item.result
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            elif result is not None:
                item.future.set_result(result)
        if self._pending:
            self._schedule()

    def close(self) -> None:
        """Stop taking work; a batch still running past the grace period is abandoned."""
        self._executor.shutdown(wait=False, cancel_futures=True)
