"""One tick of an active canary: check its contract, count its analysis, walk its steps,
promote or roll back. Pure; ``plan.advance`` decides when there is a canary to walk.

The order within a tick is the order of the questions a careful human would ask: was it
aborted? is it being promoted? does its model still speak the stable model's language? what
did the analysis measure? may the next step move traffic? (``steps`` answers the last.)
"""

from __future__ import annotations

from datetime import datetime

from modeldeploy.api import CanaryStatus, ModelDeployment, ModelStatus, parse_duration
from modeldeploy.api.rollout import Analysis
from modeldeploy.api.status import ContractCheck
from modeldeploy.rollout.contract import ContractReading, differences
from modeldeploy.rollout.state import (
    Decision,
    Observations,
    canary_replicas,
    describe_model,
    entry,
    last_analysis,
    model_key,
    parse_time,
    record,
    stable_share,
    stamp,
)
from modeldeploy.rollout.steps import walk_steps
from modeldeploy.rollout.tick import Tick, no_traffic, promote, rollback
from modeldeploy.rollout.verdicts import summary

__all__ = ["walk"]


def _contract_record(
    compatibility: str, reading: ContractReading, now: datetime, overdue: bool
) -> tuple[ContractCheck | None, list[str]]:
    """(``status.canary.contract``, differences) from this tick's reading; no record while
    the reading is incomplete, unless a declared breaking change has waited for it until the
    progress deadline (then it goes on, Unchecked)."""
    if reading.stable is None or reading.canary is None:
        if compatibility != "Breaking" or not overdue:
            return None, []
        message = reading.error or "the model metadata could not be read"
        return ContractCheck(result="Unchecked", message=message[:1024], time=now), []
    found = differences(reading.stable, reading.canary)
    check = ContractCheck(
        result="Incompatible" if found else "Compatible",
        differences=[line[:512] for line in found[:32]] if found else None,
        time=now,
    )
    return check, found


def _promoting(tick: Tick) -> Decision:
    """The stable track takes the new model; done once every stable pod runs it."""
    decision, target, canary, weight = tick.decision, tick.target, tick.canary, tick.canary.weight
    decision.stable_target = target
    decision.canary_replicas = canary_replicas(tick.total, weight, exact=tick.exact)
    decision.weight = weight
    if tick.obs.stable_runs == model_key(target):
        passed = canary.passed_checks
        message = f"promoted at step {canary.step_index} of {len(tick.steps)}"
        if tick.rollout.analysis:
            message += f" after {passed} passing analysis run(s)"
            if passed == 0 and no_traffic(canary.analysis):
                message += " (no traffic reached the canary)"
        record(decision, entry(target, canary, "Promoted", "Promoted", message, tick.obs.now))
        decision.stable = target
        decision.canary = decision.canary_target = None
        decision.canary_replicas = decision.weight = 0
        decision.events.append(
            ("Normal", "Promoted", f"{describe_model(target)} is now the stable model")
        )
        return decision
    if tick.overdue():
        return rollback(
            tick,
            "ProgressDeadlineExceeded",
            f"the stable pods did not all run {describe_model(target)} within "
            f"{tick.rollout.progress_deadline} of promotion",
        )
    decision.progressing = (
        "Promoting",
        f"Promoting {describe_model(target)}: the stable pods are being replaced; the canary "
        f"keeps {weight}% of traffic until they are all ready.",
    )
    decision.wake(tick.deadline.total_seconds())
    return decision


def _check_contract(tick: Tick) -> Decision | None:
    """Record this tick's contract reading; a rollback when it breaks a Strict contract."""
    reading = tick.obs.contract
    if tick.canary.contract is not None or reading is None:
        return None
    compatibility = tick.rollout.compatibility
    check, found = _contract_record(compatibility, reading, stamp(tick.obs.now), tick.overdue())
    if check is None:
        return None
    tick.canary.contract = check
    described = describe_model(tick.target)
    if check.result == "Unchecked":
        tick.decision.events.append(
            ("Warning", "ContractUnchecked",
             f"{described}: {check.message}; traffic moves all the same after "
             f"{tick.rollout.progress_deadline}, as rollout.compatibility is Breaking")
        )  # fmt: skip
    elif found and compatibility == "Breaking":
        tick.decision.events.append(
            ("Warning", "BreakingChange",
             f"{described} changes the model's contract, as rollout.compatibility: "
             f"Breaking allows: {'; '.join(found)}")
        )  # fmt: skip
    elif found:
        return rollback(
            tick,
            "IncompatibleModel",
            "the canary's model breaks what clients of the stable model rely on: "
            f"{'; '.join(found)} (set rollout.compatibility: Breaking if that is intended)",
        )
    return None


