"""The supervisor: starts the workers, serves the metrics port, forwards signals.

It stays light (no numpy, no onnxruntime): it reserves the HTTP port, spawns ``N`` worker
processes that bind the same port with SO_REUSEPORT, resolves the model file (a remote
URI is downloaded once, here) and tells the workers to load it; once every worker has
loaded it, it tells them so, and only then do they report ready. On a scrape it asks each
worker for a snapshot over its pipe and serves the aggregate. SIGTERM is forwarded; the
supervisor exits 0 when every worker drained and exited 0. A worker that dies on its own
takes the pod down (exit 1) so that Kubernetes restarts it whole.
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
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from .metrics import aggregate, render
from .metrics_endpoint import MetricsEndpoint, bind_metrics_socket
from .worker import listen_socket

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT = 2.0


class _Channel:
    """The supervisor's end of one worker's pipe: serialized, with matched replies."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.sequence = 0
        self.last_snapshot: dict[str, Any] | None = None

    def send(self, message: Any) -> None:
        # A gone worker is the wait loop's business, not the sender's.
        with self.lock, contextlib.suppress(OSError, EOFError):
            self.conn.send(message)

    def ask(self, kind: str, timeout: float) -> tuple[bool, Any]:
        """Send a question, wait for its answer: (answered, payload)."""
        with self.lock:
            self.sequence += 1
            deadline = time.monotonic() + timeout
            try:
                self.conn.send((kind, self.sequence))
                while (remaining := deadline - time.monotonic()) > 0:
                    if not self.conn.poll(remaining):
                        break
                    sequence, payload = self.conn.recv()
                    if sequence == self.sequence:  # skip late answers to earlier questions
                        return True, payload
            except (OSError, EOFError):
                pass
            return False, None

    def snapshot(self, timeout: float) -> dict[str, Any] | None:
        """A fresh snapshot, or the last one when the worker does not answer in time."""
        answered, snapshot = self.ask("snapshot", timeout)
        if answered:
            self.last_snapshot = snapshot
        return self.last_snapshot


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
        self.processes: list[BaseProcess] = []
        self.channels: list[_Channel] = []
        self.stopping = threading.Event()
        self.metrics_warnings: dict[str, int] = {}
        self.stop_deadline: float | None = None

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
        context = multiprocessing.get_context("spawn")
        for index in range(opts.workers):
            parent, child = context.Pipe()
            process = context.Process(
                target=self.worker_target,
                args=(*self.worker_args(index, reserved.getsockname()[1]), child),
                name=f"modeldeploy-worker-{index}",
            )
            process.start()
            child.close()
            self.processes.append(process)
            self.channels.append(_Channel(parent))
        log.info(
            "server started",
            extra={
                "fields": {
                    "http": f"{opts.host}:{reserved.getsockname()[1]}",
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

    def _on_signal(self, signum: int, frame: object) -> None:
        if not self.stopping.is_set():
            log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
            self.stopping.set()
            self.stop_deadline = time.monotonic() + self.options.shutdown_budget
        for process in self.processes:
            if process.exitcode is None and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def _resolve(self) -> None:
        kind, value = self.resolve_model()
        for channel in self.channels:
            channel.send((kind, value))
        if kind != "load":
            return
        # Readiness is the pod's: report ready only once every worker has its model, so
        # that no connection lands on a worker still loading (MLServer #1134).
        waiting = set(range(len(self.channels)))
        while waiting and not self.stopping.is_set():
            for index in sorted(waiting):
                answered, state = self.channels[index].ask("state", SCRAPE_TIMEOUT)
                if answered and state in ("READY", "FAILED"):
                    waiting.discard(index)
                    if state == "FAILED":
                        return  # that worker says why; the pod stays not ready
            if waiting:
                self.stopping.wait(0.05)
        if not waiting:
            for channel in self.channels:
                channel.send(("peers-ready", None))

    def _wait(self) -> int:
        exit_code = 0
        reported: set[int] = set()
        while True:
            alive = [p for p in self.processes if p.exitcode is None]
            if not alive:
                break
            multiprocessing.connection.wait([p.sentinel for p in alive], timeout=0.5)
            for index, process in enumerate(self.processes):
                code = process.exitcode
                if code is None or index in reported:
                    continue
                reported.add(index)
                if code != 0:
                    exit_code = 1
                if not self.stopping.is_set():
                    log.error(
                        "worker exited unexpectedly; stopping the server",
                        extra={"fields": {"worker": process.name, "exit_code": code}},
                    )
                    exit_code = 1
                    self._on_signal(signal.SIGTERM, None)
            if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
                for process in self.processes:
                    if process.exitcode is None:
                        log.error("worker did not stop in time; killing it",
                                  extra={"fields": {"worker": process.name}})  # fmt: skip
                        process.kill()
                exit_code = 1
                self.stop_deadline = None
        log.info("server stopped", extra={"fields": {"exit_code": exit_code}})
        return exit_code

    # -- metrics -------------------------------------------------------------------
    def scrape(self, accept: str | None) -> tuple[bytes, str]:
        """Aggregate every worker's snapshot into one exposition."""
        snapshots = [
            snap
            for channel, process in zip(self.channels, self.processes, strict=True)
            if process.exitcode is None and (snap := channel.snapshot(SCRAPE_TIMEOUT)) is not None
        ]
        data = aggregate(snapshots)
        for limit, hits in list(self.metrics_warnings.items()):
            data.limit_hits[("metrics", limit)] = hits
        return render(data, self.options.deployment, self.options.track, accept)
