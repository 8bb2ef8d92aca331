"""The rollout step function, tick by tick: every transition from a table of situations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from modeldeploy.api import ModelDeployment, ModelDeploymentStatus
from modeldeploy.api.status import AnalysisResult
from modeldeploy.rollout import Observations, advance, analysis_due
from modeldeploy.rollout.contract import ContractReading, ModelContract, TensorContract
from modeldeploy.rollout.plan import Decision, canary_replicas, desired_model, iso, model_key

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
OLD = "https://models.example.com/iris/1/model.onnx"
NEW = "https://models.example.com/iris/2/model.onnx"
STEPS = [{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"pause": {}}]
ANALYSIS = {
    "interval": "10s",
    "failureLimit": 2,
    "metrics": [{"name": "error-rate", "max": 0.05}, {"name": "latency-p99", "max": 0.5}],
}


def mdep(
    uri: str = NEW,
    *,
    steps: list[dict[str, Any]] | None = None,
    analysis: dict[str, Any] | None = None,
    strategy: str = "Canary",
    replicas: int = 4,
    routing: bool = False,
    **rollout: Any,
) -> ModelDeployment:
    spec_rollout: dict[str, Any] = {"strategy": strategy}
    if strategy == "Canary":
        spec_rollout["steps"] = STEPS if steps is None else steps
        if analysis is not None:
            spec_rollout["analysis"] = analysis
        if routing:
            spec_rollout["trafficRouting"] = {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}}
    spec_rollout.update(rollout)
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": 2},
            "spec": {"model": {"uri": uri}, "replicas": replicas, "rollout": spec_rollout},
        }
    )


def wire(model: BaseModel) -> dict[str, Any]:
    """A status model as the API stores it."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def typed(status: dict[str, Any]) -> ModelDeploymentStatus:
    """The stored status as the operator reads it."""
    return ModelDeploymentStatus.model_validate(
        {k: v for k, v in status.items() if k != "_decision"}
    )


def stable_status(md: ModelDeployment | None = None) -> dict[str, Any]:
    return {"stable": wire(desired_model(md or mdep(OLD)))}


IRIS = ModelContract(
    inputs=(TensorContract("X", "FP32", (-1, 4)),),
    outputs=(
        TensorContract("label", "INT64", (-1,)),
        TensorContract("probabilities", "FP32", (-1, 3)),
    ),
    classes=frozenset({"0", "1", "2"}),
)
SAME = ContractReading(stable=IRIS, canary=IRIS)


def seen(seconds: float = 0, **fields: Any) -> Observations:
    """What the reconciler observes; with ready canary pods it reads both tracks' metadata
    (the same model's, unless ``contract`` says otherwise) until the check is recorded."""
    fields.setdefault("stable_replicas", 4)
    if fields.get("canary_ready"):
        fields.setdefault("contract", SAME)
    return Observations(now=T0 + timedelta(seconds=seconds), **fields)


def tick(md: ModelDeployment, status: dict[str, Any], obs: Observations) -> dict[str, Any]:
    """Apply a decision to the status as the reconciler does; return the new status, as
    stored (the next tick reads it back through the API models)."""
    decision = advance(md, typed(status), obs)
    new = {k: v for k, v in status.items() if k not in ("stable", "canary", "history", "_decision")}
    for key in ("stable", "canary", "history"):
        value = getattr(decision, key)
        if value:
            new[key] = [wire(v) for v in value] if isinstance(value, list) else wire(value)
    new["_decision"] = decision
    return new


def decided(status: dict[str, Any]) -> Decision:
    decision = status["_decision"]
    assert isinstance(decision, Decision)
    return decision


def run(result: str, value: float | None = 0.0) -> list[AnalysisResult]:
    entry: dict[str, Any] = {"name": "error-rate", "max": 0.05, "result": result, "time": iso(T0)}
    if value is not None:
        entry["value"] = value
    return [AnalysisResult.model_validate(entry)]


def passed_run(at: float) -> list[AnalysisResult]:
    return [
        AnalysisResult.model_validate(
            {
                "name": "error-rate",
                "value": 0.0,
                "max": 0.05,
                "result": "Passed",
                "time": iso(T0 + timedelta(seconds=at)),
            }
        )
    ]


# --- starting, or not -------------------------------------------------------------------------


