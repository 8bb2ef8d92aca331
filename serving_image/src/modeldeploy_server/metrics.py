"""Prometheus metrics: cheap recording in each worker, correct aggregation across workers.

Workers record into plain dicts and lists (a dict update and a bisect per observation: no
locks, no shared memory on the request path). The supervisor asks every worker for a
snapshot when Prometheus scrapes, then adds counters, histograms and in-flight gauges
over workers and takes the maximum of per-worker facts (model load time, model info),
which summing would overstate. Every series carries ``deployment`` and ``track``. The
model-aware metrics (inputs against the training profile, predictions) come from the
worker's ``monitor`` and are merged in ``quality_metrics``.
"""

from __future__ import annotations

import resource
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from .histograms import add_counts, cumulative_buckets
from .quality_metrics import QualityAggregate, collect_quality
from .shadow_metrics import ShadowAggregate, ShadowTally, collect_shadow

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01,
    0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds; fine below a millisecond, where this server's requests live."""

BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Rows per batch."""


class Histogram:
    """Bucket counts (non-cumulative; the last slot is +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (Prometheus buckets are inclusive upper bounds)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class QualitySource(Protocol):
    """What records model-aware metrics (``monitor.ModelMonitor``)."""

    def snapshot(self) -> dict[str, Any]:
        """Plain data for ``QualityAggregate.add``."""


class WorkerMetrics:
    """The metrics of one worker process; only its event-loop thread writes them."""

    def __init__(self, worker: int = 0, limit_hits: dict[str, int] | None = None) -> None:
        self.worker = worker
        self.limit_hits: dict[str, int] = {} if limit_hits is None else limit_hits
        """Hits per connection or request limit (``LimitWarnings.counts``, shared)."""
        self.requests: dict[tuple[str, str, int], int] = {}
        self.request_duration: dict[tuple[str, str], Histogram] = {}
        self.inference_duration: dict[str, Histogram] = {}
        self.queue_duration: dict[str, Histogram] = {}
        self.batch_size: dict[str, Histogram] = {}
        self.inflight: dict[str, int] = {}
        self.load_seconds: dict[str, float] = {}
        self.model_info: dict[tuple[str, str, str, str], int] = {}
        self.quality: QualitySource | None = None
        """Set once a model is loaded whose inputs or predictions are monitored."""
        self.shadow: ShadowTally | None = None
        """Set when this server mirrors requests to a shadow (canary)."""
        self.shadow_requests: dict[tuple[str, int], int] = {}
        """Mirrored copies answered (this server is the shadow), by (model, code)."""

    def request_started(self, model: str) -> None:
        """An inference request began (in-flight gauge up)."""
        self.inflight[model] = self.inflight.get(model, 0) + 1

    def request_done(
        self, model: str, protocol: str, code: int, seconds: float, shadow: bool = False
    ) -> None:
        """An inference request was answered with ``code`` after ``seconds`` (``shadow``: a
        mirrored copy, counted apart so that client traffic keeps its own series)."""
        self.inflight[model] -= 1
        if shadow:
            key_shadow = (model, code)
            self.shadow_requests[key_shadow] = self.shadow_requests.get(key_shadow, 0) + 1
            return
        key = (model, protocol, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.request_duration.get((model, protocol))
        if histogram is None:
            histogram = self.request_duration[(model, protocol)] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def inference_done(self, model: str, seconds: float, rows: int) -> None:
        """One batch of ``rows`` rows ran in ``seconds``."""
        histogram = self.inference_duration.get(model)
        if histogram is None:
            histogram = self.inference_duration[model] = Histogram(LATENCY_BUCKETS)
            self.batch_size[model] = Histogram(BATCH_BUCKETS)
        histogram.observe(seconds)
        self.batch_size[model].observe(rows)

    def queue_done(self, model: str, seconds: float) -> None:
        """A request waited ``seconds`` in the batch queue."""
        histogram = self.queue_duration.get(model)
        if histogram is None:
            histogram = self.queue_duration[model] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def model_loaded(self, model: str, seconds: float, uri: str, sha256: str, version: str) -> None:
        """Record a successful load (duration and the model's identity)."""
        self.load_seconds[model] = seconds
        self.model_info[(model, uri, sha256, version)] = 1

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the supervisor (picklable, detached from live objects)."""

        def hist(items: Iterable[tuple[Any, Histogram]]) -> list[tuple[Any, list[int], float]]:
            return [(key, list(h.counts), h.total) for key, h in items]

        return {
            "worker": self.worker,
            "requests": list(self.requests.items()),
            "request_duration": hist(self.request_duration.items()),
            "inference_duration": hist(self.inference_duration.items()),
            "queue_duration": hist(self.queue_duration.items()),
            "batch_size": hist(self.batch_size.items()),
            "inflight": list(self.inflight.items()),
            "load_seconds": list(self.load_seconds.items()),
            "model_info": list(self.model_info.items()),
            "rss_bytes": _rss_bytes(),
            "limit_hits": list(self.limit_hits.items()),
            "quality": self.quality.snapshot() if self.quality is not None else None,
            "shadow": self.shadow.snapshot() if self.shadow is not None else None,
            "shadow_requests": list(self.shadow_requests.items()),
        }


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Aggregate:
    """Metrics summed (or maxed) over workers."""

    requests: dict[tuple[str, str, int], int]
    request_duration: dict[tuple[str, str], tuple[list[int], float]]
    inference_duration: dict[str, tuple[list[int], float]]
    queue_duration: dict[str, tuple[list[int], float]]
    batch_size: dict[str, tuple[list[int], float]]
    inflight: dict[str, int]
    load_seconds: dict[str, float]
    model_info: dict[tuple[str, str, str, str], int]
    rss_bytes: dict[int, int]
    quality: QualityAggregate = field(default_factory=QualityAggregate)
    limit_hits: dict[tuple[str, str], int] = field(default_factory=dict)
    """(listener, limit) -> hits; the supervisor adds its metrics port's."""
    shadow: ShadowAggregate = field(default_factory=ShadowAggregate)
    worker_restarts: int = 0

    @classmethod
    def empty(cls) -> Aggregate:
        return cls({}, {}, {}, {}, {}, {}, {}, {}, {})

    def absorb(self, other: Aggregate) -> None:
        """Add ``other``'s counters and histograms (those of retired workers) to these."""
        for key, value in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + value
        for mine, theirs in (
            (self.request_duration, other.request_duration),
            (self.inference_duration, other.inference_duration),
            (self.queue_duration, other.queue_duration),
            (self.batch_size, other.batch_size),
        ):
            _add_histograms(mine, [(key, counts, total) for key, (counts, total) in theirs.items()])
        for hit, value in other.limit_hits.items():
            self.limit_hits[hit] = self.limit_hits.get(hit, 0) + value
        self.quality.absorb(other.quality)
        self.shadow.absorb(other.shadow)


def _add_histograms(
    target: dict[Any, tuple[list[int], float]], items: list[tuple[Any, list[int], float]]
) -> None:
    for key, counts, total in items:
        if key in target:
            old_counts, old_total = target[key]
            target[key] = (add_counts(old_counts, counts), old_total + total)
        else:
            target[key] = (list(counts), total)


def retired(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What of a dead worker's last snapshot still counts: its counters and histograms, so
    that the sums over workers never go down (Prometheus would read a counter reset)."""
    kept = {key: snapshot[key] for key in _COUNTERS if key in snapshot}
    quality = snapshot.get("quality")
    if quality and quality.get("inputs"):
        # The drift window describes recent traffic: a dead worker has none.
        quality = {**quality, "inputs": {**quality["inputs"], "window": []}}
    shadow = {"shadow": snapshot.get("shadow"), "shadow_requests": snapshot.get("shadow_requests")}
    return {**kept, **shadow, "worker": snapshot["worker"], "quality": quality}


_COUNTERS = (
    "requests",
    "request_duration",
    "inference_duration",
    "queue_duration",
    "batch_size",
    "limit_hits",
)


def aggregate(snapshots: Iterable[dict[str, Any]]) -> Aggregate:
    """Sum counters, histograms and in-flight gauges; take the max of per-worker facts."""
    result = Aggregate.empty()
    for snap in snapshots:
        for key, value in snap["requests"]:
            result.requests[key] = result.requests.get(key, 0) + value
        _add_histograms(result.request_duration, snap["request_duration"])
        _add_histograms(result.inference_duration, snap["inference_duration"])
        _add_histograms(result.queue_duration, snap["queue_duration"])
        _add_histograms(result.batch_size, snap["batch_size"])
        for key, value in snap.get("inflight", ()):
            result.inflight[key] = result.inflight.get(key, 0) + value
        for key, value in snap.get("load_seconds", ()):
            result.load_seconds[key] = max(result.load_seconds.get(key, 0.0), value)
        for key, value in snap.get("model_info", ()):
            result.model_info[key] = max(result.model_info.get(key, 0), value)
        if "rss_bytes" in snap:  # a retired worker's snapshot keeps only its counters
            result.rss_bytes[snap["worker"]] = snap["rss_bytes"]
        for limit, value in snap.get("limit_hits", ()):
            key = ("http", limit)
            result.limit_hits[key] = result.limit_hits.get(key, 0) + value
        result.quality.add(snap.get("quality"))
        result.shadow.add(snap.get("shadow"))
        result.shadow.add_requests(snap.get("shadow_requests"))
    return result


class _Collector:
    def __init__(self, data: Aggregate, deployment: str, track: str, openmetrics: bool) -> None:
        self.data = data
        self.base = [deployment, track]
        self.openmetrics = openmetrics

    def collect(self) -> Iterator[Metric]:
        d, base = self.data, self.base
        requests = CounterMetricFamily(
            "modeldeploy_requests",
            "Inference requests answered, by model, protocol and HTTP status code.",
            labels=["deployment", "track", "model", "protocol", "code"],
        )
        for (model, protocol, code), value in sorted(d.requests.items()):
            requests.add_metric([*base, model, protocol, str(code)], value)
        yield requests
        yield self._histogram(
            "modeldeploy_request_duration_seconds",
            "End-to-end inference request latency (body read to response sent).",
            ["model", "protocol"],
            d.request_duration,
            LATENCY_BUCKETS,
        )
        yield self._histogram(
            "modeldeploy_inference_duration_seconds",
            "Time the runtime took per batch.",
            ["model"],
            d.inference_duration,
            LATENCY_BUCKETS,
        )
        yield self._histogram(
            "modeldeploy_queue_duration_seconds",
            "Time a request waited in the batch queue.",
            ["model"],
            d.queue_duration,
            LATENCY_BUCKETS,
        )
        yield self._histogram(
            "modeldeploy_batch_size",
            "Rows per batch run by the runtime.",
            ["model"],
            d.batch_size,
            BATCH_BUCKETS,
        )
        yield self._gauge(
            "modeldeploy_inflight_requests",
            "Inference requests being processed.",
            ["model"],
            {(k,): v for k, v in d.inflight.items()},
        )
        yield self._gauge(
            "modeldeploy_model_load_duration_seconds",
            "Seconds the last model load took (slowest worker).",
            ["model"],
            {(k,): v for k, v in d.load_seconds.items()},
        )
        yield self._gauge(
            "modeldeploy_model_info",
            "The model being served (value 1).",
            ["model", "uri", "sha256", "version"],
            {key: float(value) for key, value in d.model_info.items()},
        )
        yield self._gauge(
            "modeldeploy_worker_resident_memory_bytes",
            "Resident memory of each worker process.",
            ["worker"],
            {(str(k),): v for k, v in d.rss_bytes.items()},
        )
        limits = CounterMetricFamily(
            "modeldeploy_http_limit_hits",
            "Connections or requests stopped by a limit (header-timeout, body-rate, head-size, "
            "connections, inflight-body-bytes), by listener (http, metrics).",
            labels=["deployment", "track", "listener", "limit"],
        )
        for (listener, limit), value in sorted(d.limit_hits.items()):
            limits.add_metric([*base, listener, limit], value)
        yield limits
        restarts = CounterMetricFamily(
            "modeldeploy_worker_restarts",
            "Worker processes restarted by the supervisor (crashed or unresponsive).",
            labels=["deployment", "track"],
        )
        restarts.add_metric(base, d.worker_restarts)
        yield restarts
        yield from collect_quality(d.quality, base, self.openmetrics)
        yield from collect_shadow(d.shadow, base)

    def _histogram(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        data: dict[Any, tuple[list[int], float]],
        bounds: tuple[float, ...],
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["deployment", "track", *labels])
        for key, (counts, total) in sorted(data.items()):
            values = list(key) if isinstance(key, tuple) else [key]
            family.add_metric([*self.base, *values], cumulative_buckets(bounds, counts), total)
        return family

    def _gauge(
        self, name: str, documentation: str, labels: list[str], data: dict[tuple[str, ...], float]
    ) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=["deployment", "track", *labels])
        for key, value in sorted(data.items()):
            family.add_metric([*self.base, *key], value)
        return family


def render(data: Aggregate, deployment: str, track: str, accept: str | None) -> tuple[bytes, str]:
    """Exposition text (Prometheus or OpenMetrics, per ``Accept``) and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    encoder, content_type = choose_encoder(accept or "")
    openmetrics = content_type.startswith("application/openmetrics-text")
    registry.register(_Collector(data, deployment, track, openmetrics))
    return encoder(registry), content_type
