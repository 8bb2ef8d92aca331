"""The demo's own processes (operator, servers, Prometheus): started with a log file each,
in their own process group, and stopped by their id whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy.demo import DemoError
from modeldeploy.devcluster.processes import free_port, tail, terminate


def tool_argv(script: str, module: str) -> list[str]:
    """The console script installed beside this Python, else ``python -m module``."""
    installed = Path(sys.executable).with_name(script)
    return [str(installed)] if installed.exists() else [sys.executable, "-m", module]


@dataclass
class Child:
    """One started process and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def check(self) -> None:
        """Fail, with the log's tail, if the process has exited."""
        if not self.running():
            raise DemoError(
                f"{self.name} exited with code {self.process.returncode}; last lines of "
                f"{self.log}:\n{tail(self.log, 30)}"
            )


@dataclass
class Children:
    """Every process the demo started, stopped in reverse order by ``stop_all``."""

    logs: Path
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            # Its own session: Ctrl-C reaches only the demo, which stops it in order; and
            # terminate() can end its whole group by the id we hold.
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.started.append(child)
        return child

    def stop(self, child: Child, grace: float = 10) -> None:
        if child.running():
            terminate(child.process.pid, grace)
        child.process.poll()

    def stop_all(self) -> None:
        for child in reversed(self.started):
            self.stop(child)

    def tails(self, lines: int = 15) -> list[tuple[str, str]]:
        """(name, last lines of its log) of every started process."""
        return [(c.name, tail(c.log, lines)) for c in self.started]


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    watch: Iterable[Child] = (),
    last: Callable[[], str] | None = None,
    interval: float = 0.25,
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after
    ``timeout``, or at once when one of ``watch`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for child in watch:
            child.check()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"; last: {last()}" if last else ""
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def http_status(url: str, timeout: float = 2) -> int | None:
    """The status code ``url`` answers a GET with; None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


class Prometheus:
    """The real ``prometheus`` binary (Debian package) scraping the demo's servers every
    second. Targets are static; ``set_targets`` rewrites the configuration and reloads it."""

    def __init__(self, workdir: Path, children: Children) -> None:
        self.workdir = workdir
        self.children = children
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.targets: list[tuple[str, dict[str, str]]] = []
        self.child: Child | None = None

    def start(self) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise DemoError(
                "prometheus not found: install the Debian package prometheus (`make setup` "
                "does, when run as root: apt-get install prometheus)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self.child = self.children.start(
            "prometheus",
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
        )
        wait_until(
            lambda: http_status(f"{self.url}/-/ready") == 200,
            30,
            f"Prometheus to answer on {self.url}",
            watch=[self.child],
        )

    def set_targets(self, targets: list[tuple[str, dict[str, str]]], timeout: float = 30) -> None:
        """Scrape exactly ``targets`` ("host:port", extra labels); wait until each is up."""
        assert self.child is not None
        self.targets = targets
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass
        wanted = {address for address, _ in targets}
        wait_until(
            lambda: self._up() == wanted,
            timeout,
            f"Prometheus to scrape {', '.join(sorted(wanted))}",
            watch=[self.child],
        )

    def _up(self) -> set[str]:
        url = f"{self.url}/api/v1/targets?state=active"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                active = json.load(response)["data"]["activeTargets"]
        except (OSError, ValueError, KeyError):
            return set()
        return {t["labels"]["instance"] for t in active if t.get("health") == "up"}

    def _write_config(self) -> None:
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": "modeldeploy",
                    "static_configs": [
                        {"targets": [address], "labels": labels} for address, labels in self.targets
                    ],
                }
            ],
        }
        temporary = self.config.with_suffix(".tmp")
        temporary.write_text(json.dumps(config, indent=2))  # JSON is YAML
        os.replace(temporary, self.config)
