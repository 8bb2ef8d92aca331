"""Input checks against the profile: counting, the drift window, PSI and the reject policy."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_server.errors import ModelLoadError, Unprocessable
from modeldeploy_server.profile import parse_profile
from modeldeploy_server.quality import STAGE_ROWS, InputMonitor, QualityOptions
from modeldeploy_server.quality_metrics import EPSILON, QualityAggregate, psi
from modeldeploy_server.tensors import TensorSpec
from tests.support.profiles import build_profile, categorical_feature, classifier_training_rows

EDGES = [float(e) for e in range(11)]  # bins [0,1) ... [9,10]
UNIFORM = [0.1] * 10


def _profile(*features: dict[str, Any], input_name: str = "X") -> Any:
    return parse_profile(
        {
            "format": "modeldeploy.profile/v1",
            "model": {"input": input_name},
            "features": list(features),
        }
    )


def _numeric(name: str, column: int, low: float = 0.0, high: float = 10.0) -> dict[str, Any]:
    return {
        "name": name,
        "column": column,
        "kind": "numeric",
        "min": low,
        "max": high,
        "missing": 0.0,
        "histogram": {"edges": EDGES, "fractions": UNIFORM},
    }


def _monitor(profile: Any, datatype: str = "FP32", width: int = -1, **options: Any) -> InputMonitor:
    return InputMonitor(profile, TensorSpec("X", datatype, (-1, width)), QualityOptions(**options))


def _issues(monitor: InputMonitor) -> dict[tuple[str, str], int]:
    return {(feature, issue): n for feature, issue, n in monitor.snapshot()["issues"]}


def _window(monitor: InputMonitor) -> dict[str, list[int]]:
    return {feature: counts for feature, counts, _ in monitor.snapshot()["window"]}


def test_numeric_values_are_counted_per_feature_and_issue() -> None:
    monitor = _monitor(_profile(_numeric("a", 0), _numeric("b", 2, low=5.0)))
    x = np.array(
        [[0.5, 99.0, 5.0], [np.nan, 99.0, 4.0], [10.0, 99.0, np.nan], [-1.0, 99.0, 11.0]],
        dtype=np.float32,
    )
    monitor.check({"X": x})
    assert monitor.snapshot()["values"] == 4
    assert _issues(monitor) == {
        ("a", "out_of_range"): 1,
        ("a", "missing"): 1,  # -1.0; NaN (10.0 is the max: in range)
        ("b", "out_of_range"): 2,
        ("b", "missing"): 1,  # 4.0 and 11.0; NaN
    }
    # Bins: below the first edge counts in the first bin, above the last in the last; no NaN.
    assert _window(monitor) == {
        "a": [2, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        "b": [0, 0, 0, 0, 1, 1, 0, 0, 0, 1],
    }


def test_categorical_strings_bytes_and_numbers() -> None:
    color = {
        "name": "color",
        "column": 0,
        "kind": "categorical",
        "categories": {"red": 0.5, "blue": 0.25, "grün": 0.25},
        "missing": 0.0,
    }
    monitor = _monitor(_profile(color), "BYTES")
    as_text = np.array([["red"], ["grün"], ["purple"], [""], ["red"]], dtype=object)
    monitor.check({"X": as_text})
    as_bytes = np.array([[b"blue"], ["grün".encode()], [b"mauve"]], dtype=object)
    monitor.check({"X": as_bytes})
    assert _issues(monitor) == {("color", "unseen_category"): 2, ("color", "missing"): 1}
    assert _window(monitor) == {"color": [2, 1, 2, 2]}  # red, blue, grün, unseen
    expected = dict((f, e) for f, _, e in monitor.snapshot()["window"])["color"]
    assert expected == [0.5, 0.25, 0.25, 0.0]

    code = {
        "name": "code",
        "column": 1,
        "kind": "categorical",
        "categories": {"1": 0.5, "2.5": 0.5},
        "missing": 0.0,
    }
    numbers = _monitor(_profile(_numeric("a", 0), code))
    numbers.check({"X": np.array([[1, 1.0], [1, 2.5], [1, 3.0], [1, np.nan]], np.float64)})
    assert _issues(numbers)[("code", "unseen_category")] == 1
    assert _issues(numbers)[("code", "missing")] == 1
    with pytest.raises(ModelLoadError, match="input is numeric but the categories"):
        _monitor(_profile(color))
    with pytest.raises(ModelLoadError, match="feature 'a' is numeric but input 'X' holds strings"):
        _monitor(_profile(_numeric("a", 0)), "BYTES")


def test_an_empty_string_is_a_category_when_the_profile_says_so() -> None:
    feature = {
        "name": "c",
        "column": 0,
        "kind": "categorical",
        "categories": {"": 0.5, "x": 0.5},
        "missing": 0.0,
    }
    monitor = _monitor(_profile(feature), "BYTES")
    monitor.check({"X": np.array([[""], ["x"]], dtype=object)})
    assert _issues(monitor) == {("c", "unseen_category"): 0, ("c", "missing"): 0}


def _reference(
    rows: np.ndarray, low: float, high: float, window: int
) -> tuple[int, int, list[int]]:
    """Missing, out of range and the window histogram of column 0, the slow obvious way."""
    column = rows[:, 0]
    missing = int(np.isnan(column).sum())
    out = sum(1 for v in column.tolist() if not math.isnan(v) and not low <= v <= high)
    recent = [v for v in column[-window:].tolist() if not math.isnan(v)]
    counts = [0] * 10
    for v in recent:
        counts[min(9, max(0, int(np.searchsorted(EDGES[1:-1], v, side="right"))))] += 1
    return missing, out, counts


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 2 * STAGE_ROWS + 10), min_size=1, max_size=12),
    window=st.integers(10, 700),
    seed=st.integers(0, 2**16),
)
def test_staged_counting_equals_counting_each_value(
    sizes: list[int], window: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    monitor = _monitor(
        _profile(_numeric("a", 0, low=1.0, high=9.0), _numeric("b", 1)), window=window
    )
    sent = []
    for size in sizes:
        x = rng.uniform(-2.0, 12.0, size=(size, 2)).astype(np.float32)
        x[rng.random(size) < 0.1, 0] = np.nan
        monitor.check({"X": x})
        sent.append(x)
        if rng.random() < 0.3:
            monitor.snapshot()  # a scrape in between flushes the staged rows early
    rows = np.concatenate(sent)
    missing, out, counts = _reference(rows, 1.0, 9.0, window)
    snapshot = monitor.snapshot()
    assert snapshot["values"] == len(rows)
    assert _issues(monitor)[("a", "missing")] == missing
    assert _issues(monitor)[("a", "out_of_range")] == out
    assert _window(monitor)["a"] == counts


def test_columns_may_come_in_any_order_and_extra_columns_are_ignored() -> None:
    monitor = _monitor(_profile(_numeric("z", 2), _numeric("x", 0)), width=4)
    monitor.check({"X": np.array([[50.0, -5.0, 5.0, -5.0]], dtype=np.float32)})
    assert _issues(monitor) == {
        ("z", "out_of_range"): 0,
        ("z", "missing"): 0,
        ("x", "out_of_range"): 1,
        ("x", "missing"): 0,
    }


def test_reject_names_the_feature_the_value_and_the_row() -> None:
    monitor = _monitor(
        _profile(_numeric("a", 0), _numeric("b", 1, low=1.0, high=2.0)), policy="reject"
    )
    monitor.check({"X": np.array([[5.0, 1.5]], dtype=np.float32)})  # in range: accepted
    with pytest.raises(Unprocessable) as raised:
        monitor.check({"X": np.array([[5.0, 1.5], [5.0, 2.75], [12.0, 0.0]], np.float32)})
    assert raised.value.status == 422
    assert raised.value.message == (
        "input 'X' is outside the model's training profile (quality policy reject): feature 'b' "
        "(column 1) in row 1 is 2.75, outside the training range [1, 2]; 2 more value(s) are "
        "outside the profile"
    )
    missing = "feature 'a' (column 0) in row 0 is missing (NaN)"
    with pytest.raises(Unprocessable, match=re.escape(missing)):
        monitor.check({"X": np.array([[np.nan, 1.5]], dtype=np.float32)})
    # Refused requests are counted all the same: the issues happened.
    assert monitor.snapshot()["values"] == 5
    assert _issues(monitor)[("b", "out_of_range")] == 2

    color = {
        "name": "color",
        "column": 0,
        "kind": "categorical",
        "categories": {"red": 1.0},
        "missing": 0.0,
    }
    text = _monitor(_profile(color), "BYTES", policy="reject")
    with pytest.raises(
        Unprocessable,
        match=re.escape(
            "feature 'color' (column 0) in row 0 is 'purple', a category not seen in training "
            "(seen: 'red')"
        ),
    ):
        text.check({"X": np.array([[b"purple"]], dtype=object)})


def test_a_request_narrower_than_the_profile() -> None:
    observe = _monitor(_profile(_numeric("a", 3)))
    observe.check({"X": np.ones((2, 2), np.float32)})  # a model of dynamic width decides
    assert observe.snapshot()["values"] == 0
    reject = _monitor(_profile(_numeric("a", 3)), policy="reject")
    with pytest.raises(Unprocessable, match=r"has shape \[2, 2\]; the training profile describes"):
        reject.check({"X": np.ones((2, 2), np.float32)})


# -- population stability index ---------------------------------------------------------------
def test_psi_on_known_inputs() -> None:
    assert psi([10] * 10, UNIFORM) == pytest.approx(0.0)
    assert psi([0] * 10, UNIFORM) is None
    # Two bins, 75/25 observed against 50/50 expected: 0.25 ln 1.5 - 0.25 ln 0.5.
    assert psi([75, 25], [0.5, 0.5]) == pytest.approx(0.25 * math.log(3))
    # An empty bin is floored at EPSILON instead of adding an infinite term.
    assert psi([100, 0], [0.5, 0.5]) == pytest.approx(
        (1 - 0.5) * math.log(1 / 0.5) + (EPSILON - 0.5) * math.log(EPSILON / 0.5)
    )


def _drift(rows: np.ndarray, profile_rows: np.ndarray, window: int = 1000) -> dict[str, float]:
    monitor = _monitor(parse_profile(build_profile(profile_rows)), window=window)
    monitor.check({"X": rows})
    data = QualityAggregate()
    data.add({"model": "m", "inputs": monitor.snapshot()})
    return {feature: score for (_, feature), (score, _) in data.drift().items()}


def test_psi_of_the_training_distribution_is_near_zero_and_a_shift_is_major() -> None:
    train = classifier_training_rows()
    same = _drift(train, train)
    assert all(score < 0.01 for score in same.values()), same  # the very rows: ~0
    rng = np.random.default_rng(1)
    resampled = train[rng.integers(0, len(train), size=1000)]
    assert all(score < 0.1 for score in _drift(resampled, train).values())  # stable
    shifted = resampled.copy()
    shifted[:, 0] += 2 * train[:, 0].std()
    scores = _drift(shifted, train)
    assert scores["f0"] > 0.25 and all(scores[f] < 0.1 for f in ("f1", "f2", "f3")), scores


def test_the_window_keeps_only_the_last_values() -> None:
    train = classifier_training_rows()
    shifted = train + 10.0
    monitor = _monitor(parse_profile(build_profile(train)), window=300)
    monitor.check({"X": shifted})  # 300 shifted rows...
    monitor.check({"X": train})  # ...then 300 like training: the shifted ones are forgotten
    data = QualityAggregate()
    data.add({"model": "m", "inputs": monitor.snapshot()})
    assert all(score < 0.01 for score, _ in data.drift().values())


def test_workers_windows_are_merged_before_scoring() -> None:
    train = classifier_training_rows()
    profile = parse_profile(build_profile(train))
    workers = [_monitor(profile, window=1000) for _ in range(2)]
    workers[0].check({"X": train[:150]})
    workers[1].check({"X": train[150:]})
    data = QualityAggregate()
    for worker in workers:
        data.add({"model": "m", "inputs": worker.snapshot()})
    assert data.values[("m", "f0")] == 300
    assert all(n == 300 and score < 0.01 for score, n in data.drift().values())  # the whole set
    few = QualityAggregate()
    small = _monitor(profile)
    small.check({"X": train[:99]})
    few.add({"model": "m", "inputs": small.snapshot()})
    assert few.drift() == {}  # under 100 values: no score yet


def test_a_categorical_feature_drifts_on_its_categories() -> None:
    feature = categorical_feature("c", 0, ["a"] * 50 + ["b"] * 50)
    monitor = _monitor(_profile(feature), "BYTES")
    monitor.check({"X": np.array([["a"]] * 60 + [["b"]] * 40 + [["zzz"]] * 100, dtype=object)})
    data = QualityAggregate()
    data.add({"model": "m", "inputs": monitor.snapshot()})
    ((score, n),) = data.drift().values()
    assert n == 200 and score > 0.25  # half the values are a category never seen


def test_bins_of_unequal_width() -> None:
    feature = _numeric("a", 0)
    feature["histogram"] = {"edges": [0.0, 1.0, 5.0, 10.0], "fractions": [0.2, 0.3, 0.5]}
    monitor = _monitor(_profile(feature, _numeric("b", 1)))
    x = np.array([[-3.0, 0.0], [0.5, 0.0], [1.0, 0.0], [4.9, 0.0], [5.0, 0.0], [10.0, 0.0],
                  [99.0, 0.0], [np.nan, 0.0]], dtype=np.float32)  # fmt: skip
    monitor.check({"X": x})
    assert _window(monitor)["a"] == [2, 2, 3]


@settings(max_examples=200, deadline=None)
@given(
    low=st.floats(-1e6, 1e6),
    width=st.floats(0.0, 1e6),
    steps=st.lists(st.integers(-3, 3), min_size=1, max_size=6),
)
def test_the_quick_float32_test_agrees_with_exact_comparison(
    low: float, width: float, steps: list[int]
) -> None:
    high = low + width
    monitor = _monitor(_profile(_numeric("a", 0, low=low, high=high)), policy="reject")
    # float32 values a few steps around each bound, where rounding would show.
    values = []
    for bound, step in zip([low, high] * len(steps), steps * 2, strict=False):
        value = np.float32(bound)
        for _ in range(abs(step)):
            value = np.nextafter(value, np.float32(np.inf if step > 0 else -np.inf))
        values.append(value)
    x = np.array(values, dtype=np.float32).reshape(-1, 1)
    exact = all(low <= float(v) <= high for v in values)
    assert monitor._inside(x, None) is exact
    try:
        monitor.check({"X": x})
        refused = False
    except Unprocessable:
        refused = True
    assert refused is not exact
