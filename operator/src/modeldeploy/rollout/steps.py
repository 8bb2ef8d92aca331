"""The steps of ``spec.rollout.steps``, in the manner of Argo Rollouts' canary: a dispatcher
picks the function of the step's kind (shadow, setWeight, a pause until promoted, a timed
pause); each returns None once its step is complete, else what the canary waits for. Pure."""

from __future__ import annotations

from modeldeploy.api import parse_duration
from modeldeploy.api.rollout import Shadow, Step
from modeldeploy.rollout.state import (
    Decision,
    canary_replicas,
    describe_model,
    iso,
    parse_time,
    stamp,
)
from modeldeploy.rollout.tick import Tick, no_traffic, promote, rollback
from modeldeploy.rollout.verdicts import summary

__all__ = ["walk_steps"]


def _run_step(tick: Tick, step: Step, where: str) -> Decision | str | None:
    """The dispatcher: the function of this step's kind."""
    if step.set_weight is not None:
        return _set_weight(tick, step.set_weight, where)
    if step.shadow is not None:
        return _shadow(tick, step.shadow, where)
    assert step.pause is not None  # the API allows exactly one of the three
    if step.pause.duration is None:
        return _pause_until_promoted(tick, where)
    return _pause_for(tick, step.pause.duration, where)


def walk_steps(tick: Tick) -> Decision | str:
    """Move through every step that is complete; what the canary waits for, or the end."""
    while tick.canary.step_index < len(tick.steps):
        index = tick.canary.step_index
        waiting = _run_step(tick, tick.steps[index], f"step {index + 1} of {len(tick.steps)}")
        if waiting is not None:
            return waiting
    return _all_steps_done(tick)


def _set_weight(tick: Tick, weight: int, where: str) -> Decision | str | None:
    """setWeight: move the traffic once enough canary pods are ready and the contract is
    checked (a rollback when that takes longer than the progress deadline)."""
    obs, current = tick.obs, tick.canary.weight
    needed = canary_replicas(tick.total, weight, exact=tick.exact)
    tick.decision.canary_replicas = needed
    pending = tick.contract_pending()
    if obs.canary_ready >= needed and pending is None and not obs.routing_error:
        tick.canary.weight = weight
        tick.next_step()
        return None
    if obs.routing_error:
        waiting = f"Canary at {current}% ({where}): {obs.routing_error}"
    elif obs.canary_ready >= needed:
        waiting = f"Canary at {current}% ({where}): {pending} before sending it {weight}%."
    else:
        waiting = (
            f"Canary at {current}% ({where}): waiting for {needed} canary pod(s) to be "
            f"ready ({obs.canary_ready} ready) before sending it {weight}%."
        )
    if tick.overdue():
        missing = f"{obs.canary_ready} of {needed} pod(s) ready"
        if obs.canary_ready >= needed and pending is not None:
            missing = pending
        return rollback(
            tick,
            "ProgressDeadlineExceeded",
            f"the canary did not reach {weight}% within {tick.rollout.progress_deadline}: "
            f"{missing}",
        )
    wait = tick.remaining().total_seconds()
    if obs.canary_ready >= needed and pending is not None:
        wait = min(wait, 5)  # the metadata may be readable in a moment
    tick.decision.wake(wait)
    return waiting


def _shadow(tick: Tick, shadow: Shadow, where: str) -> Decision | str | None:
    """shadow: once enough canary pods are ready and the contract is checked, the stable pods
    mirror ``percent`` % of their requests to the canary for ``duration``; no client traffic
    reaches the canary (its weight stays where it is: 0, as shadow steps come first)."""
    obs, canary, decision = tick.obs, tick.canary, tick.decision
    # Capacity for the copies it is sent, on top of the stable track (which keeps its pods).
    needed = canary_replicas(tick.total, shadow.percent, exact=True)
    decision.canary_replicas = max(decision.canary_replicas, needed)
    if canary.state != "Shadowing":
        pending = tick.contract_pending()
        if obs.canary_ready < needed or pending is not None:
            return _shadow_waits(tick, shadow, where, needed, pending)
        canary.state = "Shadowing"
        canary.step_started_at = stamp(obs.now)  # the duration counts from the first copy
    canary.shadow_percent = shadow.percent
    end = parse_time(canary.step_started_at) + parse_duration(shadow.duration)
    if obs.now >= end:
        tick.next_step()  # mirroring goes off with the step (decision.mirror stays 0)
        return None
    decision.mirror = shadow.percent
    decision.wake((end - obs.now).total_seconds())
    return (
        f"Canary shadowed ({where}): the stable pods mirror {shadow.percent}% of their "
        f"requests to it and compare its answers with theirs until {iso(end)}; no client "
        "sees them."
    )


