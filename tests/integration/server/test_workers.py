"""A worker that dies or hangs, in a real server process under load: the supervisor replaces
it while the other worker keeps serving, and gives up only after too many restarts."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import ServerProcess

pytestmark = pytest.mark.integration

BODY = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def worker_pids(server: ServerProcess) -> list[int]:
    """The server's worker processes, from /proc: the children multiprocessing spawned."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == server.process.pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return sorted(pids)


def wait_for_replacement(server: ServerProcess, old_pid: int, timeout: float) -> int:
    """The pid of the worker started in place of ``old_pid``, once it has loaded the model."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.process.poll() is None, server.log()
        entries = server.log_entries()
        started = [i for i, e in enumerate(entries) if e.get("message") == "worker started"]
        while started and entries[started[0]]["pid"] != old_pid:
            started.pop(0)  # those before the one being replaced
        index = entries[started[0]]["worker"] if started else None
        later = [i for i in started[1:] if entries[i]["worker"] == index]
        if later and any(
            e.get("message") == "model ready" and e.get("worker") == index
            for e in entries[later[0] :]
        ):
            return int(entries[later[0]]["pid"])
        assert time.monotonic() < deadline, f"{old_pid} was not replaced:\n{server.log()}"
        time.sleep(0.1)


class Load:
    """Bounded background traffic on new connections (spread over workers by the kernel),
    and a readiness probe as the kubelet would send it."""

    def __init__(self, server: ServerProcess, clients: int = 3) -> None:
        self.url = server.url
        self.stop = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.ready: list[int | str] = []
        self.threads = [threading.Thread(target=self._send) for _ in range(clients)]
        self.threads.append(threading.Thread(target=self._probe))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _send(self) -> None:
        deadline = time.monotonic() + 120
        for _ in range(5000):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                response = requests.post(self.url + "/v2/models/clf/infer", json=BODY, timeout=10)
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(str(response.status_code))
            except requests.RequestException as exc:
                self.failed.append(type(exc).__name__)

    def _probe(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self.ready.append(
                    requests.get(self.url + "/v2/health/ready", timeout=1).status_code
                )
            except requests.RequestException as exc:
                self.ready.append(type(exc).__name__)
            time.sleep(0.1)


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids a test stops with SIGSTOP: killed afterwards if they are still there."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_worker_is_replaced_while_the_pod_keeps_serving(
    models: dict[str, Path], new_server: Any
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--workers", "2", name="clf")
    server.wait_ready()
    victim = worker_pids(server)[0]
    with Load(server) as load:
        while load.ok < 50:
            time.sleep(0.05)
        served_before = server.metric("modeldeploy_requests_total", code="200")
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        replacement = wait_for_replacement(server, victim, timeout=30)
        back_after = time.monotonic() - killed_at
        ok_at_replacement = load.ok
        time.sleep(1.0)
        assert load.ok > ok_at_replacement  # still serving with the replacement in
    assert server.process.poll() is None
    assert back_after < 15, f"the replacement took {back_after:.1f} s"
    # Only what was in flight on the killed worker (or queued for it) failed.
    assert len(load.failed) <= 10, load.failed
    # Readiness never said no: one worker could always serve.
    assert [r for r in load.ready if r != 200 and not isinstance(r, str)] == []
    assert sum(isinstance(r, str) for r in load.ready) <= 2, load.ready
    for _ in range(40):  # new connections land on both workers, the replacement too
        assert requests.post(server.url + "/v2/models/clf/infer", json=BODY, timeout=10).ok
    # The killed worker's counts stay in the sums: counters never go down.
    assert server.metric("modeldeploy_requests_total", code="200") >= served_before
    assert server.metric("modeldeploy_worker_restarts_total") == 1
    assert replacement != victim
    assert server.stop() == 0


def test_a_stopped_worker_is_detected_by_its_heartbeat_and_replaced(
    models: dict[str, Path], new_server: Any, stopped: list[int]
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--workers", "2",
                                       "--worker-heartbeat-timeout", "2", name="clf")  # fmt: skip
    server.wait_ready()
    victim = worker_pids(server)[1]
    stopped.append(victim)
    os.kill(victim, signal.SIGSTOP)
    wait_for_replacement(server, victim, timeout=60)
    assert not Path(f"/proc/{victim}").exists() or "Z" in Path(f"/proc/{victim}/stat").read_text()
    unresponsive = [
        e for e in server.log_entries() if e.get("message") == "worker unresponsive; killing it"
    ]
    assert [e["pid"] for e in unresponsive] == [victim]
    for _ in range(40):  # none of them lands on a stopped worker any more
        assert requests.post(server.url + "/v2/models/clf/infer", json=BODY, timeout=5).ok
    assert server.stop() == 0


def test_the_server_gives_up_after_too_many_restarts(
    models: dict[str, Path], new_server: Any
) -> None:
    server: ServerProcess = new_server(models["classifier"], "--max-worker-restarts", "2",
                                       name="clf")  # fmt: skip
    server.wait_ready()
    victim = worker_pids(server)[0]
    for _ in range(2):
        os.kill(victim, signal.SIGKILL)
        victim = wait_for_replacement(server, victim, timeout=30)
    os.kill(victim, signal.SIGKILL)
    assert server.process.wait(60) == 1
    assert "worker restart limit reached; stopping the server" in server.log()