def test_the_first_model_is_deployed_directly() -> None:
    md = mdep(NEW)
    decision = advance(md, ModelDeploymentStatus(), seen())
    assert decision.canary is None and decision.canary_target is None
    assert decision.stable_target == desired_model(md)
    assert decision.stable is None  # recorded by the status once ready


def test_nothing_changes_when_the_spec_is_the_stable_model() -> None:
    md = mdep(OLD)
    decision = advance(md, typed(stable_status()), seen())
    assert decision.canary is None and decision.events == []
    assert decision.stable_target.uri == OLD and decision.requeue_after is None


def test_rolling_strategy_replaces_the_stable_track_in_place() -> None:
    md = mdep(NEW, strategy="Rolling")
    decision = advance(md, typed(stable_status()), seen())
    assert decision.canary is None and decision.stable_target.uri == NEW


def test_a_new_model_starts_a_canary_and_keeps_stable_on_the_old_one() -> None:
    status = tick(mdep(), stable_status(), seen())
    decision = decided(status)
    assert decision.stable_target.uri == OLD
    assert decision.canary_target is not None and decision.canary_target.uri == NEW
    assert status["canary"]["stepIndex"] == 0 and status["canary"]["weight"] == 0
    assert status["canary"]["startedAt"] == iso(T0)
    assert decision.events[0][1] == "RolloutStarted"
    # 20% of 4 pods by replica ratio: one canary pod, the stable track untouched until ready
    assert decision.canary_replicas == 1 and decision.stable_replicas == 4
    assert decision.weight == 0


def test_a_pod_template_change_starts_a_canary_too() -> None:
    md = mdep(OLD)
    changed = mdep(OLD).model_copy(deep=True)
    changed.spec.model.name = "renamed"
    status = tick(changed, stable_status(md), seen())
    assert status["canary"]["uri"] == OLD
    assert status["canary"]["templateHash"] != stable_status(md)["stable"]["templateHash"]


# --- walking the steps ------------------------------------------------------------------------


def test_traffic_moves_only_once_canary_pods_are_ready() -> None:
    md = mdep()
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(5, canary_ready=0))
    assert status["canary"]["weight"] == 0 and status["canary"]["stepIndex"] == 0
    assert "waiting for 1 canary pod(s)" in decided(status).progressing[1]  # type: ignore[index]
    status = tick(md, status, seen(6, canary_ready=1))
    assert status["canary"]["weight"] == 20 and status["canary"]["stepIndex"] == 1
    assert decided(status).weight == 20
    # replica ratio: the stable track gives up the canary's share only now
    assert decided(status).stable_replicas == 3


def test_a_timed_pause_waits_then_the_next_weight_follows() -> None:
    md = mdep()
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=1))
    assert status["canary"]["stepIndex"] == 1
    decision = decided(status)
    assert decision.requeue_after == pytest.approx(30)
    status = tick(md, status, seen(20, canary_ready=1))
    assert status["canary"]["stepIndex"] == 1
    status = tick(md, status, seen(31, canary_ready=1))
    # the pause ended; setWeight 50 needs two canary pods
    assert status["canary"]["stepIndex"] == 2 and decided(status).canary_replicas == 2
    status = tick(md, status, seen(40, canary_ready=2))
    assert status["canary"]["weight"] == 50 and status["canary"]["state"] == "Paused"


def test_a_pause_without_duration_waits_for_a_human_then_promotes() -> None:
    md = mdep(steps=[{"setWeight": 50}, {"pause": {}}])
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=2))
    assert status["canary"]["state"] == "Paused"
    status = tick(md, status, seen(600, canary_ready=2))  # a human pause never times out
    assert status["canary"]["state"] == "Paused" and not decided(status).history
    status = tick(md, status, seen(601, canary_ready=2, promote=True))
    decision = decided(status)
    assert status["canary"]["state"] == "Promoting" and decision.clear_annotations
    assert decision.stable_target.uri == NEW  # the stable track now takes the new model
    assert decision.canary_replicas == 2 and decision.weight == 50  # canary keeps serving


