"""Paired evaluation, pure: what is compared, row-by-row agreement and error, and slices."""

from __future__ import annotations

import numpy as np
import pytest

from modeldeploy_server.profile import parse_profile
from modeldeploy_server.shadow_pairing import (
    MISSING_BIN,
    UNSEEN_BIN,
    PairingSpec,
    ProfileSlices,
    bin_labels,
    categorical_bins,
    compare_classifications,
    compare_regressions,
    count_by_slice,
    numeric_bins,
    pairing_spec,
)
from modeldeploy_server.tensors import TensorSpec
from tests.support.profiles import categorical_feature, numeric_feature


def test_a_classifier_is_compared_on_its_label_and_probabilities() -> None:
    outputs = [
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    ]
    assert pairing_spec(outputs, None) == PairingSpec("classification", "label", "probabilities")


def test_a_classifier_without_probabilities_is_compared_on_its_label_alone() -> None:
    spec = pairing_spec([TensorSpec("label", "INT64", (-1,))], None)
    assert spec == PairingSpec("classification", "label", None)
    assert spec is not None and spec.outputs == ("label",)


def test_a_regressor_is_compared_on_its_value() -> None:
    spec = pairing_spec([TensorSpec("variable", "FP32", (-1, 1))], None)
    assert spec == PairingSpec("regression", "variable")


def test_a_model_with_nothing_comparable_has_no_pairing() -> None:
    assert (
        pairing_spec([TensorSpec("Y", "FP32", (-1, 8)), TensorSpec("Z", "FP32", (-1,))], None)
        is None
    )


def test_labels_agree_or_disagree_row_by_row() -> None:
    result = compare_classifications(np.array([0, 1, 2, 1]), np.array([0, 2, 2, 1]))
    assert result.disagree.tolist() == [False, True, False, False]
    assert result.probability_difference is None and result.rows == 4


def test_string_labels_are_compared_too() -> None:
    result = compare_classifications(
        np.array([b"setosa", b"virginica"], dtype=object),
        np.array([b"setosa", b"versicolor"], dtype=object),
    )
    assert result.disagree.tolist() == [False, True]


