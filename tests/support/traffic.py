"""Real client traffic to real pods, and the pods' own count of it.

- ``ClosedLoop``: client threads that each send one inference request, wait for the answer and
  send the next, until stopped, through a Service address or the gateway (with a Host
  header). Every outcome is counted: an HTTP status, or the kind of error when there was no
  answer (connection refused, reset, timeout). ``keep_alive=False`` opens a connection per
  request, as a client without a pool does; with it, each thread keeps one pooled connection.
- ``served_by_track``: the servers' own ``modeldeploy_requests_total`` summed by track, read from
  each pod of a ModelDeployment at its pod IP (what Prometheus would scrape).
- ``measure_split``: send N requests and return the share each track answered, from the pods'
  counters before and after.

Only loopback, pod and Service addresses and the local gateway are ever contacted.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

BODY = {
    "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]
}
"""One row for the four-feature test classifiers."""
METRICS_PORT = 8082
OK = "200"


def _outcome(error: requests.RequestException) -> str:
    """A short name for a request that got no HTTP answer."""
    text = str(error)
    for needle, name in (
        ("Connection refused", "refused"),
        ("Connection reset", "reset"),
        ("RemoteDisconnected", "disconnected"),
        ("BrokenPipe", "broken-pipe"),
    ):
        if needle in text:
            return name
    if isinstance(error, requests.Timeout):
        return "timeout"
    return type(error).__name__


class ClosedLoop:
    """``clients`` threads, each sending the next request as soon as the last is answered."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        host: str | None = None,
        clients: int = 4,
        keep_alive: bool = True,
        limit: int | None = None,
        timeout: float = 10,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.url = f"{url}/v2/models/{model}/infer"
        self.headers = {"Content-Type": "application/json"}
        if host:
            self.headers["Host"] = host
        if not keep_alive:
            self.headers["Connection"] = "close"
        self.clients = clients
        self.keep_alive = keep_alive
        self.limit = limit
        self.timeout = timeout
        self.outcomes: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._pending = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, daemon=True, name=f"client-{i}")
            for i in range(clients)
        ]
        self._body = json.dumps(body or BODY)

    # Lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> ClosedLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def wait(self, timeout: float = 120) -> None:
        """With ``limit``: wait until that many requests were answered or failed."""
        deadline = time.monotonic() + timeout
        while any(t.is_alive() for t in self._threads):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.sent} of {self.limit} requests after {timeout}s")
            time.sleep(0.05)

    # Counts --------------------------------------------------------------------------------
    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failed(self) -> int:
        return self.sent - self.outcomes[OK]

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "outcomes": dict(self.outcomes),
            "first_errors": self.errors[:5],
        }

    # Internals -----------------------------------------------------------------------------
    def _take(self) -> bool:
        with self._lock:
            if self.limit is not None and self.sent + self._pending >= self.limit:
                return False
            self._pending += 1
            return True

    def _record(self, outcome: str, version: str | None, error: str | None) -> None:
        with self._lock:
            self._pending -= 1
            self.outcomes[outcome] += 1
            if version is not None:
                self.versions[version] += 1
            if error is not None and len(self.errors) < 50:
                self.errors.append(error)

    def _run(self) -> None:
        session = requests.Session()
        try:
            while not self._stop.is_set() and self._take():
                if not self.keep_alive:
                    session.close()
                    session = requests.Session()
                try:
                    response = session.post(
                        self.url, data=self._body, headers=self.headers, timeout=self.timeout
                    )
                except requests.RequestException as error:
                    self._record(_outcome(error), None, f"{type(error).__name__}: {error}")
                    continue
                version = None
                if response.status_code == 200:
                    version = str(response.json().get("model_version", ""))
                    self._record(OK, version, None)
                else:
                    self._record(
                        str(response.status_code), None, f"{response.status_code}: {response.text}"
                    )
        finally:
            session.close()


def record(kind: str, **figures: Any) -> None:
    """Append one measurement to the file named by ``MODELDEPLOY_TRAFFIC_RECORD`` (JSON lines),
    when set: ``make bench-traffic`` runs the traffic tests with it and renders the file into
    ``benchmarks/TRAFFIC_RESULTS.md``. Tests assert; the record only keeps the figures."""
    path = os.environ.get("MODELDEPLOY_TRAFFIC_RECORD")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"kind": kind, **figures}) + "\n")


# The pods' own counts ------------------------------------------------------------------------
def pods_of(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-l", f"serving.modeldeploy.io/deployment={name}",
        "-o", "json",
    ).stdout  # fmt: skip
    return list(json.loads(out)["items"])


def served_by_track(cluster: Any, namespace: str, name: str) -> dict[str, tuple[str, float]]:
    """pod name -> (track, inference requests it answered), for every running pod of ``name``."""
    counts: dict[str, tuple[str, float]] = {}
    for pod in pods_of(cluster, namespace, name):
        ip = pod["status"].get("podIP")
        if not ip or pod["status"].get("phase") != "Running":
            continue
        track = pod["metadata"]["labels"].get("serving.modeldeploy.io/track", "")
        with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            if family.name == "modeldeploy_requests":
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        counts[pod["metadata"]["name"]] = (track, total)
    return counts


@dataclass(frozen=True)
class Split:
    """What each track answered of ``sent`` requests, by the servers' own counters."""

    sent: int
    failed: int
    by_track: dict[str, float]

    @property
    def canary_percent(self) -> float:
        answered = sum(self.by_track.values())
        return 100.0 * self.by_track.get("canary", 0.0) / answered if answered else 0.0


def measure_split(
    cluster: Any,
    namespace: str,
    name: str,
    url: str,
    *,
    host: str | None = None,
    count: int = 2000,
    clients: int = 4,
    keep_alive: bool = True,
) -> Split:
    """Send ``count`` requests and count, on the pods, which track answered them. The pods
    must stay the same meanwhile (a pod replaced mid-way would lose its count)."""
    before = served_by_track(cluster, namespace, name)
    load = ClosedLoop(url, name, host=host, clients=clients, keep_alive=keep_alive, limit=count)
    with load:
        load.wait()
    after = served_by_track(cluster, namespace, name)
    if set(before) != set(after):
        raise AssertionError(f"the pods changed during the measurement: {before} -> {after}")
    by_track: Counter[str] = Counter()
    for pod, (track, total) in after.items():
        by_track[track] += total - before[pod][1]
    return Split(load.sent, load.failed, dict(by_track))
