"""Real ``modeldeploy-server`` processes on loopback ports, for any test that talks to one."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

__all__ = ["SERVER", "ServerProcess", "free_port", "server_command", "wait_for"]

SERVER = Path(sys.executable).with_name("modeldeploy-server")


_handed_out: set[int] = set()


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1, never the same one twice a session."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(
    process: subprocess.Popen[bytes],
    url: str,
    status: int,
    timeout: float,
    log: Callable[[], str],
) -> requests.Response:
    """Poll ``url`` until it answers ``status``; fail with the log if ``process`` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log()}")
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == status:
                return response
            last = response.status_code
        except requests.ConnectionError as exc:
            last = exc
        time.sleep(0.05)
    pytest.fail(f"{url} never answered {status} (last: {last}):\n{log()}")


def server_command(
    model: Path | str, name: str, http_port: int, metrics_port: int, *args: str
) -> list[str]:
    """The command line of a server on loopback (one worker unless ``args`` say otherwise)."""
    command = [str(SERVER), "--model-name", name, "--model-uri", str(model),
               "--host", "127.0.0.1", "--http-port", str(http_port),
               "--metrics-port", str(metrics_port), *args]  # fmt: skip
    if "--workers" not in args:
        command += ["--workers", "1"]
    return command


def _limit_open_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class ServerProcess:
    """``modeldeploy-server`` as a child process, stopped by pid (``nofile``: its open-file
    limit, as a container runtime would set it)."""

    def __init__(
        self,
        model: Path | str,
        log_path: Path,
        *args: str,
        name: str = "m",
        env: dict[str, str] | None = None,
        nofile: int | None = None,
    ) -> None:
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.name = name
        self.log_path = log_path
        command = server_command(model, name, self.http_port, self.metrics_port, *args)
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=None if nofile is None else lambda: _limit_open_files(nofile),
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, **{"timeout": 10, **kwargs})

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url + path, **{"timeout": 10, **kwargs})

    def wait_for(self, path: str, status: int, timeout: float = 60.0) -> requests.Response:
        """Poll ``path`` until it answers ``status``; fail with the log if the process exits."""
        return wait_for(self.process, self.url + path, status, timeout, self.log)

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        self.wait_for("/v2/health/ready", 200, timeout)
        return self

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(self.metrics_url, timeout=10).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def warnings(self, limit: str | None = None) -> list[dict[str, Any]]:
        """The warning log entries (of one limit, if given)."""
        return [
            entry
            for entry in self.log_entries()
            if entry.get("level") == "warning" and (limit is None or entry.get("limit") == limit)
        ]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode
