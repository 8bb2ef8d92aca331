"""Metric recording, aggregation over workers (sum or max) and the exposition text."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy_server.metrics import (
    LATENCY_BUCKETS,
    Aggregate,
    Histogram,
    WorkerMetrics,
    aggregate,
    render,
    retired,
)

NAMES = {
    "modeldeploy_requests",
    "modeldeploy_request_duration_seconds",
    "modeldeploy_inference_duration_seconds",
    "modeldeploy_queue_duration_seconds",
    "modeldeploy_batch_size",
    "modeldeploy_inflight_requests",
    "modeldeploy_model_load_duration_seconds",
    "modeldeploy_model_info",
    "modeldeploy_worker_resident_memory_bytes",
    "modeldeploy_http_limit_hits",
    "modeldeploy_worker_restarts",
}


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    histogram = Histogram((0.001, 0.01))
    for value in (0.0005, 0.001, 0.005, 5.0):
        histogram.observe(value)
    assert histogram.counts == [2, 1, 1]
    assert LATENCY_BUCKETS[0] == 0.0001 and LATENCY_BUCKETS[-1] == 10.0


def _worker(index: int, requests: int, load_seconds: float) -> WorkerMetrics:
    metrics = WorkerMetrics(index)
    for _ in range(requests):
        metrics.request_started("rf")
        metrics.request_done("rf", "v2", 200, 0.0003)
    metrics.request_started("rf")  # one in flight
    metrics.inference_done("rf", 0.0001, 4)
    metrics.queue_done("rf", 0.00002)
    metrics.model_loaded("rf", load_seconds, "s3://b/rf.onnx", "ab" * 32, "3")
    return metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_workers_are_summed_or_maxed_as_each_metric_requires() -> None:
    snapshots = [_worker(0, 3, 0.2).snapshot(), _worker(1, 5, 0.5).snapshot()]
    text, content_type = render(aggregate(snapshots), "iris", "canary", None)
    assert content_type.startswith("text/plain")
    samples = _samples(text.decode())
    base = (("deployment", "iris"), ("track", "canary"))
    rf = (("model", "rf"),)

    def get(name: str, *labels: tuple[str, str]) -> float:
        return samples[(name, tuple(sorted(base + labels)))]

    assert get("modeldeploy_requests_total", *rf, ("protocol", "v2"), ("code", "200")) == 8
    assert get("modeldeploy_request_duration_seconds_count", *rf, ("protocol", "v2")) == 8
    assert (
        get(
            "modeldeploy_request_duration_seconds_bucket", *rf, ("protocol", "v2"), ("le", "0.0001")
        )
        == 0
    )
    assert (
        get(
            "modeldeploy_request_duration_seconds_bucket", *rf, ("protocol", "v2"), ("le", "0.0005")
        )
        == 8
    )
    assert get("modeldeploy_batch_size_sum", *rf) == 8
    assert get("modeldeploy_inflight_requests", *rf) == 2
    assert get("modeldeploy_model_load_duration_seconds", *rf) == 0.5  # max, not 0.7
    info = (*rf, ("uri", "s3://b/rf.onnx"), ("sha256", "ab" * 32), ("version", "3"))
    assert get("modeldeploy_model_info", *info) == 1  # not 2
    assert get("modeldeploy_worker_resident_memory_bytes", ("worker", "1")) > 0
    families = {family.name for family in text_string_to_metric_families(text.decode())}
    assert families == NAMES
    for (_, labels), _value in samples.items():
        assert ("deployment", "iris") in labels and ("track", "canary") in labels


def test_openmetrics_on_request() -> None:
    text, content_type = render(aggregate([_worker(0, 1, 0.1).snapshot()]), "d", "stable",
                                "application/openmetrics-text; version=1.0.0")  # fmt: skip
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith(b"# EOF\n")


class _Quality:
    def __init__(self, snapshot: dict[str, object]) -> None:
        self.data = snapshot

    def snapshot(self) -> dict[str, object]:
        return self.data


def _quality_worker(index: int, scale: int) -> WorkerMetrics:
    metrics = WorkerMetrics(index)
    metrics.quality = _Quality({
        "model": "rf",
        "inputs": {
            "features": ["f0"], "values": 10 * scale, "window_size": 1000,
            "issues": [("f0", "out_of_range", scale), ("f0", "missing", 0)],
            "window": [("f0", [50 * scale, 50 * scale], [0.5, 0.5])],
        },
        "classes": [("0", 3 * scale), ("1", scale)],
        "values": ((-1.0, 0.0, 1.0), [scale, 0, 2 * scale, 0], 1.5 * scale),
    })  # fmt: skip
    return metrics


def test_model_aware_metrics_are_summed_over_workers() -> None:
    snapshots = [_quality_worker(0, 1).snapshot(), _quality_worker(1, 2).snapshot()]
    text, _ = render(aggregate(snapshots), "iris", "canary", None)
    samples = _samples(text.decode())
    base = (("deployment", "iris"), ("track", "canary"), ("model", "rf"))

    def get(name: str, *labels: tuple[str, str]) -> float:
        return samples[(name, tuple(sorted(base + labels)))]

    assert get("modeldeploy_feature_values_total", ("feature", "f0")) == 30
    out_of_range = (("feature", "f0"), ("issue", "out_of_range"))
    assert get("modeldeploy_feature_issues_total", *out_of_range) == 3
    assert get("modeldeploy_feature_drift_psi", ("feature", "f0")) == 0.0  # 150/150 vs 50/50
    assert get("modeldeploy_feature_drift_window_values", ("feature", "f0")) == 300
    assert get("modeldeploy_predictions_total", ("class", "0")) == 9
    assert get("modeldeploy_prediction_value_bucket", ("le", "-1.0")) == 3
    assert get("modeldeploy_prediction_value_bucket", ("le", "1.0")) == 9
    assert get("modeldeploy_prediction_value_count") == 9  # kept despite negative buckets
    assert get("modeldeploy_prediction_value_sum") == 4.5
    # OpenMetrics has no _sum (and so no _count) for a histogram with negative buckets.
    text, _ = render(aggregate(snapshots), "iris", "canary", "application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(text.decode())}
    names = {s.name for s in families["modeldeploy_prediction_value"].samples}
    assert names == {"modeldeploy_prediction_value_bucket"}
    assert families["modeldeploy_feature_values"].samples[0].value == 30


def test_a_retired_workers_counters_stay_in_the_sums_and_its_gauges_leave() -> None:
    live, dead = _worker(0, 3, 0.2), _worker(1, 5, 0.5)
    dead.limit_hits["body-rate"] = 2
    before = aggregate([live.snapshot(), dead.snapshot()])
    kept = Aggregate.empty()
    kept.absorb(aggregate([retired(dead.snapshot())]))
    after = aggregate([live.snapshot()])
    after.absorb(kept)
    assert after.requests == before.requests
    assert after.request_duration == before.request_duration
    assert after.batch_size == before.batch_size
    assert after.limit_hits == before.limit_hits == {("http", "body-rate"): 2}
    assert after.inflight == {"rf": 1} and before.inflight == {"rf": 2}
    assert (
        set(after.rss_bytes) == {0} and after.model_info == aggregate([live.snapshot()]).model_info
    )