def test_promotion_finishes_when_every_stable_pod_runs_the_new_model() -> None:
    md = mdep(steps=[{"setWeight": 50}])
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=2))
    assert status["canary"]["state"] == "Promoting"
    status = tick(md, status, seen(5, canary_ready=2, stable_runs=None))
    assert status["canary"]["state"] == "Promoting"
    key = model_key(desired_model(md))
    status = tick(md, status, seen(9, canary_ready=2, stable_runs=key))
    decision = decided(status)
    assert "canary" not in status and decision.canary_target is None
    assert status["stable"]["uri"] == NEW
    assert status["history"][0]["result"] == "Promoted"
    assert decision.events[-1][1] == "Promoted"
    # the next tick is steady
    status = tick(md, status, seen(10, stable_runs=key))
    assert "canary" not in status and decided(status).events == []


# --- analysis ---------------------------------------------------------------------------------


def test_analysis_is_due_one_interval_after_the_start_and_after_each_run() -> None:
    md = mdep(analysis=ANALYSIS)
    status = tick(md, stable_status(), seen())
    assert not analysis_due(md, typed(status), T0 + timedelta(seconds=9))
    assert analysis_due(md, typed(status), T0 + timedelta(seconds=10))
    status = tick(md, status, seen(10, canary_ready=1, analysis=passed_run(10)))
    assert not analysis_due(md, typed(status), T0 + timedelta(seconds=15))
    assert analysis_due(md, typed(status), T0 + timedelta(seconds=20))


def test_failed_checks_reaching_the_limit_roll_back_with_the_values() -> None:
    md = mdep(analysis=ANALYSIS)
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(10, canary_ready=1, analysis=run("Failed", 0.31)))
    assert status["canary"]["failedChecks"] == 1
    status = tick(md, status, seen(20, canary_ready=1, analysis=run("Failed", 0.4)))
    decision = decided(status)
    assert "canary" not in status and decision.canary_target is None
    assert decision.stable_target.uri == OLD and decision.weight == 0
    entry = status["history"][0]
    assert entry["result"] == "RolledBack" and entry["reason"] == "AnalysisFailed"
    assert "error-rate = 0.4 (max 0.05)" in entry["message"]
    assert "2 failed analysis run(s) (failureLimit 2" in entry["message"]
    assert decision.degraded is not None and decision.degraded[0] == "AnalysisFailed"
    assert decision.events[-1][0] == "Warning"


def test_a_rolled_back_model_is_not_retried_until_the_spec_changes() -> None:
    md = mdep(analysis=ANALYSIS)
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, abort=True))
    for later in (5, 500):
        status = tick(md, status, seen(later))
        assert "canary" not in status
        assert decided(status).degraded[0] == "Aborted"  # type: ignore[index]
    status = tick(mdep(NEW + "?v=3", analysis=ANALYSIS), status, seen(600))
    assert status["canary"]["uri"].endswith("v=3") and decided(status).degraded is None


@pytest.mark.parametrize(
    ("policy", "failed", "passed"), [("Wait", 0, 0), ("Fail", 1, 0)], ids=["wait", "fail"]
)
def test_no_data_is_inconclusive_by_policy(policy: str, failed: int, passed: int) -> None:
    md = mdep(analysis={**ANALYSIS, "inconclusive": policy})
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(10, canary_ready=1, analysis=run("Inconclusive", None)))
    assert status["canary"]["failedChecks"] == failed
    assert status["canary"]["passedChecks"] == passed


def test_promotion_waits_for_a_passing_run_when_analysis_is_set() -> None:
    md = mdep(steps=[{"setWeight": 50}], analysis=ANALYSIS)
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=2))
    assert status["canary"]["state"] == "Progressing"
    assert "waiting for a passing analysis run" in decided(status).progressing[1]  # type: ignore[index]
    status = tick(md, status, seen(10, canary_ready=2, analysis=passed_run(10)))
    assert status["canary"]["state"] == "Promoting"


def test_analysis_unavailable_is_degraded_but_keeps_the_canary() -> None:
    md = mdep(analysis=ANALYSIS)
    status = tick(md, stable_status(), seen(analysis_error="no Prometheus"))
    assert status["canary"] and decided(status).degraded == ("AnalysisUnavailable", "no Prometheus")


# --- manual control, superseding, deadlines -----------------------------------------------


