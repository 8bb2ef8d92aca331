"""The training profile: a valid one parses; every bad field is named in the error."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_server.profile import (
    CategoricalFeature,
    NumericFeature,
    ProfileError,
    parse_profile,
    read_profile,
)
from tests.support.profiles import build_profile, classifier_training_rows

EDGES = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
VALID: dict[str, Any] = {
    "format": "modeldeploy.profile/v1",
    "model": {"sha256": "AB" * 32, "input": "X", "rows": 200},
    "features": [
        {
            "name": "f0",
            "column": 0,
            "kind": "numeric",
            "min": 0.1,
            "max": 7.9,
            "missing": 0.0,
            "quantiles": {"0.01": 0.2, "0.5": 2.0, "0.99": 7.5},
            "histogram": {"edges": EDGES, "fractions": [0.1] * 10},
        },
        {
            "name": "color",
            "column": 3,
            "kind": "categorical",
            "categories": {"red": 0.5, "blue": 0.5},
            "missing": 0.0,
        },
    ],
    "prediction": {"kind": "classification", "output": "label", "classes": {"0": 0.5, "1": 0.5}},
    "exporter": {"note": "unknown keys are ignored"},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """VALID with the field at a dotted ``path`` (list indices as numbers) set or deleted."""
    doc = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    key: Any = int(last) if last.isdigit() else last
    if value is _DELETE:
        del target[key]
    else:
        target[key] = value
    return doc


_DELETE = object()


def test_a_valid_profile_parses() -> None:
    profile = parse_profile(VALID)
    assert profile.input == "X" and profile.rows == 200
    assert profile.sha256 == "ab" * 32  # lower case
    numeric, categorical = profile.features
    assert isinstance(numeric, NumericFeature) and isinstance(categorical, CategoricalFeature)
    assert (numeric.min, numeric.max, numeric.histogram.edges[-1]) == (0.1, 7.9, 10.0)
    assert numeric.quantiles == {0.01: 0.2, 0.5: 2.0, 0.99: 7.5}
    assert categorical.categories == {"red": 0.5, "blue": 0.5}
    assert profile.prediction is not None and profile.prediction.classes == {"0": 0.5, "1": 0.5}


def test_a_regression_profile_and_optional_parts() -> None:
    doc = _with(
        "prediction",
        {
            "kind": "regression",
            "output": "variable",
            "histogram": {"edges": [0, 1, 2], "fractions": [0.5, 0.5]},
        },
    )
    del doc["model"]["sha256"], doc["model"]["rows"], doc["features"][0]["quantiles"]
    profile = parse_profile(doc)
    assert profile.sha256 is None and profile.rows is None
    assert profile.prediction is not None and profile.prediction.histogram is not None
    assert profile.prediction.histogram.edges == (0.0, 1.0, 2.0)
    assert parse_profile(_with("prediction", _DELETE)).prediction is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "the profile: must be a JSON object, got an array"),
        (_with("format", "modeldeploy.profile/v2"), "format: version 'v2' is not supported"),
        (_with("format", _DELETE), "format: must be 'modeldeploy.profile/v1', got None"),
        (_with("model", _DELETE), "model: must be a JSON object, got nothing"),
        (_with("model.sha256", "abc"), "model.sha256: must be 64 hexadecimal characters"),
        (_with("model.input", ""), "model.input: must be the name of the model's input"),
        (_with("model.rows", -1), "model.rows: must be a non-negative integer"),
        (_with("features", []), "features: must be a non-empty array"),
        (_with("features.0.name", 3), "features[0].name: must be a non-empty string"),
        (_with("features.0.column", "0"), "features[0].column: must be a non-negative integer"),
        (_with("features.1.column", 0), "features[1].column: 0 is already used by features[0]"),
        (_with("features.1.name", "f0"), "features[1].name: 'f0' is already used by features[0]"),
        (_with("features.0.kind", "text"), "features[0].kind: must be 'numeric' or 'categorical'"),
        (_with("features.0.min", "low"), "features[0].min: must be a finite number, got 'low'"),
        (_with("features.0.max", float("nan")), "features[0].max: must be a finite number"),
        (_with("features.0.min", 9.0), "features[0].min: 9.0 is greater than max 7.9"),
        (_with("features.0.missing", 1.5), "features[0].missing: must be a share between 0 and 1"),
        (_with("features.0.histogram", _DELETE), "features[0].histogram: must be a JSON object"),
        (
            _with("features.0.histogram.edges", [1.0]),
            "features[0].histogram.edges: must be an array of at least 2 numbers",
        ),
        (
            _with("features.0.histogram.edges", [*EDGES[:5], 3.5, *EDGES[6:]]),
            "features[0].histogram.edges: must be increasing, but edges[5] = 3.5 follows 4.0",
        ),
        (
            _with("features.0.histogram.fractions", [0.2] * 5),
            "features[0].histogram.fractions: must be an array of 10 shares",
        ),
        (
            _with("features.0.histogram.fractions", [0.2] * 10),
            "features[0].histogram.fractions: must sum to 1, they sum to 2",
        ),
        (
            _with("features.0.histogram.fractions", [-0.1] + [0.11] * 9),
            "features[0].histogram.fractions[0]: must be a share between 0 and 1",
        ),
        (
            _with("features.0.quantiles", {"median": 2.0}),
            "features[0].quantiles: key 'median' is not a level between 0 and 1",
        ),
        (
            _with("features.0.quantiles", {"0.1": 5.0, "0.9": 1.0}),
            "features[0].quantiles: the 0.9 quantile (1.0) is below the 0.1 quantile (5.0)",
        ),
        (_with("features.1.categories", {}), "features[1].categories: must name at least one"),
        (
            _with("features.1.categories", {"red": 0.9, "blue": 0.9}),
            "features[1].categories: shares must sum to at most 1",
        ),
        (_with("prediction.kind", "ranking"), "prediction.kind: must be 'classification' or"),
        (_with("prediction.output", None), "prediction.output: must be the name of an output"),
        (_with("prediction.classes", None), "prediction.classes: must be a JSON object"),
    ],
)
def test_errors_name_the_field(doc: object, message: str) -> None:
    with pytest.raises(ProfileError, match=re.escape(message)):
        parse_profile(doc)


def test_read_profile_verifies_the_file(tmp_path: Path) -> None:
    path = tmp_path / "model.profile.json"
    data = json.dumps(VALID).encode()
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert read_profile(path, sha256=digest.upper()).input == "X"
    with pytest.raises(ProfileError, match=f"sha256 mismatch for the profile .*file has {digest}"):
        read_profile(path, sha256="0" * 64)
    path.write_text("{not json")
    with pytest.raises(ProfileError, match="is not valid JSON"):
        read_profile(path)
    with pytest.raises(ProfileError, match="does not exist"):
        read_profile(tmp_path / "absent.json")


def test_a_profile_built_from_training_rows_is_valid() -> None:
    profile = parse_profile(build_profile(classifier_training_rows()))
    assert [f.name for f in profile.features] == ["f0", "f1", "f2", "f3"]
