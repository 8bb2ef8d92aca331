"""Bucket counts as the metrics keep them: merged across workers, rendered cumulatively."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["add_counts", "cumulative_buckets"]


def add_counts(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Bucket by bucket, the counts of two workers (same bounds)."""
    return [x + y for x, y in zip(a, b, strict=True)]


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """(le, count up to it) per bucket, ``+Inf`` last: what a Prometheus histogram exposes."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
    return buckets
