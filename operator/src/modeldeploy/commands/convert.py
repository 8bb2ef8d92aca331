"""scikit-learn -> ONNX for `modeldeploy export`: load, convert with skl2onnx, check with
onnxruntime against scikit-learn on the user's sample.

Every failure a user can cause (a file that is not a model, an estimator skl2onnx cannot
convert, a sample of the wrong width) raises `CommandError` with a message that names it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modeldeploy.commands import CommandError
from modeldeploy.commands.csvrows import data_rows

__all__ = [
    "Check",
    "Conversion",
    "check_against_sklearn",
    "convert",
    "load_estimator",
    "load_sample",
]

INPUT_NAME = "X"


def load_estimator(path: Path) -> Any:
    """A fitted scikit-learn estimator from a joblib or pickle file (which runs its code: only
    load files you trust)."""
    import joblib
    from sklearn.base import BaseEstimator

    if not path.is_file():
        raise CommandError(f"model file {path} does not exist")
    try:
        model = joblib.load(path)  # reads plain pickles (.pkl) too
    except Exception as error:  # unpickling can raise anything the pickled code raises
        raise CommandError(
            f"cannot read {path} as a joblib or pickle file: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(model, BaseEstimator):
        raise CommandError(
            f"{path} holds a {type(model).__module__}.{type(model).__qualname__}, not a "
            "scikit-learn estimator"
        )
    return model


def _parse_csv(path: Path) -> np.ndarray:
    rows = data_rows(path.read_text())
    values: list[list[float]] = []
    for number, row in enumerate(rows, start=1):
        try:
            values.append([float(cell) if cell.strip() else float("nan") for cell in row])
        except ValueError:
            raise CommandError(
                f"{path}: data row {number} has a value that is not a number: {row!r} "
                "(export takes numeric samples; empty cells are missing values)"
            ) from None
    widths = {len(row) for row in values}
    if len(widths) > 1:
        raise CommandError(f"{path}: rows have different numbers of columns: {sorted(widths)}")
    return np.array(values, dtype=np.float64)


def load_sample(path: Path) -> np.ndarray:
    """A 2-D numeric sample from .npy, .npz (the array named X, or the only one) or .csv."""
    if not path.is_file():
        raise CommandError(f"sample file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if "X" in names:
                    array = archive["X"]
                elif len(names) == 1:
                    array = archive[names[0]]
                else:
                    raise CommandError(
                        f"{path} holds several arrays ({', '.join(names)}): name the sample X"
                    )
        elif suffix == ".csv":
            array = _parse_csv(path)
        else:
            raise CommandError(f"sample {path}: unknown format {suffix!r} (use .npy, .npz or .csv)")
    except CommandError:
        raise
    except (OSError, ValueError) as error:
        raise CommandError(f"cannot read the sample {path}: {error}") from None
    if array.ndim == 1:
        raise CommandError(
            f"the sample {path} is one-dimensional {array.shape}: it must be rows by features "
            "(reshape a single feature with X.reshape(-1, 1))"
        )
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise CommandError(f"the sample {path} must be rows by features, got shape {array.shape}")
    if array.dtype.kind not in "iufb":
        raise CommandError(
            f"the sample {path} has {array.dtype} values: export takes numeric features "
            "(one float tensor input); encode categories inside the model (e.g. a Pipeline "
            "with OneHotEncoder) and pass numbers"
        )
    return array.astype(np.float64)


@dataclass
class Conversion:
    """The converted model and what it was converted from."""

    onnx_bytes: bytes
    estimator: str
    task: str  # "classification" | "regression"
    input_name: str
    width: int
    outputs: list[tuple[str, str, list[Any]]]  # (name, element type, shape)
    opset: int | None
    classes: list[Any] = field(default_factory=list)
    session: Any = field(default=None, repr=False, compare=False)
    """The onnxruntime session that loaded ``onnx_bytes`` (the check runs in it)."""


def _describe(model: Any) -> str:
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return "Pipeline(" + ", ".join(type(step).__name__ for _, step in model.steps) + ")"
    return type(model).__name__


def convert(model: Any, width: int, *, name: str, opset: int | None) -> Conversion:
    """Convert with one float input ``X`` [None, width]; classifiers without ZipMap."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier, is_regressor

    described = _describe(model)
    if is_classifier(model):
        task = "classification"
        options: dict[Any, Any] | None = {id(model): {"zipmap": False}}
    elif is_regressor(model):
        task, options = "regression", None
    else:
        raise CommandError(
            f"{described} is neither a classifier nor a regressor: modeldeploy export "
            "converts models that predict (classification or regression)"
        )
    expected = getattr(model, "n_features_in_", None)
    if expected is not None and expected != width:
        raise CommandError(
            f"the sample has {width} columns but {described} was fitted on {expected} features"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = convert_sklearn(
                model,
                name=name,
                initial_types=[(INPUT_NAME, FloatTensorType([None, width]))],
                options=options,
                target_opset=opset,
            )
    except Exception as error:  # skl2onnx raises many types; all mean "cannot convert"
        raise CommandError(_conversion_error(described, error)) from None
    import onnxruntime as ort

    onnx_bytes = onx.SerializeToString()
    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise CommandError(
            f"onnxruntime cannot load the converted {described} (opset {opset}): {error}"
        ) from None
    outputs = [(o.name, o.type, list(o.shape)) for o in session.get_outputs()]
    if task == "classification" and (len(outputs) < 1 or "seq" in outputs[-1][1]):
        raise CommandError(f"the converted {described} has no plain probability tensor")
    return Conversion(
        onnx_bytes=onnx_bytes,
        estimator=described,
        task=task,
        input_name=INPUT_NAME,
        width=width,
        outputs=outputs,
        opset=opset,
        classes=list(getattr(model, "classes_", [])),
        session=session,
    )


def _conversion_error(described: str, error: Exception) -> str:
    text = str(error)
    missing = re.search(r"type '<class '([^']+)'>'", text)
    if missing:
        qualified = missing.group(1)
        short = qualified.rsplit(".", 1)[-1]
        return (
            f"skl2onnx cannot convert {short} ({qualified}) in {described}: it has no ONNX "
            "converter for that estimator; use a supported one (see the skl2onnx list of "
            "supported scikit-learn models) or register a custom converter"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return f"skl2onnx cannot convert {described}: {type(error).__name__}: {first}"


@dataclass
class Check:
    """The ONNX model's answers next to scikit-learn's on the sample."""

    rows: int
    labels_equal: int | None = None  # classification: rows with the same label
    mismatched_rows: list[int] = field(default_factory=list)
    scores_name: str | None = None  # "probabilities" | "predictions"
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    tolerance: float = 0.0
    rtol: float = 0.0
    within_tolerance: bool = True
    note: str | None = None
    onnx_labels: np.ndarray | None = None
    onnx_values: np.ndarray | None = None

    @property
    def passed(self) -> bool:
        return not self.mismatched_rows and self.within_tolerance


def _sklearn_call(method: Any, sample: np.ndarray, what: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "X does not have valid feature names"
            return np.asarray(method(sample))
    except Exception as error:
        raise CommandError(
            f"scikit-learn could not compute {what} on the sample: {error}"
        ) from None


def check_against_sklearn(
    model: Any, conversion: Conversion, sample: np.ndarray, *, tolerance: float, rtol: float
) -> Check:
    """Run both on the sample (as float32, what the ONNX model receives) and compare."""
    x32 = sample.astype(np.float32)
    session = conversion.session
    if session is None:
        import onnxruntime as ort

        session = ort.InferenceSession(conversion.onnx_bytes, providers=["CPUExecutionProvider"])
    try:
        results = session.run(None, {conversion.input_name: x32})
    except Exception as error:
        raise CommandError(f"onnxruntime could not run the converted model: {error}") from None
    check = Check(rows=len(sample), tolerance=tolerance, rtol=rtol)
    # The estimator sees the float32 values too, so both start from identical inputs.
    x_sklearn = x32.astype(np.float64)
    if conversion.task == "classification":
        expected = _sklearn_call(model.predict, x_sklearn, "predictions")
        labels = np.asarray(results[0]).ravel()
        check.onnx_labels = labels
        same = _same_labels(expected.ravel(), labels)
        check.labels_equal = int(same.sum())
        check.mismatched_rows = [int(i) for i in np.flatnonzero(~same)]
        if hasattr(model, "predict_proba") and len(results) > 1:
            proba = _sklearn_call(model.predict_proba, x_sklearn, "probabilities")
            _compare(check, "probabilities", proba, np.asarray(results[1]))
        else:
            check.note = "scores not compared: the estimator has no predict_proba"
    else:
        expected = _sklearn_call(model.predict, x_sklearn, "predictions")
        values = np.asarray(results[0])
        check.onnx_values = values
        _compare(check, "predictions", expected, values)
    return check


def _same_labels(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    if expected.dtype.kind in "iufb" and actual.dtype.kind in "iufb":
        return np.asarray(expected.astype(np.float64) == actual.astype(np.float64))
    return np.asarray(expected.astype(str) == actual.astype(str))


def _compare(check: Check, what: str, expected: np.ndarray, actual: np.ndarray) -> None:
    check.scores_name = what
    expected = expected.astype(np.float64).reshape(len(expected), -1)
    actual = actual.astype(np.float64).reshape(len(actual), -1)
    if expected.shape != actual.shape:
        check.within_tolerance = False
        check.note = f"{what}: scikit-learn gives shape {expected.shape}, ONNX {actual.shape}"
        return
    error = np.abs(expected - actual)
    check.max_abs_error = float(error.max(initial=0.0))
    scale = np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    check.max_rel_error = float((error / scale).max(initial=0.0))
    check.within_tolerance = bool(np.all(error <= check.tolerance + check.rtol * np.abs(expected)))
