"""`modeldeploy export` through the real CLI: real scikit-learn models, real skl2onnx, real
onnxruntime; files, printed report, exit codes."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modeldeploy.api import ModelDeployment
from modeldeploy.cli import main
from modeldeploy.commands.export import profile_path_for

ROWS, WIDTH = 120, 5


def classification_data(classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=ROWS, n_features=WIDTH, n_informative=3, n_redundant=0,
        n_classes=classes, random_state=0,
    )  # fmt: skip
    return X, y


def regression_data() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(n_samples=ROWS, n_features=WIDTH, noise=5.0, random_state=0)
    return X, y * 100  # outputs far from 0: the relative tolerance matters


CLASSIFIERS: dict[str, Callable[[], Any]] = {
    "pipeline-scaler-logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
    "random-forest": lambda: RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0),
    "gradient-boosting": lambda: GradientBoostingClassifier(n_estimators=20, random_state=0),
    "logistic-regression": lambda: LogisticRegression(max_iter=500),
}
REGRESSORS: dict[str, Callable[[], Any]] = {
    "gradient-boosting-regressor": lambda: GradientBoostingRegressor(
        n_estimators=20, random_state=0
    ),
    "ridge": lambda: Ridge(alpha=1.0),
}


def save(tmp_path: Path, model: Any, name: str = "model.joblib") -> Path:
    path = tmp_path / name
    joblib.dump(model, path)
    return path


def export(tmp_path: Path, model_file: Path, sample: Path, *extra: str) -> tuple[int, Path]:
    output = tmp_path / "out" / "model.onnx"
    code = main(["export", str(model_file), "--sample", str(sample), "--output", str(output),
                 *extra])  # fmt: skip
    return code, output


def snippet_of(text: str) -> dict[str, Any]:
    body = text.split("kubectl apply -f - <<'EOF'\n", 1)[1].split("# EOF", 1)[0]
    loaded: dict[str, Any] = yaml.safe_load(body)
    return loaded


def check_outputs(output: Path, printed: str, sample: np.ndarray) -> dict[str, Any]:
    """What every successful export leaves: files, sums, a valid snippet, a runnable model."""
    model_sha = hashlib.sha256(output.read_bytes()).hexdigest()
    profile_path = output.with_name("model.profile.json")
    profile_bytes = profile_path.read_bytes()
    profile_sha = hashlib.sha256(profile_bytes).hexdigest()
    assert f"sha256 {model_sha}" in printed
    assert f"sha256 {profile_sha}" in printed
    manifest = snippet_of(printed)
    parsed = ModelDeployment.model_validate(manifest)
    assert parsed.spec.model.sha256 == model_sha
    assert manifest["spec"]["model"]["profile"]["sha256"] == profile_sha
    profile: dict[str, Any] = json.loads(profile_bytes)
    assert profile["model"] == {"sha256": model_sha, "input": "X", "rows": len(sample)}
    assert len(profile["features"]) == sample.shape[1]
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (tensor,) = session.get_inputs()
    assert (tensor.name, tensor.type, tensor.shape[1]) == ("X", "tensor(float)", sample.shape[1])
    return profile


@pytest.mark.parametrize("kind", CLASSIFIERS)
def test_classifier_exports_checked_with_labels_and_probabilities(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = classification_data()
    model = CLASSIFIERS[kind]().fit(X, y)
    np.save(tmp_path / "X.npy", X)
    code, output = export(tmp_path, save(tmp_path, model), tmp_path / "X.npy")
    captured = capsys.readouterr()
    assert code == 0, captured
    printed = captured.out
    assert f"labels         {ROWS}/{ROWS} identical  OK" in printed
    error = re.search(r"probabilities  max abs error (\S+),", printed)
    assert error and float(error.group(1)) <= 1e-4, printed
    profile = check_outputs(output, printed, X)
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {"X": X.astype(np.float32)})
    assert probabilities.shape == (ROWS, 3)  # a plain tensor: no ZipMap
    assert (labels == model.predict(X.astype(np.float32).astype(np.float64))).all()
    # The profile counts the model's predictions, not the training labels.
    predicted = {str(c): float(np.mean(labels == c)) for c in (0, 1, 2)}
    assert profile["prediction"] == {"kind": "classification", "output": "label",
                                     "classes": pytest.approx(predicted)}  # fmt: skip


@pytest.mark.parametrize("kind", REGRESSORS)
def test_regressor_exports_checked_within_tolerance_with_an_output_histogram(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = regression_data()
    model = REGRESSORS[kind]().fit(X, y)
    np.save(tmp_path / "X.npy", X)
    code, output = export(tmp_path, save(tmp_path, model), tmp_path / "X.npy")
    captured = capsys.readouterr()
    assert code == 0, captured
    printed = captured.out
    assert re.search(r"predictions\s+max abs error \S+, max rel error \S+ \(tolerance", printed)
    assert "labels" not in printed
    profile = check_outputs(output, printed, X)
    prediction = profile["prediction"]
    assert prediction["kind"] == "regression" and prediction["output"] == "variable"
    predicted = model.predict(X.astype(np.float32).astype(np.float64))
    edges = prediction["histogram"]["edges"]
    assert edges[0] == pytest.approx(predicted.min(), rel=1e-4)
    assert edges[-1] == pytest.approx(predicted.max(), rel=1e-4)


def test_string_labels_and_feature_names_come_from_the_estimator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    X, y = classification_data(classes=2)
    frame = pd.DataFrame(X, columns=[f"col_{i}" for i in range(WIDTH)])
    labels = np.where(y == 1, "spam", "ham")
    model = LogisticRegression().fit(frame, labels)
    (tmp_path / "X.csv").write_text(frame.to_csv(index=False))
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))  # a plain pickle, not joblib's
    code, output = export(tmp_path, tmp_path / "model.pkl", tmp_path / "X.csv")
    captured = capsys.readouterr()
    assert code == 0, captured
    printed = captured.out
    profile = check_outputs(output, printed, X)
    assert [f["name"] for f in profile["features"]] == [f"col_{i}" for i in range(WIDTH)]
    assert set(profile["prediction"]["classes"]) == {"ham", "spam"}


def test_profile_numbers_describe_the_float32_values_the_model_receives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = classification_data()
    X[:5, 1] = np.nan  # HistGradientBoosting takes missing values
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y)
    np.save(tmp_path / "X.npy", X)
    code, output = export(tmp_path, save(tmp_path, model), tmp_path / "X.npy")
    assert code == 0, capsys.readouterr()
    profile = json.loads(output.with_name("model.profile.json").read_text())
    first, second = profile["features"][0], profile["features"][1]
    assert first["missing"] == 0.0 and second["missing"] == pytest.approx(5 / ROWS)
    assert first["max"] == float(np.float32(X[:, 0].max()))
    assert first["min"] == float(np.float32(X[:, 0].min()))


def test_profile_and_snippet_follow_the_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = classification_data()
    np.save(tmp_path / "X.npy", X)
    model_file = save(tmp_path, LogisticRegression().fit(X, y))
    profile = tmp_path / "elsewhere" / "iris-profile.json"
    code, output = export(
        tmp_path, model_file, tmp_path / "X.npy",
        "--name", "iris", "--version", "7", "--opset", "15", "--profile", str(profile),
        "--uri", "s3://models/iris/7/model.onnx",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured
    printed = captured.out
    assert profile.is_file() and not output.with_name("model.profile.json").exists()
    manifest = snippet_of(printed)
    assert manifest["metadata"]["name"] == "iris"
    assert manifest["spec"]["model"]["uri"] == "s3://models/iris/7/model.onnx"
    assert manifest["spec"]["model"]["version"] == "7"
    assert "s3://models/iris/7/model.profile.json" in printed
    assert "opset 15" in printed
    import onnx

    opsets = {o.domain: o.version for o in onnx.load(output).opset_import}
    assert opsets[""] == 15


def test_profile_path_replaces_the_onnx_suffix() -> None:
    assert profile_path_for(Path("a/model.onnx")) == Path("a/model.profile.json")
    assert profile_path_for(Path("a/model.bin")) == Path("a/model.bin.profile.json")


def test_the_server_reads_the_profile_it_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server_profile = pytest.importorskip("modeldeploy_server.profile")
    X, y = regression_data()
    np.save(tmp_path / "X.npy", X)
    code, output = export(tmp_path, save(tmp_path, Ridge().fit(X, y)), tmp_path / "X.npy")
    assert code == 0, capsys.readouterr()
    sha = hashlib.sha256(output.read_bytes()).hexdigest()
    parsed = server_profile.read_profile(output.with_name("model.profile.json"))
    assert parsed.sha256 == sha and parsed.input == "X" and len(parsed.features) == WIDTH


# Errors: one line naming the problem, exit code 1, nothing written ----------------------


class Halver(ClassifierMixin, BaseEstimator):
    """A classifier of our own: skl2onnx has no converter for it."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Halver:
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes_[(X[:, 0] > 0).astype(int)])


