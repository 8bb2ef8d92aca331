"""Paired evaluation: the stable and the canary answered the same rows; where do they differ?

Pure functions on numpy arrays, no I/O:

- ``pairing_spec``: which outputs to compare (a classifier's label and, if it has them, its
  class probabilities; a regressor's value);
- ``compare_classifications`` / ``compare_regressions``: per row, whether the two answers
  disagree and by how much;
- ``ProfileSlices``: per feature of the training profile, the histogram bin of each row, so
  that disagreements can be counted where they happen (``petal_length in [4.7, 5.1)``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .codec.datatypes import FLOAT_DATATYPES
from .predictions import ClassCounter, prediction_recorder
from .profile import CategoricalFeature, NumericFeature, Prediction, Profile
from .tensors import TensorSpec

MISSING_BIN = "missing"
UNSEEN_BIN = "unseen"


@dataclass(frozen=True)
class PairingSpec:
    """The outputs compared, and how."""

    kind: Literal["classification", "regression"]
    output: str
    """The label (classification) or the value (regression)."""
    probabilities: str | None = None
    """A classifier's per-class probabilities ([rows, classes] floats), if it has them."""

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,) if self.probabilities is None else (self.output, self.probabilities)


def pairing_spec(outputs: list[TensorSpec], profiled: Prediction | None) -> PairingSpec | None:
    """What to compare for a model with these outputs (None: nothing comparable)."""
    recorder = prediction_recorder(outputs, profiled)
    if recorder is None:
        return None
    if not isinstance(recorder, ClassCounter):
        return PairingSpec("regression", recorder.output)
    candidates = [
        spec
        for spec in outputs
        if spec.name != recorder.output
        and spec.datatype in FLOAT_DATATYPES
        and len(spec.shape) == 2
    ]
    named = [spec for spec in candidates if "prob" in spec.name.lower()]
    chosen = (named or candidates)[0].name if candidates else None
    return PairingSpec("classification", recorder.output, chosen)


@dataclass(frozen=True)
class RowComparison:
    """Per row: whether the answers disagree, and the size of the difference."""

    disagree: np.ndarray
    """bool [rows]"""
    probability_difference: np.ndarray | None = None
    """classifiers: the largest absolute difference in any class's probability"""
    abs_error: np.ndarray | None = None
    """regressors: |canary - stable| (the largest over targets)"""
    relative_error: np.ndarray | None = None
    """regressors: |canary - stable| / max(|stable|, |canary|), in [0, 2]; 0 when both are 0"""

    @property
    def rows(self) -> int:
        return len(self.disagree)


def _per_row(array: np.ndarray, rows: int, what: str) -> np.ndarray:
    if (array.shape[0] if array.ndim else 1) != rows:
        raise ValueError(f"{what}: {rows} rows from the stable, {array.shape} from the canary")
    return array.reshape(rows, -1) if rows else array.reshape(0, 1)


def compare_classifications(
    stable_labels: np.ndarray,
    canary_labels: np.ndarray,
    stable_probabilities: np.ndarray | None = None,
    canary_probabilities: np.ndarray | None = None,
) -> RowComparison:
    """Label agreement row by row, and the largest class-probability difference."""
    rows = stable_labels.shape[0] if stable_labels.ndim else 1
    stable = _per_row(stable_labels, rows, "labels")
    canary = _per_row(canary_labels, rows, "labels")
    if stable.shape != canary.shape:
        raise ValueError(f"label shapes differ: stable {stable.shape}, canary {canary.shape}")
    disagree = (stable != canary).any(axis=1)
    difference = None
    if stable_probabilities is not None and canary_probabilities is not None:
        p_stable = _per_row(stable_probabilities, rows, "probabilities").astype(np.float64)
        p_canary = _per_row(canary_probabilities, rows, "probabilities").astype(np.float64)
        if p_stable.shape == p_canary.shape and p_stable.shape[1]:
            difference = np.abs(p_canary - p_stable).max(axis=1)
    return RowComparison(disagree, probability_difference=difference)


