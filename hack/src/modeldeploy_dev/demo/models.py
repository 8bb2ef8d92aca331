"""The demo's models: scikit-learn pipelines trained on the iris data set (bundled with
scikit-learn, nothing downloaded), saved as a data scientist hands them over."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLASSES = ("setosa", "versicolor", "virginica")
QUESTION = [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]]
"""Three flowers to ask the served model about: one of each species."""


@dataclass
class Trained:
    """A fitted model saved with joblib, its sample, and what it scored."""

    model_file: Path
    sample_file: Path
    description: str
    accuracy: float
    rows_by_class: list[list[list[float]]]


def train(directory: Path, version: int) -> Trained:
    """Fit ``StandardScaler + LogisticRegression`` on iris; version 2 is retrained on a
    bootstrap resample with a little less regularisation: a different model file that
    should predict as well, which the canary analysis is there to confirm."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    if version == 1:
        fit_X, fit_y, regularisation = X, y, 1.0
    else:
        picked = np.random.default_rng(version).choice(len(X), size=len(X), replace=True)
        fit_X, fit_y, regularisation = X[picked], y[picked], 2.0
    model: Any = make_pipeline(
        StandardScaler(), LogisticRegression(C=regularisation, max_iter=1000)
    ).fit(fit_X, fit_y)
    directory.mkdir(parents=True, exist_ok=True)
    model_file = directory / "model.joblib"
    sample_file = directory / "sample.npy"
    joblib.dump(model, model_file)
    np.save(sample_file, X)
    accuracy = float((model.predict(X) == y).mean())
    data = "150 iris flowers" if version == 1 else "a resample of the 150 iris flowers"
    return Trained(
        model_file=model_file,
        sample_file=sample_file,
        description=f"Pipeline(StandardScaler, LogisticRegression(C={regularisation:g})) "
        f"fitted on {data}",
        accuracy=accuracy,
        rows_by_class=[X[y == k].tolist() for k in range(len(CLASSES))],
    )
