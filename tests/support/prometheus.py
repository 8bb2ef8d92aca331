"""A real Prometheus (the Debian ``prometheus`` binary) scraping real processes, for the tests.

Usage::

    with Prometheus(tmp_path / "prometheus") as prom:          # or the `prometheus` fixture
        prom.set_targets([
            (f"127.0.0.1:{stable.metrics_port}", {"namespace": "ns1", "job": "stable"}),
            (f"127.0.0.1:{canary.metrics_port}", {"namespace": "ns1", "job": "canary"}),
        ])
        prom.wait_for_targets()                  # every target scraped once, and up
        ...                                      # send requests to the servers
        prom.wait_for_series('sum(rate(modeldeploy_requests_total[10s])) > 0')
        prom.value('sum(rate(modeldeploy_requests_total[10s]))')   # -> float | None
        prom.url                                 # http://127.0.0.1:<port>, for the operator

With ``kubernetes=Discovery(kubeconfig, [namespace])`` Prometheus instead discovers the serving
pods through the Kubernetes API, as on any cluster (the pods the operator annotates, labelled
with namespace, pod and track; ``modeldeploy_dev.cluster.monitoring``), and ``rule_files``
loads alerting rules (the chart's) that it evaluates every interval; ``alerts()`` lists them.
That needs the Prometheus built by ``make control-plane`` (``binary=``): Debian's lacks
Kubernetes discovery.

Prometheus listens on a free loopback port, scrapes every second and keeps its data in a
temporary directory. Targets are read from a ``file_sd`` file that Prometheus watches, so
``set_targets`` needs no reload; Prometheus's discovery hands changes to the scraper at most
every 5 s, so new targets (the first ones too) are scraped within about 5 s, which
``wait_for_targets`` waits for. Each target's labels are added to every series scraped from
it (as a ServiceMonitor adds ``namespace``); the server labels its series with ``deployment``
and ``track`` itself (``MODELDEPLOY_DEPLOYMENT_NAME``, ``MODELDEPLOY_TRACK``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from modeldeploy_dev.cluster.monitoring import pod_scrape_config
from modeldeploy_dev.cluster.processes import free_port, tail, terminate

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
Target = tuple[str, Mapping[str, str]]
"""``("host:port", {"label": "value", ...})``: one metrics endpoint and its extra labels."""


@dataclass(frozen=True)
class Discovery:
    """Discover the serving pods of ``namespaces`` through the API server of ``kubeconfig``."""

    kubeconfig: Path
    namespaces: tuple[str, ...]


class PrometheusError(RuntimeError):
    """Prometheus could not start, or answered a query with an error."""


class _PortTaken(Exception):
    """The loopback port was taken between choosing it and Prometheus binding it."""


class Prometheus:
    """The real ``prometheus`` binary, started by ``start()`` or ``with``, stopped by ``stop()``."""

    def __init__(
        self,
        workdir: Path,
        targets: Iterable[Target] = (),
        *,
        scrape_interval: str = "1s",
        binary: str | Path | None = None,
        kubernetes: Discovery | None = None,
        rule_files: Iterable[Path] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.scrape_interval = scrape_interval
        self.binary = str(binary or shutil.which("prometheus") or "/usr/bin/prometheus")
        self.kubernetes = kubernetes
        self.rule_files = [str(path) for path in rule_files]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "prometheus.log"
        self.config = self.workdir / "prometheus.yml"
        self.targets_file = self.workdir / "targets.json"
        self._targets: list[Target] = list(targets)
        self._process: subprocess.Popen[bytes] | None = None

    # Lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 30) -> Prometheus:
        """Write the configuration, start Prometheus, wait until it is ready to answer."""
        if not Path(self.binary).exists():
            raise PrometheusError(
                f"prometheus binary not found at {self.binary} (Debian package prometheus; "
                "make setup installs it)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_targets(self._targets)
        self.config.write_text(self._config_text())
        # The free port may be taken by someone else before Prometheus binds it: try another.
        for _ in range(3):
            try:
                return self._start_once(timeout)
            except _PortTaken:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        return self._start_once(timeout)

    def _start_once(self, timeout: float) -> Prometheus:
        command = [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=info",
        ]
        with self.log.open("ab") as out:
            # Its own process group: stop() ends it (and only it) by its id.
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None:
                if "address already in use" in tail(self.log, 5):
                    raise _PortTaken
                raise PrometheusError(
                    f"prometheus exited with {self._process.returncode} at startup; "
                    f"its log ({self.log}):\n{tail(self.log)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise PrometheusError(
                    f"prometheus not ready on {self.url} after {timeout}s; "
                    f"its log ({self.log}):\n{tail(self.log)}"
                )
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Stop Prometheus (SIGTERM, then SIGKILL after a grace period)."""
        if self._process is not None and self._process.poll() is None:
            terminate(self._process.pid)
        self._process = None

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of Prometheus's log."""
        return tail(self.log, lines)

    # Targets -------------------------------------------------------------------------------
    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the scrape targets; Prometheus picks the change up within about 5 s
        (``wait_for_targets`` waits for it)."""
        self._targets = list(targets)
        self._write_targets(self._targets)

    def targets(self) -> list[dict[str, Any]]:
        """The active targets as Prometheus reports them (``/api/v1/targets``): each with
        ``labels``, ``health`` ("up", "down", "unknown"), ``lastError``, ``scrapeUrl``."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return list(data["activeTargets"])

    def wait_for_targets(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until the active targets are exactly those set, each scraped and up."""
        wanted = {address for address, _ in self._targets}
        last: list[dict[str, Any]] = []

        def settled() -> bool:
            nonlocal last
            last = self.targets()
            return {t["labels"].get("instance") for t in last} == wanted and all(
                t["health"] == "up" for t in last
            )

        self._poll(settled, timeout, lambda: f"targets {sorted(wanted)} up; last: {last}")
        return last

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts of the loaded rules that are pending or firing (``/api/v1/alerts``):
        each with ``labels``, ``annotations``, ``state`` and ``value``."""
        return list(self._get("/api/v1/alerts", {})["alerts"])

    # Queries -------------------------------------------------------------------------------
    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate ``promql`` now (or at ``at``, a Unix time) through ``/api/v1/query``.

        Returns the samples: ``[{"metric": {label: value}, "value": [time, "text"]}, ...]``
        (a scalar or string result comes back as one sample without labels). A query that
        Prometheus refuses raises ``PrometheusError`` with its message."""
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def value(self, promql: str) -> float | None:
        """The value of a query that yields at most one sample; None when it yields none."""
        samples = self.query(promql)
        if len(samples) > 1:
            raise PrometheusError(f"{promql!r} yields {len(samples)} samples, not one")
        return float(samples[0]["value"][1]) if samples else None

    def wait_for_series(self, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll ``promql`` until it yields at least one sample; returns the samples.

        With a comparison (``... > 0``) this waits for the value as well as for data."""
        found: list[dict[str, Any]] = []

        def answered() -> bool:
            nonlocal found
            found = self.query(promql)
            return bool(found)

        self._poll(answered, timeout, lambda: f"a sample of {promql!r}")
        return found

    # Internals -----------------------------------------------------------------------------
    def _config_text(self) -> str:
        if self.kubernetes is not None:
            return json.dumps(
                pod_scrape_config(
                    self.kubernetes.kubeconfig,
                    self.kubernetes.namespaces,
                    interval=self.scrape_interval,
                    rule_files=self.rule_files,
                ),
                indent=2,
            )
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "modeldeploy",
                    # A target's own "job" label, when given, wins over this name.
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                    ],
                }
            ],
            "rule_files": self.rule_files,
        }
        return json.dumps(config, indent=2)  # JSON is YAML

    def _write_targets(self, targets: list[Target]) -> None:
        groups = []
        for address, labels in targets:
            if not isinstance(address, str) or ":" not in address:
                raise ValueError(f"a target is 'host:port', got {address!r}")
            for name, value in labels.items():
                if not LABEL_NAME.fullmatch(str(name)) or not isinstance(value, str):
                    raise ValueError(
                        f"target {address}: label {name!r}={value!r} is not a Prometheus label "
                        "(a name of letters, digits and _, a string value)"
                    )
            groups.append({"targets": [address], "labels": dict(labels)})
        # Written whole and renamed into place: Prometheus never reads half a file.
        temporary = self.targets_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups, indent=2))
        os.replace(temporary, self.targets_file)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:  # 400/422: a bad query, with its reason
            try:
                body = json.loads(error.read())
            except ValueError:
                raise PrometheusError(f"GET {path} answered {error.code}") from error
        except OSError as error:
            raise PrometheusError(
                f"GET {url} failed: {error}; prometheus log:\n{self.log_tail()}"
            ) from error
        if body.get("status") != "success":
            raise PrometheusError(
                f"{path} {dict(params)}: {body.get('errorType')}: {body.get('error')}"
            )
        return body["data"]

    def _poll(self, check: Any, timeout: float, what: Any) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self._process is None or self._process.poll() is not None:
                raise PrometheusError(f"prometheus is not running; log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what()}")
            time.sleep(0.25)