def test_the_largest_class_probability_difference_is_taken_per_row() -> None:
    stable = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    canary = np.array([[0.5, 0.4, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    result = compare_classifications(np.array([0, 2]), np.array([0, 2]), stable, canary)
    assert result.probability_difference is not None
    assert result.probability_difference == pytest.approx([0.2, 0.0], abs=1e-6)
    assert not result.disagree.any()


def test_probabilities_of_different_widths_are_not_compared() -> None:
    result = compare_classifications(
        np.array([0]), np.array([0]), np.array([[0.5, 0.5]]), np.array([[0.3, 0.3, 0.4]])
    )
    assert result.probability_difference is None


def test_labels_of_different_shapes_cannot_be_paired() -> None:
    with pytest.raises(ValueError, match="labels: 2 rows from the stable"):
        compare_classifications(np.array([0, 1]), np.array([0, 1, 2]))


def test_regressions_have_absolute_and_relative_errors_and_a_tolerance() -> None:
    stable = np.array([[10.0], [2.0], [0.0], [-1.0]])
    canary = np.array([[10.5], [2.0], [0.0], [1.0]])
    result = compare_regressions(stable, canary, tolerance=0.01)
    assert result.abs_error is not None and result.relative_error is not None
    assert result.abs_error.tolist() == [0.5, 0.0, 0.0, 2.0]
    # relative to the larger of the two answers: bounded, and 0 when both answer 0
    assert result.relative_error == pytest.approx([0.5 / 10.5, 0.0, 0.0, 2.0])
    assert result.disagree.tolist() == [True, False, False, True]


def test_a_relative_error_within_tolerance_is_agreement() -> None:
    result = compare_regressions(np.array([100.0]), np.array([100.5]), tolerance=0.01)
    assert result.disagree.tolist() == [False]


def test_several_targets_count_the_worst_one() -> None:
    stable = np.array([[1.0, 5.0]])
    canary = np.array([[1.0, 6.0]])
    result = compare_regressions(stable, canary, tolerance=0.1)
    assert result.abs_error is not None and result.abs_error.tolist() == [1.0]


def test_nan_on_one_side_disagrees_and_on_both_agrees() -> None:
    stable = np.array([np.nan, np.nan, 1.0])
    canary = np.array([np.nan, 1.0, 1.0])
    result = compare_regressions(stable, canary, tolerance=0.01)
    assert result.disagree.tolist() == [False, True, False]


def test_bin_labels_are_readable_half_open_intervals() -> None:
    labels = bin_labels([4.3, 4.7, 5.1, 7.9])
    assert labels == ["[4.3, 4.7)", "[4.7, 5.1)", "[5.1, 7.9]", "< 4.3", "> 7.9", MISSING_BIN]


def test_bin_labels_keep_close_edges_apart() -> None:
    labels = bin_labels([1.0, 1.00001, 2.0])
    assert labels[:2] == ["[1, 1.00001)", "[1.00001, 2]"]


def test_values_fall_in_their_bin_the_last_edge_included() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    values = np.array([0.0, 0.5, 1.0, 2.99, 3.0, -0.1, 3.1, np.nan], dtype=np.float32)
    assert numeric_bins(edges, values).tolist() == [0, 0, 1, 2, 2, 3, 4, 5]


def test_categories_unseen_values_and_missing_ones_have_their_own_bins() -> None:
    values = np.array([b"paris", "lyon", b"nice", "", float("nan")], dtype=object)
    assert categorical_bins(["lyon", "paris"], values).tolist() == [1, 0, 2, 3, 3]


def _profile() -> ProfileSlices:
    rows = np.array([[4.3, 1.0], [5.0, 2.0], [6.0, 3.0], [7.9, 4.0]])
    doc = {
        "format": "modeldeploy.profile/v1",
        "model": {"input": "X"},
        "features": [
            numeric_feature("petal_length", 0, rows[:, 0]),
            categorical_feature("colour", 2, ["red", "blue", "red"]),
        ],
    }
    doc["features"][0]["histogram"] = {
        "edges": [4.3, 4.7, 5.1, 7.9],
        "fractions": [0.25, 0.25, 0.5],
    }
    return ProfileSlices(parse_profile(doc))


def test_rows_are_sliced_by_every_profiled_feature() -> None:
    slices = _profile()
    rows = np.array([[4.5, 0.0, "red"], [4.8, 0.0, "blue"], [4.9, 0.0, "green"]], dtype=object)
    assigned = slices.assign(rows)
    assert assigned is not None
    names = [(feature, [labels[i] for i in index.tolist()]) for feature, labels, index in assigned]
    assert names == [
        ("petal_length", ["[4.3, 4.7)", "[4.7, 5.1)", "[4.7, 5.1)"]),
        ("colour", ["red", "blue", UNSEEN_BIN]),
    ]


def test_rows_without_every_profiled_column_are_not_sliced() -> None:
    assert _profile().assign(np.zeros((3, 2))) is None
    assert _profile().assign(np.zeros(3)) is None


def test_disagreements_are_counted_in_each_slice_that_has_rows() -> None:
    slices = _profile()
    rows = np.array(
        [[4.5, 0, "red"], [4.8, 0, "red"], [4.9, 0, "blue"], [6.0, 0, "red"]], dtype=object
    )
    assigned = slices.assign(rows)
    assert assigned is not None
    counts = count_by_slice(assigned, np.array([False, True, True, False]))
    assert counts == [
        ("petal_length", "[4.3, 4.7)", 1, 0),
        ("petal_length", "[4.7, 5.1)", 2, 2),
        ("petal_length", "[5.1, 7.9]", 1, 0),
        ("colour", "blue", 1, 1),  # the profile's order
        ("colour", "red", 3, 1),
    ]
