"""Shadow steps: the gates' arithmetic, one analysis run of them, and the step tick by tick."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from modeldeploy.api import ModelDeployment
from modeldeploy.api.status import AnalysisResult
from modeldeploy.builders.shadow import build_shadow_config, shadow_config
from modeldeploy.config import OperatorConfig
from modeldeploy.reconcilers.children import reconcile_children
from modeldeploy.reconcilers.rollout_children import plan_rollout
from modeldeploy.rollout.agreement import (
    Slice,
    agreement,
    describe_disagreement,
    slices,
    worst_slice,
)
from modeldeploy.rollout.analysis import BUILTIN_QUERIES, Sample, measure, render
from modeldeploy.rollout.plan import iso
from tests.unit.operator.test_rollout_contract import Cluster, Metadata, canary_deployment
from tests.unit.operator.test_rollout_plan import (
    NEW,
    T0,
    decided,
    mdep,
    seen,
    stable_status,
    tick,
    typed,
)

# --- the arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "disagreements", "expected"),
    [(1000, 12, 0.988), (50, 0, 1.0), (10, 12, 0.0), (0, 0, None), (0, 3, None)],
    ids=["some", "none", "counter-ahead", "no-rows", "no-rows-but-counted"],
)
def test_agreement_is_the_share_of_rows_both_models_answered_alike(
    rows: float, disagreements: float, expected: float | None
) -> None:
    assert agreement(rows, disagreements) == (
        pytest.approx(expected) if expected is not None else None
    )


def test_slices_pair_rows_with_their_disagreements_by_feature_and_bin() -> None:
    rows = [
        ({"feature": "petal_length", "bin": "[4.7, 5.1)"}, 312.0),
        ({"feature": "petal_length", "bin": "[1, 1.6)"}, 400.0),
        ({"feature": "city", "bin": "Paris"}, 20.0),
        ({"feature": "city", "bin": "Lyon"}, 0.0),  # no row in the window: no slice
    ]
    disagreements = [({"feature": "petal_length", "bin": "[4.7, 5.1)"}, 28.4)]
    found = slices(rows, disagreements)
    assert found == [
        Slice("city", "Paris", 20.0, 0.0),
        Slice("petal_length", "[1, 1.6)", 400.0, 0.0),
        Slice("petal_length", "[4.7, 5.1)", 312.0, 28.4),
    ]
    assert [s.where for s in found] == [
        "city = Paris",
        "petal_length in [1, 1.6)",
        "petal_length in [4.7, 5.1)",
    ]


def test_the_worst_slice_is_judged_only_among_slices_with_enough_rows() -> None:
    found = [
        Slice("f", "[0, 1)", 40.0, 20.0),  # the worst, but on too few rows
        Slice("f", "[1, 2)", 312.0, 28.4),
        Slice("g", "a", 500.0, 5.0),
    ]
    assert worst_slice(found, 100) == found[1]
    assert worst_slice(found, 10) == found[0]
    assert worst_slice(found, 1000) is None
    assert worst_slice([], 0) is None
    # equal agreement: the slice with more rows is the stronger evidence
    tie = [Slice("f", "a", 100.0, 10.0), Slice("f", "b", 200.0, 20.0)]
    assert worst_slice(tie, 100) == tie[1]


def test_the_message_names_the_models_the_slice_and_its_rows() -> None:
    where = Slice("petal_length", "[4.7, 5.1)", 312, 28.4).where
    assert describe_disagreement("v2", "v1", 312, 28.4, where) == (
        "v2 disagrees with v1 on 9.1% of rows where petal_length in [4.7, 5.1) (312 rows)"
    )
    assert (
        describe_disagreement("v2", "v1", 5000, 60) == "v2 disagrees with v1 on 1.2% of 5000 rows"
    )


# --- one analysis run against a fake Prometheus ---------------------------------------------


class ShadowPrometheus:
    """Answers the shadow queries from the stable track's counts (the track that mirrors)."""

    def __init__(
        self, rows: float = 0, disagreed: float = 0, dropped: float = 0, **slices: Any
    ) -> None:
        self.counts = {"rows": rows, "disagreed": disagreed, "dropped": dropped}
        self.slices: dict[tuple[str, str], tuple[float, float]] = {
            tuple(k.split("__")): v  # type: ignore[misc]
            for k, v in slices.items()
        }
        self.queries: list[str] = []

    def query(self, promql: str) -> list[Sample]:
        self.queries.append(promql)
        if "modeldeploy_shadow_" not in promql:
            return []  # the canary's own metrics: no request in these tests
        assert re.search(r'track="stable"', promql), promql
        if "modeldeploy_shadow_slice_rows_total" in promql:
            return [({"feature": f, "bin": b}, r) for (f, b), (r, _) in self.slices.items()]
        if "modeldeploy_shadow_disagreements_total" in promql:
            return [({"feature": f, "bin": b}, d) for (f, b), (_, d) in self.slices.items()]
        for name, key in (
            ("rows", "rows"),
            ("disagreeing_rows", "disagreed"),
            ("dropped", "dropped"),
        ):
            if f"modeldeploy_shadow_{name}_total" in promql:
                value = self.counts[key]
                return [({}, value)] if value else []
        raise AssertionError(promql)


