"""Paired evaluation of a shadowed canary: how often its answers agree with the stable
model's on the same mirrored rows, overall and per slice of the training profile. Pure.

The stable pods count the rows they compared (``modeldeploy_shadow_rows_total``, and per
slice ``modeldeploy_shadow_slice_rows_total{feature,bin}``) and those where the canary
disagreed; a slice is one histogram bin of one feature of the profile. ``analysis`` reads
the counts; this module turns them into agreements and says where the canary is worst.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Slice", "agreement", "describe_disagreement", "slices", "worst_slice"]

Labelled = Iterable[tuple[dict[str, str], float]]
"""(labels, count) per series, as an instant query answers."""


def agreement(rows: float, disagreements: float) -> float | None:
    """1 - disagreements / rows, within [0, 1]; None without rows. (The two counters are
    scraped together but not atomically, so a count may briefly run ahead of the other.)"""
    if rows <= 0:
        return None
    return min(1.0, max(0.0, 1.0 - disagreements / rows))


@dataclass(frozen=True)
class Slice:
    """The mirrored rows whose ``feature`` fell in ``bin``."""

    feature: str
    bin: str
    rows: float
    disagreements: float

    @property
    def agreement(self) -> float:
        return agreement(self.rows, self.disagreements) or 0.0

    @property
    def where(self) -> str:
        """'petal_length in [4.7, 5.1)' for a numeric bin, 'city = Paris' for a category."""
        interval = self.bin[:1] in "[(" and self.bin[-1:] in ")]"
        return f"{self.feature} {'in' if interval else '='} {self.bin}"


def slices(rows: Labelled, disagreements: Labelled) -> list[Slice]:
    """The slices that saw rows, each with its disagreements (none counted: 0)."""
    against = {_key(labels): count for labels, count in disagreements}
    found = [
        Slice(*_key(labels), count, against.get(_key(labels), 0.0))
        for labels, count in rows
        if count > 0
    ]
    return sorted(found, key=lambda s: (s.feature, s.bin))


def _key(labels: dict[str, str]) -> tuple[str, str]:
    return labels.get("feature", ""), labels.get("bin", "")


def worst_slice(found: Iterable[Slice], min_rows: int) -> Slice | None:
    """The slice with the lowest agreement among those with at least ``min_rows`` rows (of
    equal agreements, the one with the most rows: the stronger evidence)."""
    judged = [s for s in found if s.rows >= max(min_rows, 1)]
    return min(judged, key=lambda s: (s.agreement, -s.rows), default=None)


def describe_disagreement(
    canary: str, stable: str, rows: float, disagreements: float, where: str = ""
) -> str:
    """'v2 disagrees with v1 on 9.1% of rows where petal_length in [4.7, 5.1) (312 rows)',
    or overall: 'v2 disagrees with v1 on 1.2% of 5000 rows'."""
    share = 100 * (1 - (agreement(rows, disagreements) or 0.0)) if rows > 0 else 0.0
    said = f"{canary} disagrees with {stable} on {share:.1f}% of"
    if where:
        return f"{said} rows where {where} ({rows:.0f} rows)"
    return f"{said} {rows:.0f} rows"
