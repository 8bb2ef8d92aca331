"""Models exported as a user exports them: saved with joblib, converted by the real
``modeldeploy export`` with a sample of the training rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np

from modeldeploy.cli import main as modeldeploy


def export(estimator: Any, sample: Any, directory: Path) -> tuple[Path, Path]:
    """Save ``estimator`` and export it with the CLI: (model.onnx, model.profile.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, directory / "model.joblib")
    np.save(directory / "sample.npy", np.asarray(sample))
    code = modeldeploy(
        ["export", str(directory / "model.joblib"), "--sample", str(directory / "sample.npy"),
         "--output", str(directory / "model.onnx")]
    )  # fmt: skip
    assert code == 0
    return directory / "model.onnx", directory / "model.profile.json"
