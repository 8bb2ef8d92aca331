"""The training profile: what the inputs and the model's outputs looked like on the sample.

Pure numpy, no scikit-learn or ONNX: `modeldeploy export` computes a profile from the sample
it checked the model on, and the serving side compares live requests against it. The format
(``modeldeploy.profile/v1``) is documented in docs/profile.md; every number is a plain JSON
float, every fraction sums to 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "BINS",
    "FORMAT",
    "QUANTILES",
    "ProfileError",
    "classification_profile",
    "feature_profile",
    "histogram",
    "regression_profile",
    "training_profile",
]

FORMAT = "modeldeploy.profile/v1"
BINS = 10
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class ProfileError(ValueError):
    """The sample cannot be profiled (a column with no value, infinities, wrong shape)."""


def histogram(values: np.ndarray) -> dict[str, list[float]]:
    """``BINS`` equal-width bins from the smallest to the largest value (both included).

    A constant column has no width to split: its bins span ``[v - 0.5, v + 0.5]`` instead, so
    the edges still increase strictly and all the mass falls in the middle bin.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ProfileError("no values to build a histogram from")
    low, high = float(values.min()), float(values.max())
    if not high > low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, BINS + 1)
    if not np.all(np.diff(edges) > 0):  # values so large that 1.0 is below their resolution
        raise ProfileError(f"values around {low:g} are too large for {BINS} distinct bins")
    counts, _ = np.histogram(values, bins=edges)
    return {
        "edges": [float(edge) for edge in edges],
        "fractions": [float(count) / values.size for count in counts],
    }


def _is_missing(column: np.ndarray) -> np.ndarray:
    if column.dtype.kind in "fc":
        return np.isnan(column)
    if column.dtype.kind == "O":
        return np.array(
            [value is None or (isinstance(value, float) and math.isnan(value)) for value in column],
            dtype=bool,
        )
    return np.zeros(column.shape, dtype=bool)


def feature_profile(column: np.ndarray, *, name: str, index: int) -> dict[str, Any]:
    """One input column: numeric (range, quantiles, histogram) or categorical (frequencies).

    Numeric columns are those of a numeric dtype, or object columns whose values are all
    numbers; strings (and booleans in an object column) make a column categorical. ``missing``
    is the share of NaN (or None) among all rows; every other figure is over the present rows.
    """
    column = np.asarray(column)
    if column.ndim != 1:
        raise ProfileError(f"feature {name!r}: expected one column, got shape {column.shape}")
    missing = _is_missing(column)
    present = column[~missing]
    if present.size == 0:
        raise ProfileError(
            f"feature {name!r} (column {index}) is missing in every row of the sample: the "
            "profile needs at least one value"
        )
    share_missing = float(missing.sum()) / column.size
    if column.dtype.kind == "O" and all(
        isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)
        for value in present
    ):
        present = present.astype(np.float64)
    if present.dtype.kind in "iufb":
        numbers = present.astype(np.float64)
        if not np.all(np.isfinite(numbers)):
            raise ProfileError(
                f"feature {name!r} (column {index}) has infinite values: replace them (or mark "
                "them missing with NaN) before exporting"
            )
        quantiles = np.quantile(numbers, QUANTILES)
        return {
            "name": name,
            "column": index,
            "kind": "numeric",
            "min": float(numbers.min()),
            "max": float(numbers.max()),
            "missing": share_missing,
            "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
            "histogram": histogram(numbers),
        }
    return {
        "name": name,
        "column": index,
        "kind": "categorical",
        "categories": _frequencies([str(value) for value in present]),
        "missing": share_missing,
    }


def _frequencies(labels: Sequence[str], known: Sequence[str] = ()) -> dict[str, float]:
    """Share of each label, most frequent first; ``known`` labels appear even at 0."""
    counts: dict[str, int] = dict.fromkeys(known, 0)
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    total = len(labels)
    if total == 0:
        raise ProfileError("no predictions to count")
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {label: count / total for label, count in ordered}


def classification_profile(
    output: str, labels: np.ndarray, classes: Sequence[str] = ()
) -> dict[str, Any]:
    """Frequencies of the model's predicted labels (as strings); ``classes`` never predicted
    on the sample are listed with 0."""
    names = [str(label) for label in np.asarray(labels).ravel()]
    return {
        "kind": "classification",
        "output": output,
        "classes": _frequencies(names, [str(c) for c in classes]),
    }


def regression_profile(output: str, values: np.ndarray) -> dict[str, Any]:
    """A histogram of the model's outputs (all output values together for several targets)."""
    numbers = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(numbers)):
        raise ProfileError(f"the model's output {output!r} has NaN or infinite values")
    return {"kind": "regression", "output": output, "histogram": histogram(numbers)}


def training_profile(
    sample: np.ndarray,
    *,
    model_sha256: str,
    input_name: str,
    prediction: dict[str, Any],
    feature_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The whole profile of a 2-D sample (rows by features) and the model's outputs on it."""
    sample = np.asarray(sample)
    if sample.ndim != 2 or sample.shape[0] == 0:
        raise ProfileError(f"the sample must be rows by features, got shape {sample.shape}")
    width = sample.shape[1]
    names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(width)]
    if len(names) != width:
        raise ProfileError(f"{len(names)} feature names for {width} columns")
    return {
        "format": FORMAT,
        "model": {"sha256": model_sha256, "input": input_name, "rows": int(sample.shape[0])},
        "features": [
            feature_profile(sample[:, index], name=str(name), index=index)
            for index, name in enumerate(names)
        ],
        "prediction": prediction,
    }