def test_abort_during_a_pause_rolls_back_now() -> None:
    md = mdep(steps=[{"setWeight": 20}, {"pause": {}}])
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=1))
    assert status["canary"]["state"] == "Paused"
    status = tick(md, status, seen(2, canary_ready=1, abort=True))
    decision = decided(status)
    assert "canary" not in status and status["history"][0]["reason"] == "Aborted"
    assert decision.clear_annotations and decision.stable_target.uri == OLD


def test_a_spec_change_mid_rollout_supersedes_the_canary() -> None:
    status = tick(mdep(), stable_status(), seen())
    status = tick(mdep(), status, seen(1, canary_ready=1))
    third = mdep(NEW + "?v=3")
    status = tick(third, status, seen(2, canary_ready=1))
    assert status["history"][0]["result"] == "Superseded"
    assert status["canary"]["uri"] == third.spec.model.uri
    assert status["canary"]["stepIndex"] == 0 and status["canary"]["weight"] == 0


def test_going_back_to_the_stable_model_mid_rollout_ends_the_canary() -> None:
    status = tick(mdep(), stable_status(), seen())
    status = tick(mdep(OLD), status, seen(1))
    assert "canary" not in status and status["history"][0]["result"] == "Superseded"
    assert decided(status).degraded is None


def test_a_canary_whose_pods_never_get_ready_hits_the_deadline() -> None:
    md = mdep(progressDeadline="60s")
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(30))
    assert decided(status).requeue_after == pytest.approx(30)
    status = tick(md, status, seen(61))
    assert status["history"][0]["reason"] == "ProgressDeadlineExceeded"
    assert "0 of 1 pod(s) ready" in status["history"][0]["message"]


def test_a_promotion_that_never_completes_rolls_back_to_the_old_model() -> None:
    md = mdep(steps=[{"setWeight": 50}], progressDeadline="60s")
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=2))
    status = tick(md, status, seen(100, canary_ready=2))
    assert status["history"][0]["reason"] == "ProgressDeadlineExceeded"
    assert decided(status).stable_target.uri == OLD


def test_status_alone_resumes_a_rollout_at_the_same_step() -> None:
    """What a restarted operator sees is the stored status: the same step, not step 0."""
    md = mdep()
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=1))
    stored = {k: v for k, v in status.items() if k != "_decision"}
    resumed = tick(md, stored, seen(2, canary_ready=1))
    assert resumed["canary"]["stepIndex"] == 1 and resumed["canary"]["weight"] == 20
    assert decided(resumed).events == []


# --- traffic ----------------------------------------------------------------------------------


def test_gateway_routing_keeps_the_stable_track_whole() -> None:
    md = mdep(routing=True)
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=1))
    decision = decided(status)
    assert decision.weight == 20 and decision.stable_replicas == 4


def test_a_routing_error_holds_the_weight_and_is_degraded() -> None:
    md = mdep(routing=True)
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(1, canary_ready=1, routing_error="no HTTPRoute"))
    decision = decided(status)
    assert status["canary"]["weight"] == 0 and decision.weight == 0
    assert decision.degraded == ("TrafficRoutingUnavailable", "no HTTPRoute")


@pytest.mark.parametrize(
    ("total", "weight", "exact", "pods"),
    [(4, 20, False, 1), (4, 50, False, 2), (10, 10, False, 1), (1, 10, True, 1), (4, 30, True, 2)],
)
def test_canary_pods_for_a_weight(total: int, weight: int, exact: bool, pods: int) -> None:
    assert canary_replicas(total, weight, exact=exact) == pods


def test_an_autoscaled_stable_track_keeps_its_replicas_to_the_autoscaler() -> None:
    md = mdep()
    status = tick(md, stable_status(), seen(autoscaled=True, stable_replicas=6))
    status = tick(md, status, seen(1, canary_ready=2, autoscaled=True, stable_replicas=6))
    decision = decided(status)
    assert decision.stable_replicas is None and decision.canary_replicas >= 1


def test_a_routing_error_without_a_rollout_is_degraded_too() -> None:
    md = mdep(OLD, routing=True)
    decision = advance(md, typed(stable_status()), seen(routing_error="no HTTPRoute"))
    assert decision.degraded == ("TrafficRoutingUnavailable", "no HTTPRoute")
    assert (
        advance(md, ModelDeploymentStatus(), seen(routing_error="no HTTPRoute")).degraded
        is not None
    )