def failed_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_file: Path, sample: Path
) -> str:
    code, output = export(tmp_path, model_file, sample)
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    assert not output.exists() and not output.with_name("model.profile.json").exists()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modeldeploy export: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("estimator", "named"),
    [
        (lambda: make_pipeline(StandardScaler(), NearestCentroid()), "NearestCentroid"),
        (Halver, "Halver"),
    ],
    ids=["nearest-centroid-in-pipeline", "custom-class"],
)
def test_an_estimator_skl2onnx_cannot_convert_is_named(
    estimator: Callable[[], Any], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = classification_data()
    np.save(tmp_path / "X.npy", X)
    message = failed_export(tmp_path, capsys, save(tmp_path, estimator().fit(X, y)),
                            tmp_path / "X.npy")  # fmt: skip
    assert f"skl2onnx cannot convert {named}" in message


def test_a_sample_of_the_wrong_width_is_an_error_naming_both_widths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = classification_data()
    np.save(tmp_path / "X.npy", X[:, :3])
    message = failed_export(tmp_path, capsys, save(tmp_path, LogisticRegression().fit(X, y)),
                            tmp_path / "X.npy")  # fmt: skip
    assert "the sample has 3 columns but LogisticRegression was fitted on 5 features" in message


@pytest.mark.parametrize(
    ("model_bytes", "expected"),
    [
        (b"this is not a pickle", "cannot read .*model.joblib as a joblib or pickle file"),
        (pickle.dumps({"weights": [1, 2]}), "holds a builtins.dict, not a scikit-learn estimator"),
    ],
    ids=["garbage", "not-an-estimator"],
)
def test_an_unreadable_model_file_is_named(
    model_bytes: bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.joblib").write_bytes(model_bytes)
    np.save(tmp_path / "X.npy", np.ones((3, 2)))
    message = failed_export(tmp_path, capsys, tmp_path / "model.joblib", tmp_path / "X.npy")
    assert re.search(expected, message), message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("X.npy", None, "sample file .*X.npy does not exist"),
        ("X.txt", "1,2", "unknown format '.txt'"),
        ("X.csv", "a,b\n1,x\n", "data row 1 has a value that is not a number"),
        ("X.npy", np.ones(5), "one-dimensional"),
        ("X.npy", b"\x93NUMPY garbage", "cannot read the sample"),
    ],
    ids=["missing", "unknown-format", "csv-text", "one-dimensional", "corrupt-npy"],
)
def test_a_bad_sample_is_named(
    name: str, content: Any, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = classification_data()
    sample = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(sample, content)
    elif isinstance(content, bytes):
        sample.write_bytes(content)
    elif content is not None:
        sample.write_text(content)
    message = failed_export(tmp_path, capsys, save(tmp_path, LogisticRegression().fit(X, y)),
                            sample)  # fmt: skip
    assert re.search(expected, message), message


def test_disagreement_beyond_the_tolerance_fails_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = regression_data()
    np.save(tmp_path / "X.npy", X)
    model = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(X, y)
    tolerances = ("--tolerance", "0", "--rtol", "0")
    code, output = export(tmp_path, save(tmp_path, model), tmp_path / "X.npy", *tolerances)
    captured = capsys.readouterr()
    assert code == 1
    assert "OUT OF TOLERANCE" in captured.out  # float32 arithmetic is not exact
    assert "disagrees with scikit-learn" in captured.err and "Traceback" not in captured.err
    assert not output.exists()
