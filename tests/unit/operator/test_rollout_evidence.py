"""Evidence before a decision: the bounds arithmetic (absolute, relative), minimum samples,
the drift statistic and its p-value, what one analysis run reads from Prometheus, the window
that grows while runs lack samples, and the progress deadline of a canary without traffic."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2, chi2_contingency

from modeldeploy.api.rollout import AnalysisMetric
from modeldeploy.api.status import AnalysisResult
from modeldeploy.rollout.analysis import Sample, measure, render
from modeldeploy.rollout.plan import analysis_window, iso, model_key
from modeldeploy.rollout.statistics import chi2_sf, homogeneity, jensen_shannon
from modeldeploy.rollout.verdicts import increase_limit, judge
from tests.unit.operator.test_rollout_plan import (
    T0,
    decided,
    mdep,
    seen,
    stable_status,
    tick,
    typed,
)

# --- bounds arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stable", "increase", "limit"),
    [
        (0.1, "20%", 0.12),
        (0.0, "20%", 0.0),  # relative to nothing: any increase fails
        (0.0, "0.01", 0.01),
        (0.05, "0.01", 0.06),
        (5.0, 3, 8.0),
        (-2.0, "50%", -1.0),  # a negative value may rise by half its size
        (0.2, "12.5%", 0.225),
    ],
)
def test_the_highest_passing_canary_value(stable: float, increase: Any, limit: float) -> None:
    assert increase_limit(stable, increase) == pytest.approx(limit)


def metric(**fields: Any) -> AnalysisMetric:
    return AnalysisMetric.model_validate({"name": "latency-p99", **fields})


def verdict(bounds: dict[str, Any], **measured: Any) -> tuple[str, str]:
    entry = dict(measured)
    judge(metric(**bounds), entry)
    return entry["result"], str(entry.get("message", ""))


RELATIVE = {"max": 1.0, "maxIncrease": "20%"}


@pytest.mark.parametrize(
    ("bounds", "measured", "result", "says"),
    [
        ({"max": 1.0}, {"value": 0.5, "samples": 100}, "Passed", ""),
        ({"max": 1.0}, {"value": 1.5, "samples": 100}, "Failed", ""),
        ({"min": 1.0}, {"value": 0.5, "samples": 100}, "Failed", ""),
        ({"max": 1.0}, {"samples": 0}, "Inconclusive", "no sample from the canary"),
        ({"max": 1.0}, {}, "Inconclusive", "no data for the canary"),
        ({"max": 1.0}, {"value": 9.0, "samples": 3}, "Inconclusive", "3 of the 100"),
        ({"max": 1.0, "minSamples": 3}, {"value": 9.0, "samples": 3}, "Failed", ""),
        (RELATIVE, {"value": 0.059, "samples": 100, "stableValue": 0.05, "stableSamples": 300},
         "Passed", ""),
        (RELATIVE, {"value": 0.075, "samples": 100, "stableValue": 0.05, "stableSamples": 300},
         "Failed", ""),
        (RELATIVE, {"value": 0.075, "samples": 100, "stableSamples": 0},
         "Inconclusive", "no data for the stable track"),
        (RELATIVE, {"value": 0.075, "samples": 100, "stableValue": 0.05, "stableSamples": 20},
         "Inconclusive", "too few samples from the stable track: 20 of the 100"),
        # the absolute bound still applies beside the relative one
        (RELATIVE, {"value": 1.2, "samples": 100, "stableValue": 1.1, "stableSamples": 300},
         "Failed", ""),
    ],
    ids=[
        "within-max", "above-max", "below-min", "no-samples", "no-data", "too-few",
        "min-samples-lowered", "relative-within", "relative-above", "no-stable",
        "stable-too-few", "absolute-beside-relative",
    ],
)  # fmt: skip
def test_a_result_rests_on_enough_evidence_before_the_bounds(
    bounds: dict[str, Any], measured: dict[str, Any], result: str, says: str
) -> None:
    got, message = verdict(bounds, **measured)
    assert got == result and says in message


def test_a_drift_beyond_max_fails_only_when_chance_does_not_explain_it() -> None:
    drift = AnalysisMetric.model_validate({"name": "prediction-drift", "max": 0.1})
    base = {"value": 0.2, "samples": 160, "stableSamples": 160}
    noisy, clear, close = dict(base, pValue=0.2), dict(base, pValue=0.001), dict(base, value=0.05)
    for entry in (noisy, clear, close):
        judge(drift, entry)
    assert noisy["result"] == "Inconclusive" and "within chance" in noisy["message"]
    assert clear["result"] == "Failed"
    assert close["result"] == "Passed"


def test_built_in_metrics_default_to_a_minimum_of_samples_and_queries_to_none() -> None:
    assert metric(max=1).effective_min_samples() == 100
    assert metric(max=1, minSamples=10).effective_min_samples() == 10
    custom = AnalysisMetric.model_validate({"name": "q", "query": "vector(1)", "max": 1})
    assert custom.effective_min_samples() == 0


# --- the statistics ---------------------------------------------------------------------------


@pytest.mark.parametrize("dof", [1, 2, 3, 5, 10, 30])
@pytest.mark.parametrize("statistic", [0.01, 0.5, 2.0, 6.6, 11.3, 40.0, 150.0])
def test_chi_squared_tail_matches_scipy(statistic: float, dof: int) -> None:
    assert chi2_sf(statistic, dof) == pytest.approx(chi2.sf(statistic, dof), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(
    ("canary", "stable"),
    [([30, 50, 20], [25, 60, 15]), ([100, 10, 90], [80, 30, 90]), ([500, 500], [450, 550])],
)
def test_the_homogeneity_test_matches_scipy_when_no_cell_is_sparse(
    canary: list[int], stable: list[int]
) -> None:
    ours = homogeneity(dict(enumerate(map(float, canary))), dict(enumerate(map(float, stable))))  # type: ignore[arg-type]
    statistic, p_value, dof, _ = chi2_contingency(np.array([canary, stable]), correction=False)
    assert ours is not None
    assert (ours.statistic, ours.p_value, ours.dof) == (
        pytest.approx(statistic),
        pytest.approx(p_value),
        dof,
    )


def test_rare_classes_are_pooled_and_empty_sides_are_no_test() -> None:
    test = homogeneity({"a": 50, "b": 50, "c": 5, "d": 3}, {"a": 52, "b": 47, "c": 3, "d": 4})
    assert test is not None and test.dof == 2  # c and d pooled into one cell
    sparse = homogeneity({"a": 50, "b": 50, "c": 1, "d": 2}, {"a": 52, "b": 47, "c": 0, "d": 1})
    assert sparse is not None and sparse.dof == 1  # still too rare: pooled into b as well
    assert homogeneity({"a": 5}, {"a": 7}) is not None
    assert homogeneity({"a": 5}, {"a": 7}).p_value == 1.0  # type: ignore[union-attr]
    assert homogeneity({}, {"a": 1}) is None


def test_two_samples_of_one_distribution_rarely_look_different() -> None:
    """The false-alarm rate of the test at the 1% level, on 2000 simulated pairs of tracks
    serving the same model (skewed classes, 60 and 180 predictions): at most about 1%."""
    rng = np.random.default_rng(17)
    shares = [0.7, 0.2, 0.08, 0.02]
    alarms = 0
    for _ in range(2000):
        canary, stable = rng.multinomial(60, shares), rng.multinomial(180, shares)
        test = homogeneity(
            {str(i): float(c) for i, c in enumerate(canary)},
            {str(i): float(c) for i, c in enumerate(stable)},
        )
        alarms += test is not None and test.p_value < 0.01
    assert alarms / 2000 <= 0.02


def test_the_distance_between_identical_distributions_is_zero() -> None:
    assert jensen_shannon({"a": 3, "b": 1}, {"a": 30, "b": 10}) == pytest.approx(0)
    assert jensen_shannon({"a": 1}, {"b": 1}) == pytest.approx(1)


# --- one analysis run against a fake Prometheus -------------------------------------------


class FakePrometheus:
    """Answers the built-in queries from per-track counts, as the server's metrics would."""

    def __init__(self, **tracks: dict[str, Any]) -> None:
        self.tracks = tracks
        self.queries: list[str] = []

    def query(self, promql: str) -> list[Sample]:
        self.queries.append(promql)
        track = re.search(r'track="(\w+)"', promql)
        data = self.tracks.get(track.group(1) if track else "", {})
        if "modeldeploy_predictions_total" in promql:
            return [({"class": k}, float(v)) for k, v in data.get("classes", {}).items()]
        if "modeldeploy_prediction_value_bucket" in promql:
            return []
        if "histogram_quantile" in promql:
            return [({}, data["p99"])] if "p99" in data else []
        if "modeldeploy_request_duration_seconds_count" in promql:
            return [({}, float(data.get("requests", 0)))] if data.get("requests") else []
        if "modeldeploy_requests_total" in promql:
            code = re.search(r'code=~"(\d)\.\."', promql)
            key = f"{code.group(1)}xx" if code else "requests"
            return [({}, float(data[key]))] if data.get(key) else []
        return []


