"""What a model answers: predicted labels counted (classifiers), values bucketed (regressors).

A classifier is a model with an integer or string output holding one value per row (the
profile may name it; otherwise one whose name contains "label" is preferred, as skl2onnx
names it). A regressor is a model whose only output is a float with one value per row, or
whose profile names a float output (every value of a multi-target output is bucketed).
Both are recorded with numpy on the whole request; a single-row request takes a scalar path.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import numpy as np

from .codec.datatypes import FLOAT_DATATYPES, INTEGER_DATATYPES
from .errors import ModelLoadError
from .profile import Prediction
from .tensors import TensorSpec

MAX_CLASSES = 100
"""Distinct predicted labels counted per worker; further ones are counted as ``OTHER_CLASS``."""
OTHER_CLASS = "__other__"
SMALL_LABELS = 1024
"""Integer labels below this are counted with a bincount."""
DEFAULT_PREDICTION_BUCKETS: tuple[float, ...] = (
    -1e4, -1e3, -100.0, -10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4,
)  # fmt: skip
"""Buckets of ``modeldeploy_prediction_value`` when no profile gives the training edges."""
LABEL_DATATYPES = INTEGER_DATATYPES | {"BYTES"}


class ClassCounter:
    """Predicted labels of a classifier, counted per label."""

    kind = "classification"

    def __init__(self, output: str, classes: list[str] | None = None) -> None:
        self.output = output
        self.classes = list(classes or [])
        self.counts: dict[object, int] = {}

    def observe(self, labels: np.ndarray) -> None:
        """Count the labels of one request."""
        if labels.size == 1:
            self._add(labels.item(), 1)
            return
        flat = labels.reshape(-1)
        if flat.dtype.kind in "iu" and flat.min() >= 0 and flat.max() < SMALL_LABELS:
            counts = np.bincount(flat.astype(np.intp, copy=False))  # cheaper than sorting
            for value in np.flatnonzero(counts).tolist():
                self._add(value, int(counts[value]))
            return
        try:
            values, counts = np.unique(flat, return_counts=True)
        except TypeError:  # str and bytes together cannot be sorted
            for value in flat.tolist():
                self._add(value, 1)
            return
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            self._add(value, count)

    def _add(self, label: object, count: int) -> None:
        counts = self.counts
        if label not in counts and len(counts) >= MAX_CLASSES:
            label = OTHER_CLASS  # bounded label values, whatever the model answers
        counts[label] = counts.get(label, 0) + count

    def snapshot(self) -> list[tuple[str, int]]:
        """(label, count) pairs; the profile's classes are listed even when never predicted."""
        merged = dict.fromkeys(self.classes, 0)
        for label, count in self.counts.items():
            key = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            merged[key] = merged.get(key, 0) + count
        return sorted(merged.items())


class ValueHistogram:
    """Predicted values of a regressor in Prometheus buckets (inclusive upper bounds)."""

    kind = "regression"

    def __init__(self, output: str, bounds: tuple[float, ...]) -> None:
        self.output = output
        self.bounds = bounds
        self._bounds = np.array(bounds, dtype=np.float64)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self.total = 0.0

    def observe(self, values: np.ndarray) -> None:
        """Bucket the predictions of one request (NaN and infinities are left out)."""
        if values.size == 1:
            value = float(values.item())
            if value - value == 0.0:  # finite
                self.counts[bisect_left(self.bounds, value)] += 1
                self.total += value
            return
        flat = values.reshape(-1).astype(np.float64, copy=False)
        flat = flat[np.isfinite(flat)]
        self.counts += np.bincount(
            np.searchsorted(self._bounds, flat, side="left"), minlength=len(self.counts)
        )
        self.total += float(flat.sum())

    def snapshot(self) -> tuple[tuple[float, ...], list[int], float]:
        """(bounds, non-cumulative counts with +Inf last, sum)."""
        return self.bounds, self.counts.tolist(), self.total


Recorder = ClassCounter | ValueHistogram


def _one_per_row(spec: TensorSpec) -> bool:
    return len(spec.shape) == 1 or (len(spec.shape) == 2 and spec.shape[1] == 1)


def prediction_recorder(outputs: list[TensorSpec], profiled: Prediction | None) -> Recorder | None:
    """The recorder that fits the model's outputs (and the profile's prediction, if any)."""
    if profiled is not None:
        specs = {spec.name: spec for spec in outputs}
        spec = specs.get(profiled.output)
        if spec is None:
            raise ModelLoadError(
                f"profile prediction.output '{profiled.output}' is not an output of the model; "
                f"its outputs are {list(specs)}"
            )
        if profiled.kind == "classification":
            if spec.datatype not in LABEL_DATATYPES or not _one_per_row(spec):
                raise ModelLoadError(
                    f"profile prediction.output '{spec.name}' is a classification output, but "
                    f"the model's is {spec.datatype} {list(spec.shape)}: expected one integer "
                    "or string label per row"
                )
            return ClassCounter(spec.name, list(profiled.classes or {}))
        if spec.datatype not in FLOAT_DATATYPES:  # several targets share one histogram
            raise ModelLoadError(
                f"profile prediction.output '{spec.name}' is a regression output, but the "
                f"model's is {spec.datatype} {list(spec.shape)}: expected floats"
            )
        assert profiled.histogram is not None
        return ValueHistogram(spec.name, profiled.histogram.edges)
    labels = [s for s in outputs if s.datatype in LABEL_DATATYPES and _one_per_row(s)]
    if labels:
        named = [s for s in labels if "label" in s.name.lower()]
        return ClassCounter((named or labels)[0].name)
    if len(outputs) == 1 and outputs[0].datatype in FLOAT_DATATYPES and _one_per_row(outputs[0]):
        return ValueHistogram(outputs[0].name, DEFAULT_PREDICTION_BUCKETS)
    return None


def describe(recorder: Recorder | None) -> dict[str, Any] | None:
    """For the "model ready" log line."""
    if recorder is None:
        return None
    return {"kind": recorder.kind, "output": recorder.output}