def compare_regressions(
    stable_values: np.ndarray, canary_values: np.ndarray, tolerance: float
) -> RowComparison:
    """Absolute and relative error per row; a row disagrees above ``tolerance`` (relative)."""
    rows = stable_values.shape[0] if stable_values.ndim else 1
    stable = _per_row(stable_values, rows, "values").astype(np.float64)
    canary = _per_row(canary_values, rows, "values").astype(np.float64)
    if stable.shape != canary.shape:
        raise ValueError(f"value shapes differ: stable {stable.shape}, canary {canary.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(canary - stable)
        scale = np.maximum(np.abs(stable), np.abs(canary))
        relative = np.where(scale > 0, error / scale, 0.0)
    # NaN on both sides is agreement; on one side only, the largest difference there is.
    stable_nan, canary_nan = np.isnan(stable), np.isnan(canary)
    error[stable_nan & canary_nan] = 0.0
    relative[stable_nan & canary_nan] = 0.0
    error[stable_nan ^ canary_nan] = np.inf
    relative[stable_nan ^ canary_nan] = 2.0
    error, relative = error.max(axis=1), relative.max(axis=1)
    return RowComparison(relative > tolerance, abs_error=error, relative_error=relative)


def _number(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    return "0" if text == "-0" else text


def bin_labels(edges: tuple[float, ...] | list[float]) -> list[str]:
    """``[a, b)`` per bin, the last one ``[a, b]``, with as few digits as keep them apart;
    then ``< first``, ``> last`` and ``missing`` (the bins ``numeric_bins`` also returns)."""
    for digits in range(3, 18):
        shown = [_number(edge, digits) for edge in edges]
        if len(set(shown)) == len(shown):
            break
    labels = [f"[{low}, {high})" for low, high in itertools.pairwise(shown)]
    labels[-1] = labels[-1][:-1] + "]"
    return [*labels, f"< {shown[0]}", f"> {shown[-1]}", MISSING_BIN]


def numeric_bins(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index into ``bin_labels(edges)`` of each value: its histogram bin (the last closed),
    or below, above, missing."""
    bins = len(edges) - 1
    values = values.astype(np.float64, copy=False)
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = bins - 1
    index[values < edges[0]] = bins
    index[values > edges[-1]] = bins + 1
    index[np.isnan(values)] = bins + 2
    return index.astype(np.intp)


def categorical_bins(categories: list[str], values: np.ndarray) -> np.ndarray:
    """Index into ``[*categories, "unseen", "missing"]`` of each value."""
    lookup = {category: i for i, category in enumerate(categories)}
    unseen, missing = len(categories), len(categories) + 1
    result = np.empty(len(values), dtype=np.intp)
    for row, item in enumerate(values.tolist()):
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace")
        elif isinstance(item, float):
            if item != item:
                result[row] = missing
                continue
            item = f"{item:g}"
        text = str(item)
        result[row] = lookup.get(text, missing if text == "" and "" not in lookup else unseen)
    return result


@dataclass(frozen=True)
class _Slice:
    name: str
    column: int
    labels: list[str]
    edges: np.ndarray | None  # numeric features
    categories: list[str] | None  # categorical features


class ProfileSlices:
    """The slices of a training profile: per feature, its histogram bins (or categories)."""

    def __init__(self, profile: Profile) -> None:
        self.input = profile.input
        self.features: list[_Slice] = []
        for feature in profile.features:
            if isinstance(feature, NumericFeature):
                edges = feature.histogram.edges
                self.features.append(
                    _Slice(feature.name, feature.column, bin_labels(edges), np.array(edges), None)
                )
            elif isinstance(feature, CategoricalFeature):
                categories = list(feature.categories)
                labels = [*categories, UNSEEN_BIN, MISSING_BIN]
                self.features.append(_Slice(feature.name, feature.column, labels, None, categories))
        self.max_column = max(f.column for f in self.features)

    def assign(self, rows: np.ndarray) -> list[tuple[str, list[str], np.ndarray]] | None:
        """(feature, bin labels, bin index per row) per feature; None when ``rows`` is not
        shaped [rows, columns] with every profiled column."""
        if rows.ndim != 2 or rows.shape[1] <= self.max_column:
            return None
        result = []
        for feature in self.features:
            column = rows[:, feature.column]
            if feature.edges is not None:
                index = numeric_bins(feature.edges, column)
            else:
                assert feature.categories is not None
                index = categorical_bins(feature.categories, column)
            result.append((feature.name, feature.labels, index))
        return result


def count_by_slice(
    assigned: list[tuple[str, list[str], np.ndarray]], disagree: np.ndarray
) -> list[tuple[str, str, int, int]]:
    """(feature, bin, rows, disagreements) for every bin that has rows."""
    counts = []
    weights = disagree.astype(np.int64)
    for feature, labels, index in assigned:
        rows = np.bincount(index, minlength=len(labels))
        wrong = np.bincount(index, weights=weights, minlength=len(labels))
        for position in np.flatnonzero(rows).tolist():
            counts.append((feature, labels[position], int(rows[position]), int(wrong[position])))
    return counts