def _shadow_waits(
    tick: Tick, shadow: Shadow, where: str, needed: int, pending: str | None
) -> Decision | str:
    """What a shadow step waits for before mirroring (a rollback past the progress deadline)."""
    ready = tick.obs.canary_ready
    if ready < needed:
        missing = f"{ready} of {needed} pod(s) ready"
        waiting = (
            f"Canary at 0% ({where}): waiting for {needed} canary pod(s) to be ready "
            f"({ready} ready) before mirroring {shadow.percent}% of the stable track's "
            "requests to it."
        )
    else:
        missing = str(pending)
        waiting = f"Canary at 0% ({where}): {pending} before mirroring requests to it."
    if tick.overdue():
        return rollback(
            tick,
            "ProgressDeadlineExceeded",
            f"the canary was not ready to be shadowed within {tick.rollout.progress_deadline}: "
            f"{missing}",
        )
    wait = tick.remaining().total_seconds()
    tick.decision.wake(min(wait, 5) if ready >= needed else wait)
    return waiting


def _pause_until_promoted(tick: Tick, where: str) -> str:
    """pause without duration: wait for a human to promote or abort."""
    tick.canary.state = "Paused"
    return (
        f"Canary at {tick.canary.weight}% ({where}): paused until promoted (`modeldeploy "
        f"promote {tick.md.name}` or the serving.modeldeploy.io/promote=true "
        "annotation) or aborted."
    )


def _pause_for(tick: Tick, duration: str, where: str) -> str | None:
    """pause with a duration: complete once it has passed since the step started."""
    end = parse_time(tick.canary.step_started_at) + parse_duration(duration)
    if tick.obs.now >= end:
        tick.next_step()
        return None
    tick.decision.wake((end - tick.obs.now).total_seconds())
    return f"Canary at {tick.canary.weight}% ({where}): pausing until {iso(end)}."


def _all_steps_done(tick: Tick) -> Decision | str:
    """Promote, or say what promotion waits for (a contract check, a passing run)."""
    analysis, canary = tick.rollout.analysis, tick.canary
    pending = tick.contract_pending()
    if pending is not None:
        if tick.overdue():
            return rollback(
                tick,
                "ProgressDeadlineExceeded",
                f"no contract check within {tick.rollout.progress_deadline}: {pending}",
            )
        tick.decision.wake(min(tick.remaining().total_seconds(), 5))
        return f"All steps done; {pending} before promotion."
    if analysis is None or canary.passed_checks > 0:
        return promote(
            tick,
            "Promoting",
            f"{describe_model(tick.target)} passed all {len(tick.steps)} step(s)"
            + (f" and {canary.passed_checks} analysis run(s)" if analysis else ""),
        )
    last = canary.analysis
    if tick.overdue():
        deadline = tick.rollout.progress_deadline
        if no_traffic(last) and analysis.on_no_traffic == "Promote":
            return promote(
                tick,
                "PromotedWithoutTraffic",
                f"no traffic reached {describe_model(tick.target)} within {deadline}, so no "
                "analysis could judge it: promoted, as analysis.onNoTraffic: Promote says",
            )
        if no_traffic(last):
            return rollback(
                tick,
                "ProgressDeadlineExceeded",
                f"no traffic reached the canary within {deadline}, so no analysis could "
                "judge it (analysis.onNoTraffic: Rollback)",
            )
        return rollback(
            tick,
            "ProgressDeadlineExceeded",
            f"no passing analysis run within {deadline}"
            + (f"; the last one measured {summary(last)}" if last else ""),
        )
    tick.decision.wake(tick.remaining().total_seconds())
    waiting = "All steps done; waiting for a passing analysis run before promotion"
    if no_traffic(last):
        return f"{waiting}: no traffic has reached the canary yet."
    return f"{waiting}" + (f" (last run: {summary(last)})." if last else ".")
