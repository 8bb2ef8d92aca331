"""Shadow metrics: what the stable's mirror recorded, and what a canary answered to copies.

Like every other metric, each worker records into plain structures (``ShadowTally``), the
supervisor sums the workers' snapshots on each scrape (``ShadowAggregate``) and renders
them (``collect_shadow``). Only families that have series are exposed, so a server that
never mirrors shows none of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from .histograms import add_counts, cumulative_buckets

PROBABILITY_BUCKETS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
ABS_ERROR_BUCKETS: tuple[float, ...] = (
    1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 100.0, 1e3, 1e4,
)  # fmt: skip
RELATIVE_ERROR_BUCKETS: tuple[float, ...] = (
    1e-4, 1e-3, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
)  # fmt: skip
DROP_REASONS = ("queue_full", "canary_error", "timeout", "unpairable")


class ValueBuckets:
    """A histogram fed whole arrays (bounds are inclusive upper bounds, +Inf last)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self.total = 0.0

    def observe(self, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        positions = np.searchsorted(np.asarray(self.bounds), values, side="left")
        self.counts += np.bincount(positions, minlength=len(self.counts))
        self.total += float(finite.sum())

    def snapshot(self) -> tuple[list[int], float]:
        return self.counts.tolist(), self.total


class ShadowTally:
    """One worker's shadow counters (only its event loop writes them)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.rows = 0
        self.disagreements = 0
        self.slice_rows: dict[tuple[str, str], int] = {}
        self.slice_disagreements: dict[tuple[str, str], int] = {}
        self.dropped: dict[str, int] = {}
        self.probability_difference = ValueBuckets(PROBABILITY_BUCKETS)
        self.abs_error = ValueBuckets(ABS_ERROR_BUCKETS)
        self.relative_error = ValueBuckets(RELATIVE_ERROR_BUCKETS)

    def drop(self, reason: str, copies: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + copies

    def record(
        self,
        disagree: np.ndarray,
        slices: list[tuple[str, str, int, int]],
        probability_difference: np.ndarray | None = None,
        abs_error: np.ndarray | None = None,
        relative_error: np.ndarray | None = None,
    ) -> None:
        """Count one paired answer: its rows, overall and per (feature, bin)."""
        self.rows += len(disagree)
        self.disagreements += int(np.count_nonzero(disagree))
        for feature, label, rows, wrong in slices:
            key = (feature, label)
            self.slice_rows[key] = self.slice_rows.get(key, 0) + rows
            self.slice_disagreements[key] = self.slice_disagreements.get(key, 0) + wrong
        if probability_difference is not None:
            self.probability_difference.observe(probability_difference)
        if abs_error is not None:
            self.abs_error.observe(abs_error)
        if relative_error is not None:
            self.relative_error.observe(relative_error)

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the supervisor."""
        return {
            **_counters(self),
            "probability_difference": self.probability_difference.snapshot(),
            "abs_error": self.abs_error.snapshot(),
            "relative_error": self.relative_error.snapshot(),
        }


_HISTOGRAMS = ("probability_difference", "abs_error", "relative_error")


@dataclass
class ShadowAggregate:
    """Shadow counters summed over workers (retired ones included)."""

    model: str = ""
    rows: int = 0
    disagreements: int = 0
    slice_rows: dict[tuple[str, str], int] = field(default_factory=dict)
    slice_disagreements: dict[tuple[str, str], int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    histograms: dict[str, tuple[list[int], float]] = field(default_factory=dict)
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    """Canary side: copies answered, by (model, code)."""

    def add(self, snapshot: dict[str, Any] | None) -> None:
        """Add one worker's ``ShadowTally.snapshot()`` (None: it never mirrored)."""
        if not snapshot:
            return
        self.model = snapshot.get("model") or self.model
        self.rows += snapshot["rows"]
        self.disagreements += snapshot["disagreements"]
        for target, items in (
            (self.slice_rows, snapshot["slice_rows"]),
            (self.slice_disagreements, snapshot["slice_disagreements"]),
        ):
            for (feature, label), value in items:
                target[(feature, label)] = target.get((feature, label), 0) + value
        for reason, value in snapshot["dropped"]:
            self.dropped[reason] = self.dropped.get(reason, 0) + value
        for name in _HISTOGRAMS:
            counts, total = snapshot[name]
            if name in self.histograms:
                old, old_total = self.histograms[name]
                counts, total = add_counts(old, counts), old_total + total
            self.histograms[name] = (list(counts), total)

    def add_requests(self, items: list[tuple[tuple[str, int], int]] | None) -> None:
        for key, value in items or ():
            key = (key[0], key[1])
            self.requests[key] = self.requests.get(key, 0) + value

    def absorb(self, other: ShadowAggregate) -> None:
        """Add the counters of retired workers."""
        self.add(other._as_snapshot() if other.rows or other.dropped or other.histograms else None)
        self.add_requests(list(other.requests.items()))

    def _as_snapshot(self) -> dict[str, Any]:
        empty = {
            name: ([0] * (len(bounds) + 1), 0.0)
            for name, bounds in (
                ("probability_difference", PROBABILITY_BUCKETS),
                ("abs_error", ABS_ERROR_BUCKETS),
                ("relative_error", RELATIVE_ERROR_BUCKETS),
            )
        }
        return {**_counters(self), **empty, **self.histograms}


def _counters(source: ShadowTally | ShadowAggregate) -> dict[str, Any]:
    """The counters of a snapshot, as plain data (a worker's tally or a sum of them)."""
    return {
        "model": source.model,
        "rows": source.rows,
        "disagreements": source.disagreements,
        "slice_rows": list(source.slice_rows.items()),
        "slice_disagreements": list(source.slice_disagreements.items()),
        "dropped": list(source.dropped.items()),
    }


def collect_shadow(data: ShadowAggregate, base: list[str]) -> Iterator[Metric]:
    """The shadow metric families (none when this server neither mirrored nor got copies)."""
    labels = ["deployment", "track", "model"]
    if data.requests:
        requests = CounterMetricFamily(
            "modeldeploy_shadow_requests",
            "Mirrored copies this server answered (marked Modeldeploy-Shadow: 1), by model and "
            "HTTP status code; they are left out of modeldeploy_requests_total and of the input "
            "data-quality metrics.",
            labels=["deployment", "track", "model", "code"],
        )
        for (name, code), value in sorted(data.requests.items()):
            requests.add_metric([*base, name, str(code)], value)
        yield requests
    if not (data.rows or data.dropped or data.histograms):
        return
    head = [*base, data.model]
    rows = CounterMetricFamily(
        "modeldeploy_shadow_rows",
        "Rows answered by both the stable model and the shadow (canary), and compared.",
        labels=labels,
    )
    rows.add_metric(head, data.rows)
    yield rows
    disagreements = CounterMetricFamily(
        "modeldeploy_shadow_disagreeing_rows",
        "Compared rows on which the shadow disagreed with the stable model (classifiers: "
        "another label; regressors: relative error above --shadow-tolerance).",
        labels=labels,
    )
    disagreements.add_metric(head, data.disagreements)
    yield disagreements
    slice_rows = CounterMetricFamily(
        "modeldeploy_shadow_slice_rows",
        "Compared rows per slice of the training profile: a feature and one of its bins.",
        labels=[*labels, "feature", "bin"],
    )
    slice_wrong = CounterMetricFamily(
        "modeldeploy_shadow_disagreements",
        "Compared rows on which the shadow disagreed, per slice of the training profile.",
        labels=[*labels, "feature", "bin"],
    )
    for (feature, label), count in sorted(data.slice_rows.items()):
        slice_rows.add_metric([*head, feature, label], count)
        slice_wrong.add_metric(
            [*head, feature, label], data.slice_disagreements.get((feature, label), 0)
        )
    yield slice_rows
    yield slice_wrong
    dropped = CounterMetricFamily(
        "modeldeploy_shadow_dropped",
        "Mirrored copies not compared, by reason (queue_full, canary_error, timeout, unpairable).",
        labels=[*labels, "reason"],
    )
    for reason in DROP_REASONS:
        dropped.add_metric([*head, reason], data.dropped.get(reason, 0))
    yield dropped
    for name, bounds, text in (
        ("probability_difference", PROBABILITY_BUCKETS,
         "Classifiers: per compared row, the largest difference in any class's probability."),
        ("abs_error", ABS_ERROR_BUCKETS,
         "Regressors: per compared row, |shadow - stable|."),
        ("relative_error", RELATIVE_ERROR_BUCKETS,
         "Regressors: per compared row, |shadow - stable| / max(|stable|, |shadow|)."),
    ):  # fmt: skip
        counts, total = data.histograms.get(name, ([0] * (len(bounds) + 1), 0.0))
        if not any(counts):
            continue
        family = HistogramMetricFamily(f"modeldeploy_shadow_{name}", text, labels=labels)
        family.add_metric(head, cumulative_buckets(bounds, counts), total)
        yield family
