"""Comparing two tracks' predictions: how far apart (Jensen-Shannon distance) and how likely
that gap is by chance alone (a chi-squared test of homogeneity). Pure standard-library math.

A distance over a few dozen predictions is mostly noise: two tracks serving the same model
differ by about ``sqrt((k - 1) / (4 n ln 2))`` over ``n`` predictions per track in ``k``
classes (0.12 for 3 classes and 50 predictions). The test's p-value says whether a distance
is more than that noise, whatever ``n`` is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MIN_EXPECTED", "Homogeneity", "chi2_sf", "homogeneity", "jensen_shannon"]

MIN_EXPECTED = 5.0
"""Fewest expected counts per cell for the chi-squared approximation (Cochran's rule): rarer
classes or bins are pooled into one cell until every cell expects at least this many."""


def jensen_shannon(p: Mapping[str, float], q: Mapping[str, float]) -> float | None:
    """Jensen-Shannon distance (base 2, 0..1) between two count distributions."""
    keys = sorted(set(p) | set(q))
    total_p, total_q = sum(p.values()), sum(q.values())
    if total_p <= 0 or total_q <= 0:
        return None
    pp = [p.get(k, 0.0) / total_p for k in keys]
    qq = [q.get(k, 0.0) / total_q for k in keys]
    mm = [(a + b) / 2 for a, b in zip(pp, qq, strict=True)]

    def kl(a: list[float], b: list[float]) -> float:
        return sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    return math.sqrt(max(0.0, (kl(pp, mm) + kl(qq, mm)) / 2))


def _lower_series(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its series (converges for x < a + 1)."""
    term = total = 1.0 / a
    n = a
    for _ in range(1000):
        n += 1
        term *= x / n
        total += term
        if abs(term) < abs(total) * 1e-15:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _upper_fraction(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) by Lentz's continued fraction (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        h *= step
        if abs(step - 1) < 1e-15:
            break
    return h * math.exp(-x + a * math.log(x) - math.lgamma(a))


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-squared with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError("a chi-squared distribution needs at least one degree of freedom")
    if statistic <= 0:
        return 1.0
    a, x = dof / 2, statistic / 2
    q = 1 - _lower_series(a, x) if x < a + 1 else _upper_fraction(a, x)
    return min(1.0, max(0.0, q))


@dataclass(frozen=True)
class Homogeneity:
    """Pearson's chi-squared test that two samples come from one distribution."""

    statistic: float
    dof: int
    """Cells (after pooling) minus one; 0 when everything fell in one cell."""
    p_value: float


def _pooled(cells: list[tuple[float, float]], share: float) -> list[tuple[float, float]]:
    """Merge the rarest cells until each expects ``MIN_EXPECTED`` in the smaller sample."""
    cells = sorted(cells, key=sum)
    while len(cells) > 1 and sum(cells[0]) * share < MIN_EXPECTED:
        (a1, b1), (a2, b2) = cells[0], cells[1]
        cells = sorted([(a1 + a2, b1 + b2), *cells[2:]], key=sum)
    return cells


def homogeneity(p: Mapping[str, float], q: Mapping[str, float]) -> Homogeneity | None:
    """The test on two count distributions (classes or histogram bins); None when a side is
    empty. Rare cells are pooled first (see ``MIN_EXPECTED``)."""
    n_p, n_q = sum(p.values()), sum(q.values())
    if n_p <= 0 or n_q <= 0:
        return None
    total = n_p + n_q
    cells = [(p.get(k, 0.0), q.get(k, 0.0)) for k in set(p) | set(q)]
    cells = _pooled([c for c in cells if sum(c) > 0], min(n_p, n_q) / total)
    if len(cells) < 2:
        return Homogeneity(0.0, 0, 1.0)
    statistic = 0.0
    for a, b in cells:
        row = a + b
        for observed, size in ((a, n_p), (b, n_q)):
            expected = row * size / total
            statistic += (observed - expected) ** 2 / expected
    dof = len(cells) - 1
    return Homogeneity(statistic, dof, chi2_sf(statistic, dof))
