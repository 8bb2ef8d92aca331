"""The demo's own processes (operator, servers, Prometheus): started with a log file each,
in their own process group, and stopped by their id whatever happens."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy_dev.cluster.monitoring import pod_scrape_config
from modeldeploy_dev.cluster.processes import free_port, tail, terminate
from modeldeploy_dev.demo import DemoError


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
    """A real Prometheus (built by ``make control-plane`` with Kubernetes discovery, which
    Debian's package lacks) discovering the serving pods through the Kubernetes API
    (``kubernetes_sd_configs``, role pod) and scraping them every second.

    It listens on ``host`` (the real node's bridge address), so that the operator's pod reaches
    it through a Service, as a canary analysis reaches Prometheus on any cluster."""

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        children: Children,
        kubeconfig: Path,
        namespace: str,
        host: str,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.children = children
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.host = host
        self.config = workdir / "prometheus.yml"
        self.child: Child | None = None

    def start(self) -> None:
        if not self.binary.exists():
            raise DemoError(f"prometheus not found at {self.binary}: run `make control-plane`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(pod_scrape_config(self.kubeconfig, [self.namespace])))
        self.child = self.children.start(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--log.level=warn",
            ],
        )
        wait_until(
            lambda: http_status(f"{self.url}/-/ready") == 200,
            30,
            f"Prometheus to answer on {self.url}",
            watch=[self.child],
        )

    def scraped_pods(self) -> dict[str, str]:
        """pod name -> track of every serving pod scraped and up."""
        url = f"{self.url}/api/v1/targets?state=active"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                active = json.load(response)["data"]["activeTargets"]
        except (OSError, ValueError, KeyError):
            return {}
        return {
            t["labels"]["pod"]: t["labels"].get("track", "")
            for t in active
            if t.get("health") == "up" and "pod" in t["labels"]
        }
