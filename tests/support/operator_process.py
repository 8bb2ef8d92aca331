"""``modeldeploy operator`` as a real local process, for the operator and chart tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy_dev.cluster import free_port


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except subprocess.CalledProcessError as error:
            last = error.stderr
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass
class OperatorProcess:
    """The operator with ``args``, its health and metrics on free loopback ports, JSON logs."""

    kubeconfig: Path
    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)

    def start(self) -> None:
        command = [
            sys.executable, "-m", "modeldeploy.cli", "operator", *self.args,
            "--liveness", f"http://127.0.0.1:{self.port}/healthz",
            "--metrics-address", f"127.0.0.1:{self.metrics_port}",
            "--log-format", "json", "--verbose", "--kubeconfig", str(self.kubeconfig),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for(self._live, 60, f"the operator's liveness endpoint (log: {self.log})")

    def _live(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited: {self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def refusals(self) -> list[str]:
        """Log lines about requests the API server refused (403) or permissions kopf lacks."""
        return [
            str(line.get("message"))
            for line in self.lines()
            if "forbidden" in str(line).lower() or "not enough permissions" in str(line).lower()
        ]