def analysed(metrics: list[dict[str, Any]]) -> Any:
    return mdep(analysis={"interval": "10s", "metrics": metrics})


def test_a_run_reads_both_tracks_for_a_relative_bound_and_says_the_counts() -> None:
    md = analysed([{"name": "client-error-rate", "maxIncrease": "0.01"}])
    source = FakePrometheus(
        canary={"requests": 120, "4xx": 120}, stable={"requests": 360, "4xx": 3}
    )
    [entry] = measure(md, source, T0, window=timedelta(seconds=25))
    assert entry.result == "Failed"
    assert (entry.value, entry.stable_value) == (1.0, pytest.approx(3 / 360, abs=1e-6))
    assert (entry.samples, entry.stable_samples, entry.window) == (120, 360, "25s")
    assert entry.message == (
        "canary 120 of 120 requests answered 4xx; stable 3 of 360 requests answered 4xx"
    )
    assert all("[25s]" in q or "offset 25s" in q for q in source.queries)


def test_a_relative_latency_bound_fails_a_slower_canary_whose_absolute_latency_passes() -> None:
    md = analysed([{"name": "latency-p99", "max": 1.0, "maxIncrease": "20%"}])
    source = FakePrometheus(
        canary={"requests": 200, "p99": 0.048}, stable={"requests": 200, "p99": 0.032}
    )
    [entry] = measure(md, source, T0)
    assert (entry.result, entry.value, entry.stable_value) == ("Failed", 0.048, 0.032)