def shadowed_md(*metrics: dict[str, Any]) -> ModelDeployment:
    return mdep(
        steps=[{"shadow": {"duration": "10m"}}],
        analysis={
            "interval": "10s",
            "metrics": list(metrics) or [{"name": "error-rate", "max": 1}],
        },
    )


def test_shadow_agreement_passes_and_says_how_much_was_compared_and_dropped() -> None:
    md = shadowed_md({"name": "shadow-agreement", "min": 0.98})
    source = ShadowPrometheus(rows=5000, disagreed=60, dropped=37)
    [entry] = measure(md, source, T0, shadowing=True, versions=("v2", "v1"))
    assert (entry.result, entry.value, entry.samples) == ("Passed", 0.988, 5000)
    assert entry.message == (
        "v2 disagrees with v1 on 1.2% of 5000 rows (37 copies dropped, not compared)"
    )
    [entry] = measure(md, ShadowPrometheus(rows=5000, disagreed=200), T0, shadowing=True)
    assert (entry.result, entry.value) == ("Failed", 0.96)
    assert entry.message == "the canary disagrees with the stable model on 4.0% of 5000 rows"


def test_shadow_slice_agreement_fails_naming_the_worst_slice() -> None:
    md = shadowed_md({"name": "shadow-slice-agreement", "min": 0.95, "minSamples": 100})
    source = ShadowPrometheus(
        **{
            "petal_length__[4.7, 5.1)": (312, 28.4),
            "petal_length__[5.1, 6.9)": (40, 30),  # worse, but on too few rows to judge
            "sepal_width__[2, 3)": (700, 7),
        }
    )
    [entry] = measure(md, source, T0, shadowing=True, versions=("v2", "v1"))
    assert (entry.result, entry.value, entry.samples) == ("Failed", 0.908974, 312)
    assert entry.message == (
        "v2 disagrees with v1 on 9.1% of rows where petal_length in [4.7, 5.1) (312 rows)"
    )


def test_slices_without_enough_rows_are_inconclusive_and_say_the_largest() -> None:
    md = shadowed_md({"name": "shadow-slice-agreement", "min": 0.95})
    [entry] = measure(md, ShadowPrometheus(**{"f__a": (57, 0)}), T0, shadowing=True)
    assert (entry.result, entry.samples) == ("Inconclusive", 57)
    assert entry.message == "no slice has 100 mirrored rows yet (minSamples; the largest has 57)"
    [entry] = measure(md, ShadowPrometheus(), T0, shadowing=True)
    assert (entry.result, entry.samples) == ("Inconclusive", 0)
    assert entry.message == "no mirrored row compared in this window"


def test_shadow_gates_are_measured_only_while_shadowing() -> None:
    md = shadowed_md({"name": "error-rate", "max": 1}, {"name": "shadow-agreement", "min": 0.9})
    source = ShadowPrometheus(rows=100)
    names = [r.name for r in measure(md, source, T0, shadowing=False)]
    assert names == ["error-rate"]
    assert not any("shadow" in q for q in source.queries)
    only_shadow = shadowed_md({"name": "shadow-agreement", "min": 0.9})
    assert measure(only_shadow, source, T0, shadowing=False) == []


