"""The operator's own Prometheus metrics, from their own registry, on their own port."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modeldeploy.api import ModelDeploymentStatus

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "modeldeploy_operator_reconciles_total",
    "Reconcile passes over a ModelDeployment, by result (ok, error).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "modeldeploy_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
CHILD_WRITES = Counter(
    "modeldeploy_operator_child_writes_total",
    "Children applied or deleted by the operator, by kind and action.",
    ["kind", "action"],
    registry=REGISTRY,
)

REQUEUES = Counter(
    "modeldeploy_operator_requeued_reconciles_total",
    "Reconciles run because a requested time came (a rollout step, a retry), not an event.",
    registry=REGISTRY,
)

POD_EVENTS = Counter(
    "modeldeploy_operator_pod_events_total",
    "Serving-pod watch events applied to the operator's pod store (they start no reconcile).",
    registry=REGISTRY,
)

LEADING = Gauge(
    "modeldeploy_operator_leading",
    "1 while this replica holds the leader-election Lease and acts; 0 while it waits.",
    registry=REGISTRY,
)


def set_leading(leading: bool) -> None:
    LEADING.set(1 if leading else 0)


@contextmanager
def timed_reconcile() -> Iterator[None]:
    """Count and time one reconcile pass."""
    start = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILES.labels("error").inc()
        raise
    else:
        RECONCILES.labels("ok").inc()
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - start)


def count_children(applied: list[str], deleted: list[str]) -> None:
    """Record a pass's writes ("Kind/name" entries)."""
    for action, entries in (("applied", applied), ("deleted", deleted)):
        for entry in entries:
            CHILD_WRITES.labels(entry.split("/", 1)[0], action).inc()


def count_requeue() -> None:
    """Record a reconcile started by its due time."""
    REQUEUES.inc()


def count_pod_event() -> None:
    """Record a pod watch event applied to the pod store."""
    POD_EVENTS.inc()


class ConditionCollector(Collector):
    """``modeldeploy_modeldeployment_condition`` and ``..._phase`` from the statuses the
    operator last wrote: alerts need no kube-state-metrics."""

    def __init__(
        self, statuses: Callable[[], Mapping[tuple[str, str], ModelDeploymentStatus]]
    ) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        conditions = GaugeMetricFamily(
            "modeldeploy_modeldeployment_condition",
            "1 when the ModelDeployment's condition has this status.",
            labels=["namespace", "name", "type", "status", "reason"],
        )
        phases = GaugeMetricFamily(
            "modeldeploy_modeldeployment_phase",
            "1 for the ModelDeployment's current phase.",
            labels=["namespace", "name", "phase"],
        )
        for (namespace, name), status in sorted(self._statuses().items()):
            for c in status.conditions or []:
                conditions.add_metric([namespace, name, c.type, c.status, c.reason], 1)
            if status.phase:
                phases.add_metric([namespace, name, status.phase], 1)
        yield conditions
        yield phases


def serve(
    address: str, statuses: Callable[[], Mapping[tuple[str, str], ModelDeploymentStatus]]
) -> None:
    """Expose the registry at ``host:port`` (``/metrics``), with the condition gauges."""
    host, _, port = address.rpartition(":")
    REGISTRY.register(ConditionCollector(statuses))
    start_http_server(int(port), addr=host or "0.0.0.0", registry=REGISTRY)