def test_drift_compares_predictions_and_says_how_many() -> None:
    md = analysed([{"name": "prediction-drift", "max": 0.1}])
    same = {"0": 70, "1": 20, "2": 10}
    [entry] = measure(md, FakePrometheus(canary={"classes": same}, stable={"classes": same}), T0)
    assert (entry.result, entry.value, entry.p_value) == ("Passed", 0.0, 1.0)
    assert entry.message.startswith("compared 100 canary and 100 stable predictions")
    rotated = {"0": 10, "1": 70, "2": 20}
    source = FakePrometheus(canary={"classes": rotated}, stable={"classes": same})
    [entry] = measure(md, source, T0)
    assert entry.result == "Failed" and entry.p_value < 1e-6
    # the same shift on a dozen predictions is within chance: no verdict yet
    few = FakePrometheus(
        canary={"classes": {"0": 1, "1": 7, "2": 2}}, stable={"classes": {"0": 7, "1": 2, "2": 1}}
    )
    [entry] = measure(md, few, T0)
    assert entry.result == "Inconclusive" and entry.samples == 10


def test_no_request_at_all_is_zero_samples_for_every_built_in() -> None:
    md = analysed(
        [
            {"name": "error-rate", "max": 0.01},
            {"name": "client-error-rate", "maxIncrease": "0.01"},
            {"name": "latency-p99", "max": 1},
            {"name": "prediction-drift", "max": 0.1},
        ]
    )
    runs = measure(md, FakePrometheus(stable={"requests": 50, "classes": {"0": 50}}), T0)
    assert [(r.result, r.samples) for r in runs] == [("Inconclusive", 0)] * 4