def _count_analysis(tick: Tick, analysis: Analysis) -> Decision | None:
    """Count this tick's analysis run; a rollback at the failure limit."""
    results = tick.obs.analysis
    if results is None:
        return None
    canary = tick.canary
    canary.analysis = results
    verdicts = {r.result for r in results}
    failed = "Failed" in verdicts or (
        "Inconclusive" in verdicts and analysis.inconclusive == "Fail"
    )
    if failed:
        canary.failed_checks += 1
    elif "Inconclusive" not in verdicts:
        canary.passed_checks += 1
    if failed or "Inconclusive" not in verdicts:
        # A run that counted used its evidence up; an inconclusive one leaves the window
        # open, so the next run reads what this one saw and more.
        canary.window_start = stamp(tick.obs.now)
    if canary.failed_checks >= analysis.failure_limit:
        return rollback(
            tick,
            "AnalysisFailed",
            f"{canary.failed_checks} failed analysis run(s) (failureLimit "
            f"{analysis.failure_limit}): {summary(results)}",
        )
    return None


def _measurable(analysis: Analysis, canary: CanaryStatus) -> bool:
    """Whether a run now would measure anything (see ``AnalysisMetric.measured``)."""
    shadowing = canary.state == "Shadowing"
    return any(m.measured(shadowing) for m in analysis.metrics)


def _run(tick: Tick) -> Decision:
    """The questions of a tick, in order (see the module docstring)."""
    obs, decision, canary = tick.obs, tick.decision, tick.canary
    if obs.abort:
        return rollback(tick, "Aborted", "aborted by the serving.modeldeploy.io/abort annotation")
    if canary.state == "Promoting":
        return _promoting(tick)
    broken = _check_contract(tick)
    if broken is not None:
        return broken
    analysis = tick.rollout.analysis
    if analysis is not None:
        failed = _count_analysis(tick, analysis)
        if failed is not None:
            return failed
    if obs.promote:
        return promote(
            tick,
            "PromotedByUser",
            f"{describe_model(tick.target)} promoted by the serving.modeldeploy.io/promote "
            "annotation",
        )
    waiting = walk_steps(tick)
    if isinstance(waiting, Decision):
        return waiting
    total, weight, exact = tick.total, canary.weight, tick.exact
    decision.weight = weight
    decision.canary_replicas = max(
        decision.canary_replicas, canary_replicas(total, weight, exact=exact)
    )
    if not exact and not obs.autoscaled and weight > 0:
        # Only pods already ready for the current weight take over the stable track's share.
        decision.stable_replicas = stable_share(total, canary_replicas(total, weight, exact=False))
    reason = {"Paused": "CanaryPaused", "Shadowing": "CanaryShadowing"}.get(
        canary.state, "CanaryProgressing"
    )
    decision.progressing = (reason, waiting)
    if analysis is not None and _measurable(analysis, canary):
        # analysis runs in the background, paused or not
        last = last_analysis(canary) or parse_time(canary.started_at)
        decision.wake((last + parse_duration(analysis.interval) - obs.now).total_seconds())
    return decision


def walk(
    md: ModelDeployment,
    stable: ModelStatus,
    target: ModelStatus,
    canary: CanaryStatus,
    obs: Observations,
    decision: Decision,
) -> Decision:
    """Advance an active canary as far as the observations allow."""
    decision.canary_target = target
    decision.canary = canary
    if obs.routing_error:
        decision.degraded = ("TrafficRoutingUnavailable", obs.routing_error)
    elif obs.analysis_error:
        decision.degraded = ("AnalysisUnavailable", obs.analysis_error)
    return _run(Tick(md, stable, target, canary, obs, decision))
