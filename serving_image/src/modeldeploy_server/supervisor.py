"""The supervisor: starts the workers, keeps them alive, serves the metrics port, forwards
signals.

It stays light (no numpy, no onnxruntime): it reserves the HTTP port, spawns ``N`` worker
processes that bind the same port with SO_REUSEPORT, resolves the model file (a remote
URI is downloaded once, here) and tells the workers to load it; once every worker has
loaded it, it tells them so, and only then do they report ready. On a scrape it asks each
worker for a snapshot over its pipe and serves the aggregate. SIGTERM is forwarded; the
supervisor exits 0 when every worker drained and exited 0.

A worker that dies on its own is started again (at once the first time, then with a
doubling delay up to ``MAX_RESTART_DELAY``), and one whose event loop stops beating
(``heartbeat_timeout``: stopped, deadlocked, stuck in a C call) is killed and started
again. A replacement binds the port only once it has loaded the model, so the workers
still running keep serving and answering ready meanwhile: the pod reports not ready only
when no worker can serve. Past ``max_restarts`` restarts within ``RESTART_WINDOW`` the
supervisor gives up and exits 1, and Kubernetes restarts the container.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import RawValue
from typing import Any

from .metrics import Aggregate, aggregate, render, retired
from .metrics_endpoint import MetricsEndpoint, bind_metrics_socket
from .worker import listen_socket
from .worker_channel import WorkerChannel

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 2.0
RESTART_WINDOW = 600.0
"""Seconds over which restarts are counted against ``max_restarts``."""
MAX_RESTART_DELAY = 10.0
STARTUP_GRACE = 60.0
"""A new worker may take this long (imports, spawning) before its first heartbeat."""


@dataclass(frozen=True)
class SupervisorOptions:
    """What the supervisor needs to know."""

    workers: int
    host: str
    http_port: int
    metrics_port: int
    deployment: str
    track: str
    shutdown_budget: float
    """Seconds a worker may take to drain before it is killed."""
    header_timeout: float = 10.0
    keep_alive_timeout: float = 75.0
    heartbeat_timeout: float = 10.0
    """A worker whose event loop has not beaten for this long is replaced."""
    max_restarts: int = 5
    """Restarts within ``RESTART_WINDOW`` before the supervisor gives up."""


@dataclass
class _Worker:
    """One running worker process and what the supervisor holds of it."""

    index: int
    process: BaseProcess
    channel: WorkerChannel
    heartbeat: Any  # a shared double: the worker's time.monotonic() at its last beat
    started: float
    unresponsive: bool = False
    retired: bool = False


class Supervisor:
    """Runs the worker processes of one server."""

    def __init__(
        self,
        options: SupervisorOptions,
        worker_target: Callable[..., Any],
        worker_args: Callable[[int, int], tuple[Any, ...]],
        resolve_model: Callable[[], tuple[str, Any]],
    ) -> None:
        self.options = options
        self.worker_target = worker_target
        self.worker_args = worker_args
        self.resolve_model = resolve_model
        self.workers: list[_Worker] = []
        self.stopping = threading.Event()
        self.metrics_warnings: dict[str, int] = {}
        self.stop_deadline: float | None = None
        self.restarts: deque[float] = deque()
        self.restart_count = 0
        self.retired = Aggregate.empty()
        """Counters of workers that died, so that the sums never go down."""
        self._context = multiprocessing.get_context("spawn")
        self._port = 0
        self._plan_lock = threading.Lock()
        self._metrics_lock = threading.Lock()
        self._plan: tuple[str, Any] | None = None  # ("load", files) or ("fail", reason)
        self._pod_ready = False  # every first worker has loaded the model

    def run(self) -> int:
        """Start everything and wait; returns the process exit code."""
        opts = self.options
        try:
            # Fail fast if the port is taken; keep it reserved for the workers.
            reserved = listen_socket(opts.host, opts.http_port, exclusive_check=True)
        except OSError as exc:
            log.error("cannot bind the HTTP port %s:%s: %s", opts.host, opts.http_port, exc)
            return 1
        try:
            metrics_socket = bind_metrics_socket(opts.host, opts.metrics_port)
        except OSError as exc:
            log.error("cannot bind the metrics port %s:%s: %s", opts.host, opts.metrics_port, exc)
            reserved.close()
            return 1
        metrics = MetricsEndpoint(
            metrics_socket,
            self.scrape,
            header_timeout=opts.header_timeout,
            keep_alive_timeout=opts.keep_alive_timeout,
        )
        self.metrics_warnings = metrics.warnings.counts
        metrics.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._port = reserved.getsockname()[1]
        for index in range(opts.workers):
            self.workers.append(self._spawn(index, replacement=False))
        log.info(
            "server started",
            extra={
                "fields": {
                    "http": f"{opts.host}:{self._port}",
                    "metrics": f"{opts.host}:{metrics.port}",
                    "workers": opts.workers,
                }
            },
        )
        threading.Thread(target=self._resolve, name="model-resolver", daemon=True).start()
        try:
            return self._wait()
        finally:
            metrics.stop()
            reserved.close()

    def _spawn(self, index: int, *, replacement: bool) -> _Worker:
        """Start worker ``index``; a replacement listens only once its model is loaded."""
        parent, child = self._context.Pipe()
        heartbeat = RawValue("d", 0.0)
        process = self._context.Process(
            target=self.worker_target,
            args=(*self.worker_args(index, self._port), child, heartbeat, replacement),
            name=f"modeldeploy-worker-{index}",
        )
        process.start()
        child.close()
        worker = _Worker(index, process, WorkerChannel(parent), heartbeat, time.monotonic())
        log.info(
            "worker started",
            extra={"fields": {"worker": index, "pid": process.pid, "replacement": replacement}},
        )
        return worker

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self.stopping.is_set():
            log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
            self.stopping.set()
            self.stop_deadline = time.monotonic() + self.options.shutdown_budget
        for worker in list(self.workers):
            process = worker.process
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def _resolve(self) -> None:
        plan = self.resolve_model()
        with self._plan_lock:
            self._plan = plan
            channels = [worker.channel for worker in self.workers]
        for channel in channels:
            channel.send(plan)
        if plan[0] != "load":
            return
        # Readiness is the pod's: report ready only once every worker has its model, so
        # that no connection lands on a worker still loading (MLServer #1134).
        waiting = set(range(len(self.workers)))
        while waiting and not self.stopping.is_set():
            for index in sorted(waiting):
                answered, state = self.workers[index].channel.ask("state", SCRAPE_TIMEOUT)
                if answered and state in ("READY", "FAILED"):
                    waiting.discard(index)
                    if state == "FAILED":
                        return  # that worker says why; the pod stays not ready
            if waiting:
                self.stopping.wait(0.05)
        if not waiting:
            with self._plan_lock:
                self._pod_ready = True
                channels = [worker.channel for worker in self.workers]
            for channel in channels:
                channel.send(("peers-ready", None))

    def _replace(self, index: int) -> None:
        """Start worker ``index`` again and give it what the others were given."""
        with self._plan_lock:
            worker = self._spawn(index, replacement=True)
            self.workers[index] = worker
            if self._plan is not None:
                worker.channel.send(self._plan)
            if self._pod_ready:
                worker.channel.send(("peers-ready", None))

    def _wait(self) -> int:
        exit_code = 0
        reported: set[int | None] = set()  # pids whose exit was handled
        due: dict[int, float] = {}  # worker index -> when to start it again
        while True:
            alive = [w for w in self.workers if w.process.exitcode is None]
            if self.stopping.is_set() and not alive:
                break
            now = time.monotonic()
            wait = min([0.5, *(max(0.0, at - now) for at in due.values())])
            multiprocessing.connection.wait([w.process.sentinel for w in alive], timeout=wait)
            for worker in list(self.workers):
                process = worker.process
                code = process.exitcode
                if code is None or process.pid in reported:
                    continue
                reported.add(process.pid)
                self._retire(worker)
                if self.stopping.is_set():
                    if code != 0:
                        exit_code = 1
                    continue
                delay = self._restart_delay(worker)
                if delay is None:
                    exit_code = 1
                    self._on_signal(signal.SIGTERM, None)
                else:
                    due[worker.index] = time.monotonic() + delay
            if not self.stopping.is_set():
                self._check_heartbeats()
                for index, at in list(due.items()):
                    if time.monotonic() >= at:
                        del due[index]
                        self._replace(index)
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                for worker in self.workers:
                    if worker.process.exitcode is None:
                        log.error("worker did not stop in time; killing it",
                                  extra={"fields": {"worker": worker.index}})  # fmt: skip
                        worker.process.kill()
                exit_code = 1
                self.stop_deadline = None
        log.info("server stopped", extra={"fields": {"exit_code": exit_code}})
        return exit_code

    def _restart_delay(self, worker: _Worker) -> float | None:
        """Seconds before ``worker`` starts again, or None once the restart limit is hit."""
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        fields = {
            "worker": worker.index,
            "pid": worker.process.pid,
            "exit_code": worker.process.exitcode,
            "restarts_in_window": len(self.restarts),
        }
        if len(self.restarts) >= self.options.max_restarts:
            log.error(
                "worker restart limit reached; stopping the server",
                extra={"fields": {**fields, "max_restarts": self.options.max_restarts,
                                  "window_seconds": RESTART_WINDOW}},
            )  # fmt: skip
            return None
        delay = 0.0 if not self.restarts else min(MAX_RESTART_DELAY, 0.5 * 2 ** len(self.restarts))
        self.restarts.append(now)
        self.restart_count += 1
        reason = "was unresponsive" if worker.unresponsive else "exited unexpectedly"
        log.error(
            f"worker {reason}; starting it again",
            extra={"fields": {**fields, "restart_in_seconds": delay}},
        )
        return delay

    def _check_heartbeats(self) -> None:
        now = time.monotonic()
        limit = self.options.heartbeat_timeout
        for worker in self.workers:
            if worker.process.exitcode is not None or worker.unresponsive:
                continue
            beat = worker.heartbeat.value
            # Before its first beat a worker is still starting: it gets STARTUP_GRACE.
            silent = now - beat if beat else now - worker.started - max(0.0, STARTUP_GRACE - limit)
            if silent > limit:
                worker.unresponsive = True
                log.error(
                    "worker unresponsive; killing it",
                    extra={"fields": {"worker": worker.index, "pid": worker.process.pid,
                                      "seconds_since_heartbeat": round(silent, 1)}},
                )  # fmt: skip
                worker.process.kill()  # SIGKILL: a stopped process cannot handle SIGTERM

    def _retire(self, worker: _Worker) -> None:
        """Keep the counters of a worker that is gone (as of its last snapshot)."""
        with self._metrics_lock:
            worker.retired = True
            snapshot = worker.channel.last_snapshot
            if snapshot is not None:
                self.retired.absorb(aggregate([retired(snapshot)]))
        worker.channel.close()

    # -- metrics -------------------------------------------------------------------
    def scrape(self, accept: str | None) -> tuple[bytes, str]:
        """Aggregate every worker's snapshot into one exposition."""
        taken = [
            (worker, snap)
            for worker in list(self.workers)
            if worker.process.exitcode is None
            and (snap := worker.channel.snapshot(SCRAPE_TIMEOUT)) is not None
        ]
        with self._metrics_lock:
            # A worker retired meanwhile is counted once, among the retired.
            data = aggregate(snap for worker, snap in taken if not worker.retired)
            data.absorb(self.retired)
        for limit, hits in list(self.metrics_warnings.items()):
            data.limit_hits[("metrics", limit)] = hits
        data.worker_restarts = self.restart_count
        return render(data, self.options.deployment, self.options.track, accept)