def test_placeholders_take_the_window() -> None:
    query = render('rate(x{track="{{track}}"}[{{interval}}])', mdep(), "stable", 95)
    assert query == 'rate(x{track="stable"}[95s])'


# --- the window and the deadline in the step function -----------------------------------


ANALYSIS = {"interval": "10s", "failureLimit": 2, "metrics": [{"name": "error-rate", "max": 0.05}]}


def run(result: str, samples: int, at: float) -> list[AnalysisResult]:
    entry: dict[str, Any] = {
        "name": "error-rate", "max": 0.05, "samples": samples, "result": result,
        "time": iso(T0 + timedelta(seconds=at)),
    }  # fmt: skip
    if result != "Inconclusive":
        entry["value"] = 0.0
    elif samples:
        entry["message"] = f"too few samples from the canary: {samples} of the 100 (minSamples)"
    return [AnalysisResult.model_validate(entry)]


def test_runs_with_too_few_samples_widen_the_window_until_one_counts() -> None:
    md = mdep(steps=[{"setWeight": 50}], analysis=ANALYSIS)
    status = tick(md, stable_status(), seen())
    assert analysis_window(md, typed(status), T0 + timedelta(seconds=10)) == timedelta(seconds=10)
    status = tick(md, status, seen(10, canary_ready=2, analysis=run("Inconclusive", 40, 10)))
    assert status["canary"]["windowStart"] == iso(T0)  # the evidence so far is kept
    assert analysis_window(md, typed(status), T0 + timedelta(seconds=20)) == timedelta(seconds=20)
    status = tick(md, status, seen(20, canary_ready=2, analysis=run("Passed", 110, 20)))
    assert status["canary"]["windowStart"] == iso(T0 + timedelta(seconds=20))
    assert analysis_window(md, typed(status), T0 + timedelta(seconds=30)) == timedelta(seconds=10)
    assert status["canary"]["state"] == "Promoting"


def test_the_window_never_exceeds_the_progress_deadline() -> None:
    md = mdep(analysis=ANALYSIS, progressDeadline="1m")
    status = tick(md, stable_status(), seen())
    assert analysis_window(md, typed(status), T0 + timedelta(hours=3)) == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("policy", "result", "says"),
    [
        ("Rollback", "RolledBack", "no traffic reached the canary within 60s"),
        ("Promote", "Promoted", "(no traffic reached the canary)"),
    ],
)
def test_without_traffic_the_deadline_decides_by_policy(
    policy: str, result: str, says: str
) -> None:
    md = mdep(
        steps=[{"setWeight": 50}],
        analysis={**ANALYSIS, "onNoTraffic": policy},
        progressDeadline="60s",
    )
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(10, canary_ready=2, analysis=run("Inconclusive", 0, 10)))
    progressing = decided(status).progressing
    assert progressing is not None and "no traffic has reached the canary yet" in progressing[1]
    status = tick(md, status, seen(75, canary_ready=2, analysis=run("Inconclusive", 0, 75)))
    if policy == "Promote":
        assert ("Normal", "PromotedWithoutTraffic") in [e[:2] for e in decided(status).events]
        key = model_key(decided(status).stable_target)
        status = tick(md, status, seen(80, canary_ready=2, stable_runs=key))
    entry = status["history"][0]
    assert entry["result"] == result and says in entry["message"], entry


def test_too_little_traffic_at_the_deadline_rolls_back_saying_so() -> None:
    md = mdep(
        steps=[{"setWeight": 50}],
        analysis={**ANALYSIS, "onNoTraffic": "Promote"},
        progressDeadline="60s",
    )
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(10, canary_ready=2, analysis=run("Inconclusive", 5, 10)))
    status = tick(md, status, seen(75, canary_ready=2, analysis=run("Inconclusive", 12, 75)))
    entry = status["history"][0]
    assert entry["result"] == "RolledBack"
    assert "too few samples from the canary: 12 of the 100" in entry["message"]