class CopiesPrometheus:
    """The canary answered 200 mirrored copies, 6 of them 5xx, and no client (its
    ``modeldeploy_requests_total`` is empty); the stable track answered 1000 clients."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query(self, promql: str) -> list[Sample]:
        self.queries.append(promql)
        canary = 'track="canary"' in promql
        if "modeldeploy_shadow_requests_total" in promql:
            assert canary, promql
            return [({}, 6.0 if 'code=~"5.."' in promql else 200.0)]
        if "modeldeploy_requests_total" in promql and not canary:
            return [({}, 1.0 if 'code=~"5.."' in promql else 1000.0)]
        return []


def test_while_shadowing_the_canary_error_rate_is_read_from_its_copies() -> None:
    md = shadowed_md({"name": "error-rate", "max": 1, "maxIncrease": "0.01"})
    [entry] = measure(md, CopiesPrometheus(), T0, shadowing=True)
    assert (entry.result, entry.value, entry.samples) == ("Failed", 0.03, 200)
    assert entry.stable_value == 0.001
    assert entry.message == (
        "canary 6 of 200 mirrored copies answered 5xx; stable 1 of 1000 requests answered 5xx"
    )
    # Outside a shadow step the same canary has answered no client: nothing to judge.
    [entry] = measure(md, CopiesPrometheus(), T0, shadowing=False)
    assert (entry.result, entry.samples) == ("Inconclusive", 0)


def test_client_only_metrics_wait_for_client_traffic() -> None:
    """latency-p99 and data-quality judge the canary's answers to clients: a shadow step has
    none, so they are left out of its runs (and the shadow gates out of the others)."""
    md = shadowed_md(
        {"name": "latency-p99", "max": 1},
        {"name": "data-quality", "max": 0.1},
        {"name": "prediction-drift", "max": 0.2},
        {"name": "error-rate", "max": 0.01},
        {"name": "shadow-agreement", "min": 0.9},
        {"name": "mine", "query": "vector(1)", "max": 2},
    )
    shadowing = [r.name for r in measure(md, CopiesPrometheus(), T0, shadowing=True)]
    assert shadowing == ["prediction-drift", "error-rate", "shadow-agreement", "mine"]
    serving = [r.name for r in measure(md, CopiesPrometheus(), T0, shadowing=False)]
    assert serving == ["latency-p99", "data-quality", "prediction-drift", "error-rate", "mine"]


def test_every_shadow_query_reads_the_window_and_the_mirroring_track() -> None:
    for name in ("shadow-agreement", "shadow-slice-agreement"):
        for query in BUILTIN_QUERIES[name]:
            rendered = render(query, mdep(), "stable", 600)
            assert 'track="stable"' in rendered and "offset 600s" in rendered
            assert 'namespace="ml",deployment="iris"' in rendered


def test_the_shadow_config_is_json_the_server_reads() -> None:
    assert json.loads(shadow_config("http://iris-canary.ml.svc:8080", 100)) == {
        "target": "http://iris-canary.ml.svc:8080",
        "percent": 100,
    }
    assert json.loads(shadow_config(None, 50)) == {"target": "", "percent": 0}
    assert json.loads(shadow_config("http://x", 0)) == {"target": "", "percent": 0}


# --- the step, tick by tick -------------------------------------------------------------------

SHADOW_THEN_WEIGHT = [{"shadow": {"percent": 50, "duration": "60s"}}, {"setWeight": 25}]


def test_a_shadow_step_mirrors_once_the_canary_is_ready_and_checked_with_no_client_traffic() -> (
    None
):
    md = mdep(steps=SHADOW_THEN_WEIGHT)
    status = tick(md, stable_status(), seen())
    # half of 4 stable pods' requests: capacity of 2 canary pods, on top of stable's 4
    assert decided(status).canary_replicas == 2 and decided(status).mirror == 0
    status = tick(md, status, seen(5, canary_ready=1))
    decision = decided(status)
    assert status["canary"]["state"] == "Progressing" and decision.mirror == 0
    assert "waiting for 2 canary pod(s)" in decision.progressing[1]  # type: ignore[index]
    status = tick(md, status, seen(10, canary_ready=2))
    decision = decided(status)
    assert status["canary"]["state"] == "Shadowing" and status["canary"]["shadowPercent"] == 50
    assert status["canary"]["stepStartedAt"] == iso(T0 + timedelta(seconds=10))
    assert status["canary"]["contract"]["result"] == "Compatible"
    assert (decision.mirror, decision.weight, decision.stable_replicas) == (50, 0, 4)
    assert decision.progressing[0] == "CanaryShadowing"  # type: ignore[index]
    assert "mirror 50% of their requests" in decision.progressing[1]  # type: ignore[index]
    assert decision.requeue_after == pytest.approx(60)


def test_the_shadow_step_ends_after_its_duration_and_mirroring_goes_off() -> None:
    md = mdep(steps=SHADOW_THEN_WEIGHT)
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(10, canary_ready=2))
    status = tick(md, status, seen(69, canary_ready=2))
    assert status["canary"]["state"] == "Shadowing" and decided(status).mirror == 50
    status = tick(md, status, seen(70, canary_ready=2))
    decision = decided(status)
    # the next step moved traffic at once: mirroring is off, the canary answers clients
    assert status["canary"]["stepIndex"] == 2 and status["canary"]["weight"] == 25
    assert "shadowPercent" not in status["canary"]
    assert (decision.mirror, decision.weight) == (0, 25)


def test_a_rollout_of_shadow_steps_only_promotes_after_a_passing_run() -> None:
    md = mdep(
        steps=[{"shadow": {"duration": "60s"}}],
        analysis={"interval": "10s", "metrics": [{"name": "shadow-agreement", "min": 0.98}]},
    )
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=4))
    assert decided(status).mirror == 100 and decided(status).canary_replicas == 4
    passed = [
        AnalysisResult.model_validate(
            {"name": "shadow-agreement", "value": 0.99, "min": 0.98, "samples": 900,
             "result": "Passed", "time": iso(T0 + timedelta(seconds=11))}
        )
    ]  # fmt: skip
    status = tick(md, status, seen(11, canary_ready=4, analysis=passed))
    assert status["canary"]["passedChecks"] == 1
    status = tick(md, status, seen(61, canary_ready=4))
    decision = decided(status)
    assert status["canary"]["state"] == "Promoting" and decision.mirror == 0
    assert decision.weight == 0 and decision.stable_target.uri == NEW


def test_a_failing_shadow_gate_rolls_back_and_mirroring_stops() -> None:
    md = mdep(
        steps=[{"shadow": {"duration": "10m"}}, {"setWeight": 50}],
        analysis={
            "interval": "10s",
            "failureLimit": 1,
            "metrics": [{"name": "shadow-slice-agreement", "min": 0.95}],
        },
    )
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=4))
    message = "v2 disagrees with v1 on 9.1% of rows where petal_length in [4.7, 5.1) (312 rows)"
    failed = [
        AnalysisResult.model_validate(
            {"name": "shadow-slice-agreement", "value": 0.909, "min": 0.95, "samples": 312,
             "result": "Failed", "message": message, "time": iso(T0 + timedelta(seconds=11))}
        )
    ]  # fmt: skip
    status = tick(md, status, seen(11, canary_ready=4, analysis=failed))
    decision = decided(status)
    assert "canary" not in status and decision.canary_target is None
    assert (decision.mirror, decision.weight) == (0, 0)
    assert status["history"][0]["reason"] == "AnalysisFailed"
    assert message in status["history"][0]["message"]


@pytest.mark.parametrize("how", ["abort", "promote"])
def test_abort_or_promotion_during_a_shadow_step_stops_mirroring(how: str) -> None:
    md = mdep(steps=[{"shadow": {"duration": "10m"}}])
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=4))
    assert decided(status).mirror == 100
    status = tick(md, status, seen(2, canary_ready=4, **{how: True}))
    assert decided(status).mirror == 0
    assert ("canary" not in status) == (how == "abort")


def test_a_canary_never_ready_for_its_shadow_step_is_rolled_back_at_the_deadline() -> None:
    md = mdep(steps=[{"shadow": {"duration": "10m"}}], progressDeadline="60s")
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(61, canary_ready=1))
    assert "canary" not in status
    assert status["history"][0]["message"] == (
        "the canary was not ready to be shadowed within 60s: 1 of 4 pod(s) ready"
    )


# --- what the reconciler applies ----------------------------------------------------------------


def planned(md: ModelDeployment, status: dict[str, Any], seconds: float, ready: int) -> Any:
    """What a reconcile at T0 + ``seconds`` applies, with ``ready`` canary pods."""
    kube = Cluster(canary_deployment(md, ready=ready), [])
    now = T0 + timedelta(seconds=seconds)
    return plan_rollout(md, kube, OperatorConfig(), typed(status), now, Metadata())  # type: ignore[arg-type]


def config(plan: Any) -> dict[str, Any]:
    return dict(json.loads(plan.shadow_config["data"]["config.json"]))


def test_the_reconciler_points_the_shadow_config_at_the_canary_service_alone() -> None:
    md = mdep(steps=[{"shadow": {"duration": "10m"}}, {"setWeight": 50}])
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=4))
    assert status["canary"]["state"] == "Shadowing"
    kube = Cluster(canary_deployment(md, ready=4), [])
    plan = plan_rollout(
        md, kube, OperatorConfig(), typed(status), T0 + timedelta(seconds=2), Metadata()
    )  # type: ignore[arg-type]
    assert plan.shadow_config is not None
    assert json.loads(plan.shadow_config["data"]["config.json"]) == {
        "target": "http://iris-canary.ml.svc:8080",
        "percent": 100,
    }
    # the canary's own Service exists for the copies; the main Service selects stable only
    services = {o["metadata"]["name"]: o for o in plan.extra if o["kind"] == "Service"}
    assert services["iris-canary"]["spec"]["selector"]["serving.modeldeploy.io/track"] == "canary"
    assert plan.service is not None
    assert plan.service["spec"]["selector"]["serving.modeldeploy.io/track"] == "stable"
    assert ("v1", "Service", "iris-canary") not in plan.absent
    # after the step, the config mirrors nothing
    later = plan_rollout(
        md, kube, OperatorConfig(), typed(status), T0 + timedelta(minutes=11), Metadata()
    )  # type: ignore[arg-type]
    assert json.loads(later.shadow_config["data"]["config.json"])["target"] == ""  # type: ignore[index]


def test_without_shadow_steps_no_canary_service_and_no_shadow_config_are_asked_for() -> None:
    md = mdep()
    status = tick(md, stable_status(), seen())
    kube = Cluster(canary_deployment(md), [])
    plan = plan_rollout(
        md, kube, OperatorConfig(), typed(status), T0 + timedelta(seconds=1), Metadata()
    )  # type: ignore[arg-type]
    assert ("v1", "Service", "iris-canary") in plan.absent
    assert plan.shadow_config is None


class Applied:
    """A Kube that has the objects given and records what is applied."""

    def __init__(self, *existing: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in existing}
        self.applied: list[dict[str, Any]] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        return self.objects.get((kind, name))

    def apply(self, desired: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(desired)
        self.objects[(desired["kind"], desired["metadata"]["name"])] = desired
        return desired

    def list(self, *_: Any) -> list[dict[str, Any]]:
        return []

    def delete(self, *_: Any) -> None:
        return None


def test_a_modeldeployment_that_never_shadows_has_no_shadow_config() -> None:
    kube = Applied()
    reconcile_children(mdep(), kube, OperatorConfig())  # type: ignore[arg-type]
    assert "ConfigMap" not in {o["kind"] for o in kube.applied}


def test_a_shadow_config_left_by_an_earlier_rollout_is_turned_off() -> None:
    md = mdep()
    left = build_shadow_config(md, 100)
    assert json.loads(left["data"]["config.json"])["target"]
    kube = Applied(left)
    reconcile_children(md, kube, OperatorConfig())  # type: ignore[arg-type]
    [config] = [o for o in kube.applied if o["kind"] == "ConfigMap"]
    assert json.loads(config["data"]["config.json"]) == {"target": "", "percent": 0}
    # known absent from the cache: not even read
    kube = Applied(left)
    reconcile_children(md, kube, OperatorConfig(), may_exist=lambda *_: False)  # type: ignore[arg-type]
    assert "ConfigMap" not in {o["kind"] for o in kube.applied}


def test_shadow_gates_alone_wake_no_analysis_once_the_shadow_step_is_over() -> None:
    md = mdep(
        steps=[{"shadow": {"duration": "60s"}}, {"setWeight": 25}, {"pause": {}}],
        analysis={"interval": "10s", "metrics": [{"name": "shadow-agreement", "min": 0.98}]},
    )
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=4))
    assert decided(status).requeue_after == pytest.approx(9)  # the next run, while shadowing
    status = tick(md, status, seen(61, canary_ready=4))
    assert status["canary"]["state"] == "Paused"
    assert decided(status).requeue_after is None  # a human decides; no run to make
