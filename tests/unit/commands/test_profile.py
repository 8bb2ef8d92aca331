"""The training profile's numbers: ranges, quantiles, histograms, missing shares, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modeldeploy.commands.profile import (
    BINS,
    FORMAT,
    QUANTILES,
    ProfileError,
    classification_profile,
    feature_profile,
    histogram,
    regression_profile,
    training_profile,
)


def test_histogram_has_equal_width_bins_from_min_to_max_and_fractions_summing_to_one() -> None:
    values = np.array([0.0, 1.0, 1.0, 2.5, 9.99, 10.0])
    result = histogram(values)
    assert result["edges"] == pytest.approx(list(np.linspace(0.0, 10.0, BINS + 1)))
    assert len(result["fractions"]) == BINS
    # [0,1) gets 0.0; [1,2) both 1.0; [2,3) 2.5; the last bin is closed and takes 9.99 and 10.
    assert result["fractions"] == pytest.approx([1 / 6, 2 / 6, 1 / 6, 0, 0, 0, 0, 0, 0, 2 / 6])
    assert sum(result["fractions"]) == pytest.approx(1.0)


def test_constant_column_gets_a_unit_wide_histogram_centred_on_the_value() -> None:
    result = histogram(np.full(7, 3.0))
    assert result["edges"][0] == 2.5 and result["edges"][-1] == 3.5
    assert all(b > a for a, b in zip(result["edges"], result["edges"][1:], strict=False))
    # 3.0 is the left edge of the sixth bin of [2.5, 3.5].
    assert result["fractions"] == [0.0] * 5 + [1.0] + [0.0] * 4


def test_numeric_feature_has_range_quantiles_histogram_and_missing_share() -> None:
    column = np.array([np.nan, *range(100), np.nan], dtype=np.float64)
    result = feature_profile(column, name="age", index=2)
    assert result["name"] == "age" and result["column"] == 2 and result["kind"] == "numeric"
    assert (result["min"], result["max"]) == (0.0, 99.0)
    assert result["missing"] == pytest.approx(2 / 102)
    assert list(result["quantiles"]) == ["0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99"]
    assert result["quantiles"]["0.5"] == pytest.approx(49.5)
    assert result["quantiles"]["0.01"] == pytest.approx(0.99)
    # Missing values are left out of the histogram: it describes the present values.
    assert result["histogram"]["fractions"] == pytest.approx([0.1] * 10)


def test_integer_and_boolean_columns_are_numeric() -> None:
    assert feature_profile(np.array([1, 2, 3]), name="n", index=0)["kind"] == "numeric"
    flags = feature_profile(np.array([True, False, True, True]), name="b", index=0)
    assert flags["kind"] == "numeric" and (flags["min"], flags["max"]) == (0.0, 1.0)


def test_string_column_is_categorical_with_shares_of_the_present_values() -> None:
    column = np.array(["red", "blue", None, "red", "red", float("nan")], dtype=object)
    result = feature_profile(column, name="color", index=3)
    assert result == {
        "name": "color",
        "column": 3,
        "kind": "categorical",
        "categories": {"red": 0.75, "blue": 0.25},
        "missing": pytest.approx(2 / 6),
    }


def test_object_column_of_numbers_is_numeric() -> None:
    result = feature_profile(np.array([1, 2.5, None], dtype=object), name="x", index=0)
    assert result["kind"] == "numeric" and result["max"] == 2.5
    assert result["missing"] == pytest.approx(1 / 3)


def test_a_column_missing_everywhere_is_an_error_naming_it() -> None:
    with pytest.raises(ProfileError, match=r"'income' \(column 1\) is missing in every row"):
        feature_profile(np.array([np.nan, np.nan]), name="income", index=1)


def test_infinite_values_are_an_error_naming_the_feature() -> None:
    with pytest.raises(ProfileError, match=r"'x' .* infinite"):
        feature_profile(np.array([1.0, np.inf]), name="x", index=0)


def test_classification_counts_the_predicted_labels_as_strings_with_unseen_classes() -> None:
    result = classification_profile("label", np.array([0, 2, 2, 2]), classes=["0", "1", "2"])
    assert result == {
        "kind": "classification",
        "output": "label",
        "classes": {"2": 0.75, "0": 0.25, "1": 0.0},
    }


def test_regression_is_a_histogram_of_all_output_values() -> None:
    result = regression_profile("variable", np.arange(20.0).reshape(-1, 1))
    assert result["kind"] == "regression" and result["output"] == "variable"
    assert result["histogram"]["edges"][0] == 0.0 and result["histogram"]["edges"][-1] == 19.0
    assert result["histogram"]["fractions"] == pytest.approx([0.1] * 10)


def test_regression_with_nan_outputs_is_an_error() -> None:
    with pytest.raises(ProfileError, match="'variable' has NaN"):
        regression_profile("variable", np.array([1.0, np.nan]))


def test_training_profile_has_the_documented_shape_and_is_plain_json() -> None:
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(50, 3))
    prediction = classification_profile("label", np.array([0, 1] * 25))
    profile = training_profile(sample, model_sha256="a" * 64, input_name="X", prediction=prediction)
    assert json.loads(json.dumps(profile, allow_nan=False)) == profile
    assert profile["format"] == FORMAT == "modeldeploy.profile/v1"
    assert profile["model"] == {"sha256": "a" * 64, "input": "X", "rows": 50}
    assert [f["name"] for f in profile["features"]] == ["f0", "f1", "f2"]
    assert [f["column"] for f in profile["features"]] == [0, 1, 2]
    for feature in profile["features"]:
        assert set(feature) == {
            "name", "column", "kind", "min", "max", "missing", "quantiles", "histogram",
        }  # fmt: skip
        assert len(feature["quantiles"]) == len(QUANTILES)
        values = list(feature["quantiles"].values())
        assert values == sorted(values)
        assert feature["min"] <= values[0] and values[-1] <= feature["max"]
        assert len(feature["histogram"]["edges"]) == BINS + 1
        assert sum(feature["histogram"]["fractions"]) == pytest.approx(1.0)
    assert profile["prediction"]["classes"] == {"0": 0.5, "1": 0.5}


def test_training_profile_uses_the_given_feature_names() -> None:
    profile = training_profile(
        np.ones((2, 2)),
        model_sha256="b" * 64,
        input_name="X",
        prediction=regression_profile("y", np.array([1.0, 2.0])),
        feature_names=["sepal", "petal"],
    )
    assert [f["name"] for f in profile["features"]] == ["sepal", "petal"]
    with pytest.raises(ProfileError, match="1 feature names for 2 columns"):
        training_profile(
            np.ones((2, 2)), model_sha256="b" * 64, input_name="X", prediction={},
            feature_names=["only"],
        )  # fmt: skip


def test_training_profile_refuses_a_sample_that_is_not_rows_by_features() -> None:
    with pytest.raises(ProfileError, match="rows by features"):
        training_profile(np.ones(3), model_sha256="c" * 64, input_name="X", prediction={})
