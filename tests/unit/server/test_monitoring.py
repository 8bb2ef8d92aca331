"""Model-aware monitoring through the real data plane, HTTP layer and onnxruntime, in-process:
predictions per class or bucket, the reject policy over HTTP, and profiles that do not fit."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy_server.dataplane import BatchingOptions, DataPlane, ModelIdentity, ModelSlot
from modeldeploy_server.metrics import WorkerMetrics, aggregate, render
from modeldeploy_server.predictions import (
    DEFAULT_PREDICTION_BUCKETS,
    MAX_CLASSES,
    OTHER_CLASS,
    ClassCounter,
    ValueHistogram,
)
from modeldeploy_server.profile import parse_profile
from modeldeploy_server.quality import QualityOptions
from modeldeploy_server.runtime.onnx import OnnxModel
from tests.support.profiles import (
    build_profile,
    categorical_feature,
    classifier_training_rows,
    regressor_training_rows,
)

from .conftest import make_app

QUALITY_FAMILIES = {
    "modeldeploy_feature_values",
    "modeldeploy_feature_issues",
    "modeldeploy_feature_drift_psi",
    "modeldeploy_feature_drift_window_values",
    "modeldeploy_predictions",
    "modeldeploy_prediction_value",
}


def _body(rows: np.ndarray, outputs: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "inputs": [
            {
                "name": "X",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.reshape(-1).tolist(),
            }
        ]
    }
    if outputs is not None:
        doc["outputs"] = [{"name": name} for name in outputs]
    return doc


def _samples(metrics: WorkerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text, _ = render(aggregate([metrics.snapshot()]), "d", "stable", None)
    hidden = ("deployment", "track")
    return {
        (s.name, frozenset((k, v) for k, v in s.labels.items() if k not in hidden)): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def _get(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset({"model": "m", **labels}.items()))]


def _families(metrics: WorkerMetrics) -> set[str]:
    text, _ = render(aggregate([metrics.snapshot()]), "d", "stable", None)
    return {f.name for f in text_string_to_metric_families(text.decode())} & QUALITY_FAMILIES


def test_a_classifier_counts_its_predictions_without_a_profile(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    client, _, metrics = make_app(loop, models["classifier"])
    rows = classifier_training_rows()
    labels: list[int] = []
    for start in range(0, 60, 20):
        answer = client.post("/v2/models/m/infer", _body(rows[start : start + 20])).json()
        labels += answer["outputs"][0]["data"]
    # Asking only for the probabilities still counts the predicted label.
    answer = client.post("/v2/models/m/infer", _body(rows[60:61], ["probabilities"])).json()
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]
    labels.append(int(np.argmax(answer["outputs"][0]["data"])))
    samples = _samples(metrics)
    for label in set(labels):
        assert _get(samples, "modeldeploy_predictions_total", **{"class": str(label)}) == (
            labels.count(label)
        )
    assert _families(metrics) == {"modeldeploy_predictions"}


def test_a_regressor_fills_a_histogram_of_its_predictions(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    client, _, metrics = make_app(loop, models["regressor"])
    rows = regressor_training_rows()
    predictions = client.post("/v2/models/m/infer", _body(rows[:50])).json()["outputs"][0]["data"]
    single = client.post("/v2/models/m/infer", _body(rows[50:51]))  # the single-row path
    client.post("/v2/models/m/infer", _body(rows[50:51]))
    values = np.array([*predictions, single.json()["outputs"][0]["data"][0]])
    samples = _samples(metrics)
    assert _get(samples, "modeldeploy_prediction_value_count") == 52
    for bound in DEFAULT_PREDICTION_BUCKETS:
        expected = (np.array(predictions) <= bound).sum() + 2 * (values[-1] <= bound)
        assert _get(samples, "modeldeploy_prediction_value_bucket", le=repr(bound)) == expected
    # With a profile, the buckets are the edges of the training predictions' histogram.
    profile = parse_profile(build_profile(rows, models["regressor"]))
    client, _, metrics = make_app(loop, models["regressor"], profile=profile)
    client.post("/v2/models/m/infer", _body(rows))
    assert profile.prediction is not None and profile.prediction.histogram is not None
    edges = profile.prediction.histogram.edges
    samples = _samples(metrics)
    assert _get(samples, "modeldeploy_prediction_value_bucket", le=repr(edges[-1])) == len(rows)
    assert _get(samples, "modeldeploy_prediction_value_bucket", le=repr(edges[0])) == 1  # the min


def test_reject_answers_422_naming_the_feature_and_keeps_serving(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    rows = classifier_training_rows()
    profile = parse_profile(build_profile(rows, models["classifier"]))
    client, _, metrics = make_app(
        loop, models["classifier"], profile=profile, quality=QualityOptions(policy="reject")
    )
    bad = rows[:2].copy()
    bad[1, 2] = 1000.0
    response = client.post("/v2/models/m/infer", _body(bad))
    assert response.status == 422
    assert response.json()["error"].endswith(
        "feature 'f2' (column 2) in row 1 is 1000, outside the training range "
        f"[{profile.features[2].min:g}, {profile.features[2].max:g}]"  # type: ignore[union-attr]
    )
    v1 = client.post("/v1/models/m:predict", {"instances": bad.tolist()})
    assert v1.status == 422 and "feature 'f2'" in v1.json()["error"]
    assert client.post("/v2/models/m/infer", _body(rows[:2])).status == 200
    samples = _samples(metrics)
    assert _get(samples, "modeldeploy_requests_total", protocol="v2", code="422") == 1
    assert (
        _get(samples, "modeldeploy_feature_issues_total", feature="f2", issue="out_of_range") == 2
    )
    assert _get(samples, "modeldeploy_feature_values_total", feature="f0") == 6
    assert sum(v for (n, _), v in samples.items() if n == "modeldeploy_predictions_total") == 2


def test_a_text_model_counts_unseen_categories(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    words = ["good", "great", "bad", "awful", "fine", "poor"]
    profile = parse_profile(
        {
            "format": "modeldeploy.profile/v1",
            "model": {"input": "text"},
            "features": [categorical_feature("word", 0, words)],
        }
    )
    client, _, metrics = make_app(loop, models["text"], profile=profile)
    body = {
        "inputs": [
            {"name": "text", "shape": [3, 1], "datatype": "BYTES", "data": ["good", "meh", "awful"]}
        ]
    }
    assert client.post("/v2/models/m/infer", body).status == 200
    samples = _samples(metrics)
    assert (
        _get(samples, "modeldeploy_feature_issues_total", feature="word", issue="unseen_category")
        == 1
    )
    client, _, _ = make_app(
        loop, models["text"], profile=profile, quality=QualityOptions(policy="reject")
    )
    refused = client.post("/v2/models/m/infer", body)
    assert (
        refused.status == 422
        and "'meh', a category not seen in training" in refused.json()["error"]
    )


def _load(path: Path, profile_doc: dict[str, Any]) -> DataPlane:
    plane = DataPlane(ModelSlot("m", None), WorkerMetrics(), BatchingOptions())
    profile = parse_profile(profile_doc)
    asyncio.run(plane.load(OnnxModel("m", path), ModelIdentity(str(path)), profile))
    return plane


def _renamed_input(doc: dict[str, Any], name: str) -> dict[str, Any]:
    doc["model"]["input"] = name
    return doc


def test_a_profile_that_does_not_fit_the_model_is_a_load_failure(models: dict[str, Path]) -> None:
    rows = classifier_training_rows()
    model = models["classifier"]
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    cases = [
        (
            build_profile(rows, model, sha256="0" * 64),
            f"the profile is for model sha256 {'0' * 64}, the served model has sha256 {digest}",
        ),
        (
            _renamed_input(build_profile(rows, model), "features"),
            "profile model.input 'features' is not an input of the model; its inputs are ['X']",
        ),
        (
            build_profile(np.hstack([rows, rows[:, :1]]), sha256=digest),
            "profile feature 'f4' is column 4, but input 'X' has 4 columns",
        ),
        (
            build_profile(
                rows,
                model,
                prediction={"kind": "classification", "output": "score", "classes": {"0": 1.0}},
            ),
            "profile prediction.output 'score' is not an output of the model",
        ),
        (
            build_profile(
                rows,
                model,
                prediction={
                    "kind": "regression",
                    "output": "label",
                    "histogram": {"edges": [0, 1], "fractions": [1]},
                },
            ),
            "'label' is a regression output, but the model's is INT64 [-1]: expected floats",
        ),
        (
            build_profile(
                rows,
                model,
                prediction={
                    "kind": "classification",
                    "output": "probabilities",
                    "classes": {"0": 1.0},
                },
            ),
            "is a classification output, but the model's is FP32 [-1, 3]: expected one integer",
        ),
    ]
    for doc, message in cases:
        plane = _load(model, doc)
        assert plane.slot.state == "FAILED" and message in plane.slot.reason, plane.slot.reason
    plane = _load(models["fp16"], build_profile(rows, input_name="X"))
    assert plane.slot.state == "READY"  # an FP16 input is profiled like any number
    several = {"kind": "regression", "output": "Y",
               "histogram": {"edges": [-1.0, 0.0, 1.0], "fractions": [0.5, 0.5]}}  # fmt: skip
    plane = _load(models["fp16"], build_profile(rows, prediction=several))
    assert plane.slot.state == "READY"  # a multi-target output: every value is bucketed


def test_models_without_predictions_or_profile_add_no_series(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path]
) -> None:
    _, dataplane, metrics = make_app(loop, models["identity"])
    assert dataplane.slot.monitor is None and _families(metrics) == set()


def test_class_labels_are_bounded_and_strings_decoded() -> None:
    counter = ClassCounter("label", ["cat", "dog"])
    counter.observe(np.array([b"cat", b"cat", "bird"], dtype=object))
    counter.observe(np.array(["cat"], dtype=object))
    assert counter.snapshot() == [("bird", 1), ("cat", 3), ("dog", 0)]
    mixed = ClassCounter("label")
    mixed.observe(np.array([2, 0, 2], dtype=np.uint64))
    mixed.observe(np.array([-1, 5000, 2], dtype=np.int32))
    assert mixed.snapshot() == [("-1", 1), ("0", 1), ("2", 3), ("5000", 1)]
    many = ClassCounter("label")
    many.observe(np.arange(MAX_CLASSES + 20))
    labels = dict(many.snapshot())
    assert len(labels) == MAX_CLASSES + 1 and labels[OTHER_CLASS] == 20
    histogram = ValueHistogram("y", (0.0, 1.0))
    histogram.observe(np.array([[-1.0], [0.0], [0.5], [np.nan], [np.inf], [3.0]]))
    histogram.observe(np.array([[np.nan]]))
    assert histogram.snapshot() == ((0.0, 1.0), [2, 1, 1], 2.5)


@pytest.mark.parametrize("name", ["mixed", "text", "classifier"])
def test_label_outputs_are_found_by_their_type(
    loop: asyncio.AbstractEventLoop, models: dict[str, Path], name: str
) -> None:
    _, dataplane, _ = make_app(loop, models[name])
    assert dataplane.slot.monitor is not None
    assert dataplane.slot.monitor.prediction_output == "label"
