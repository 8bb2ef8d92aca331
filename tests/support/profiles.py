"""Training profiles for the server's tests, built from training rows as an exporter would.

Also the training rows of the test models in ``tests/support/onnx_models.py`` (the same
generator calls with the same seeds), so that a profile describes what the model was fit on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.onnx_models import classifier_data, regressor_data

FORMAT = "modeldeploy.profile/v1"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def classifier_training_rows(n_features: int = 4, n_classes: int = 3, seed: int = 0) -> np.ndarray:
    """The rows ``onnx_models.make_classifier`` fits its forest on."""
    return classifier_data(n_features, n_classes, seed)[0]


def regressor_training_rows(n_features: int = 4, seed: int = 0) -> np.ndarray:
    """The rows ``onnx_models.make_regressor`` fits its linear regression on."""
    return regressor_data(n_features, seed)[0]


def histogram(values: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": edges.tolist(), "fractions": (counts / counts.sum()).tolist()}


def numeric_feature(name: str, column: int, values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    return {
        "name": name,
        "column": column,
        "kind": "numeric",
        "min": float(present.min()),
        "max": float(present.max()),
        "missing": float(np.isnan(values).mean()),
        "quantiles": {str(q): float(np.quantile(present, q)) for q in QUANTILES},
        "histogram": histogram(present),
    }


def categorical_feature(name: str, column: int, values: list[str]) -> dict[str, Any]:
    labels, counts = np.unique(np.array(values), return_counts=True)
    shares = counts / counts.sum()
    return {
        "name": name,
        "column": column,
        "kind": "categorical",
        "categories": {str(k): float(v) for k, v in zip(labels, shares, strict=True)},
        "missing": 0.0,
    }


def build_profile(
    rows: np.ndarray,
    model: Path | None = None,
    *,
    input_name: str = "X",
    sha256: str | None = None,
    prediction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A profile of numeric ``rows`` (features ``f0``, ``f1``...), predictions from ``model``.

    The prediction section is computed by running the model on the rows with onnxruntime:
    class shares of its ``label`` output, or a histogram of its only output.
    """
    if sha256 is None and model is not None:
        sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    if prediction is None and model is not None:
        prediction = predicted(model, rows, input_name)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "model": {"input": input_name, "rows": len(rows)},
        "features": [numeric_feature(f"f{j}", j, rows[:, j]) for j in range(rows.shape[1])],
    }
    if sha256 is not None:
        doc["model"]["sha256"] = sha256
    if prediction is not None:
        doc["prediction"] = prediction
    return doc


def predicted(model: Path, rows: np.ndarray, input_name: str = "X") -> dict[str, Any]:
    """The prediction section for ``model`` run on ``rows``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if "label" in outputs:
        labels = session.run(["label"], {input_name: rows})[0]
        values, counts = np.unique(labels, return_counts=True)
        classes = {str(v): float(c / counts.sum()) for v, c in zip(values, counts, strict=True)}
        return {"kind": "classification", "output": "label", "classes": classes}
    values = session.run([outputs[0]], {input_name: rows})[0].reshape(-1)
    return {"kind": "regression", "output": outputs[0], "histogram": histogram(values)}
