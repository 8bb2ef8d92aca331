"""Model-aware metrics across workers: merge the workers' snapshots, score drift, expose.

Runs in the supervisor (plain Python, no numpy). Counters and histograms are summed over
workers; the drift window histograms are summed too, and the population stability index
is computed from the merged histogram against the profile's shares::

    PSI = sum over bins i of (a_i - e_i) * ln(a_i / e_i)

with ``a_i`` the share of the window's values in bin ``i`` and ``e_i`` the profile's share,
both floored at ``EPSILON`` so that an empty bin adds a bounded penalty instead of infinity.
Values below the first edge fall in the first bin, above the last in the last bin; for a
categorical feature the bins are the profile's categories plus one for unseen ones.
Readings: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25 major shift.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from .histograms import add_counts, cumulative_buckets

EPSILON = 1e-4
MIN_DRIFT_VALUES = 100
"""Fewer values in the window than this (or than the window, if smaller): no PSI yet."""


def psi(counts: Sequence[int], expected: Sequence[float]) -> float | None:
    """Population stability index of observed bin ``counts`` against ``expected`` shares."""
    total = sum(counts)
    if total <= 0:
        return None
    score = 0.0
    for count, share in zip(counts, expected, strict=True):
        actual = max(count / total, EPSILON)
        reference = max(share, EPSILON)
        score += (actual - reference) * math.log(actual / reference)
    return score


@dataclass
class QualityAggregate:
    """Per (model, feature) and per (model, class) sums over workers."""

    values: dict[tuple[str, str], int] = field(default_factory=dict)
    issues: dict[tuple[str, str, str], int] = field(default_factory=dict)
    window: dict[tuple[str, str], tuple[list[int], list[float]]] = field(default_factory=dict)
    window_size: dict[str, int] = field(default_factory=dict)
    classes: dict[tuple[str, str], int] = field(default_factory=dict)
    prediction_values: dict[str, tuple[tuple[float, ...], list[int], float]] = field(
        default_factory=dict
    )

    def add(self, snapshot: dict[str, Any] | None) -> None:
        """Add one worker's ``ModelMonitor.snapshot()`` (None: that worker has no monitor)."""
        if not snapshot:
            return
        model = snapshot["model"]
        inputs = snapshot.get("inputs")
        if inputs:
            for feature in inputs["features"]:
                key = (model, feature)
                self.values[key] = self.values.get(key, 0) + inputs["values"]
            for feature, issue, count in inputs["issues"]:
                issue_key = (model, feature, issue)
                self.issues[issue_key] = self.issues.get(issue_key, 0) + count
            for feature, counts, expected in inputs["window"]:
                key = (model, feature)
                if key in self.window:
                    self.window[key] = (add_counts(self.window[key][0], counts), expected)
                else:
                    self.window[key] = (list(counts), list(expected))
            self.window_size[model] = inputs["window_size"]
        for label, count in snapshot.get("classes") or []:
            class_key = (model, label)
            self.classes[class_key] = self.classes.get(class_key, 0) + count
        values = snapshot.get("values")
        if values:
            bounds, counts, total = values
            if model in self.prediction_values:
                _, old, old_total = self.prediction_values[model]
                counts = add_counts(old, counts)
                total += old_total
            self.prediction_values[model] = (tuple(bounds), list(counts), total)

    def absorb(self, other: QualityAggregate) -> None:
        """Add ``other``'s counters and prediction histograms (not its drift windows: they
        describe recent traffic, and ``other`` holds retired workers)."""
        for key, count in other.values.items():
            self.values[key] = self.values.get(key, 0) + count
        for issue_key, count in other.issues.items():
            self.issues[issue_key] = self.issues.get(issue_key, 0) + count
        for class_key, count in other.classes.items():
            self.classes[class_key] = self.classes.get(class_key, 0) + count
        for model, (bounds, counts, total) in other.prediction_values.items():
            if model in self.prediction_values:
                _, old, old_total = self.prediction_values[model]
                counts, total = add_counts(old, counts), total + old_total
            self.prediction_values[model] = (bounds, list(counts), total)

    def drift(self) -> dict[tuple[str, str], tuple[float, int]]:
        """(PSI, values it was computed from) per feature with enough values."""
        result = {}
        for (model, feature), (counts, expected) in self.window.items():
            n = sum(counts)
            if n >= min(MIN_DRIFT_VALUES, self.window_size.get(model, MIN_DRIFT_VALUES)):
                score = psi(counts, expected)
                if score is not None:
                    result[(model, feature)] = (score, n)
        return result


def collect_quality(
    data: QualityAggregate, base: list[str], openmetrics: bool = False
) -> Iterator[Metric]:
    """The model-aware metric families (only those this server has series for)."""
    labels = ["deployment", "track", "model"]
    if data.values:
        values = CounterMetricFamily(
            "modeldeploy_feature_values",
            "Input values checked against the training profile, per feature.",
            labels=[*labels, "feature"],
        )
        for (model, feature), count in sorted(data.values.items()):
            values.add_metric([*base, model, feature], count)
        yield values
        issues = CounterMetricFamily(
            "modeldeploy_feature_issues",
            "Input values outside the training profile, per feature and issue "
            "(out_of_range, missing, unseen_category).",
            labels=[*labels, "feature", "issue"],
        )
        for (model, feature, issue), count in sorted(data.issues.items()):
            issues.add_metric([*base, model, feature, issue], count)
        yield issues
    drift = data.drift()
    if drift:
        score = GaugeMetricFamily(
            "modeldeploy_feature_drift_psi",
            "Population stability index of each feature's recent values (the last "
            "--drift-window per worker, merged) against the training profile: <0.1 stable, "
            "0.1-0.25 moderate, >0.25 major shift.",
            labels=[*labels, "feature"],
        )
        sizes = GaugeMetricFamily(
            "modeldeploy_feature_drift_window_values",
            "Values the drift score of each feature was computed from.",
            labels=[*labels, "feature"],
        )
        for (model, feature), (value, n) in sorted(drift.items()):
            score.add_metric([*base, model, feature], value)
            sizes.add_metric([*base, model, feature], n)
        yield score
        yield sizes
    if data.classes:
        classes = CounterMetricFamily(
            "modeldeploy_predictions",
            "Predictions of a classifier, per predicted class.",
            labels=[*labels, "class"],
        )
        for (model, label), count in sorted(data.classes.items()):
            classes.add_metric([*base, model, label], count)
        yield classes
    if data.prediction_values:
        histogram = HistogramMetricFamily(
            "modeldeploy_prediction_value",
            "Predicted values of a regressor (buckets: the training profile's edges, if any).",
            labels=labels,
        )
        for model, (bounds, counts, total) in sorted(data.prediction_values.items()):
            buckets = cumulative_buckets(bounds, counts)
            histogram.add_metric([*base, model], buckets, total)
            if bounds[0] < 0 and not openmetrics:
                # A histogram with a negative bucket has no _sum (nor _count) in OpenMetrics,
                # so prometheus_client leaves both out; the Prometheus text format allows them.
                names = dict(zip(labels, [*base, model], strict=True))
                histogram.samples.append(Sample(f"{histogram.name}_count", names, buckets[-1][1]))
                histogram.samples.append(Sample(f"{histogram.name}_sum", names, total))
        yield histogram
