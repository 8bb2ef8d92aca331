"""The rollout step function: (spec, status, observations) -> (next state, intents). Pure.

All rollout state lives in ``status`` (``stable``, ``canary``, ``history``), so any replica of
the operator, restarted at any moment, continues from the same step. One call is one tick: it
may start a canary, check its model's contract against the stable model's, move it through as
many steps as are complete, count an analysis run, promote, or roll back — and says what the
children must look like afterwards (``canary`` runs an active canary's tick). No traffic moves to a
canary whose contract has not been checked.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from modeldeploy.api import (
    CanaryStatus,
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentStatus,
    ModelStatus,
    parse_duration,
)
from modeldeploy.rollout.canary import walk
from modeldeploy.rollout.state import (
    HISTORY_LIMIT,
    Decision,
    Observations,
    canary_replicas,
    describe_model,
    desired_model,
    entry,
    iso,
    last_analysis,
    model_key,
    model_of,
    parse_time,
    record,
    rollback_message,
    same_model,
    stamp,
    template_hash,
)

__all__ = [
    "HISTORY_LIMIT",
    "Decision",
    "Observations",
    "advance",
    "analysis_due",
    "analysis_window",
    "canary_replicas",
    "describe_model",
    "desired_model",
    "iso",
    "model_key",
    "model_of",
    "parse_time",
    "same_model",
    "template_hash",
]


def analysis_due(md: ModelDeployment, status: ModelDeploymentStatus, now: datetime) -> bool:
    """Whether this tick should read the analysis metrics (one interval after the last run,
    or after the rollout started)."""
    canary = status.canary
    analysis = md.spec.rollout.analysis
    if canary is None or analysis is None or canary.state == "Promoting":
        return False
    if md.spec.rollout.strategy != "Canary":
        return False
    if not same_model(canary, desired_model(md)):
        return False
    last = last_analysis(canary) or parse_time(canary.started_at)
    return now - last >= parse_duration(analysis.interval)


def analysis_window(md: ModelDeployment, status: ModelDeploymentStatus, now: datetime) -> timedelta:
    """What the next analysis run reads: back to the last run that passed or failed (or the
    start), at least one interval, at most one progress deadline. Runs with too few samples
    thus widen the window until it holds enough, instead of discarding what they saw."""
    rollout = md.spec.rollout
    interval = parse_duration(rollout.analysis.interval if rollout.analysis else "1m")
    canary = status.canary
    since = canary and (canary.window_start or canary.started_at)
    span = now - parse_time(since) if since else interval
    longest = max(interval, parse_duration(rollout.progress_deadline))
    return min(max(span, interval), longest)


def _rolled_back(history: list[HistoryEntry], target: ModelStatus) -> HistoryEntry | None:
    """The latest rollback of ``target``, when the last finished rollout was that one."""
    last = history[0] if history else None
    if last and last.result == "RolledBack":
        return last if same_model(last.model, target) else None
    return None


def advance(md: ModelDeployment, status: ModelDeploymentStatus, obs: Observations) -> Decision:
    """One tick of the rollout of ``md`` (see the module docstring)."""
    target = desired_model(md)
    stable = status.stable.model_copy() if status.stable else None
    canary = status.canary.model_copy(deep=True) if status.canary else None
    decision = Decision(
        stable_target=stable or target,
        stable=stable,
        history=[h.model_copy(deep=True) for h in status.history or ()],
        stable_replicas=None if obs.autoscaled else obs.stable_replicas,
        clear_annotations=obs.promote or obs.abort,
    )
    if obs.routing_error:
        decision.degraded = ("TrafficRoutingUnavailable", obs.routing_error)
    if md.spec.rollout.strategy != "Canary" or stable is None:
        # Rolling, or the first model: nothing to compare with, deploy it directly.
        if canary is not None:
            record(
                decision,
                entry(
                    model_of(canary),
                    canary,
                    "Superseded",
                    "StrategyChanged",
                    "rollout.strategy is no longer Canary; the stable track takes the spec",
                    obs.now,
                ),
            )
        decision.stable_target = target
        return decision

    if canary is not None and not same_model(canary, target):
        ended = model_of(canary)
        message = f"spec changed to {describe_model(target)} before the rollout of it finished"
        record(decision, entry(ended, canary, "Superseded", "SpecChanged", message, obs.now))
        decision.events.append(
            (
                "Normal",
                "RolloutSuperseded",
                f"rollout of {describe_model(ended)} superseded: {message}",
            )
        )
        canary = None

    if canary is None:
        if same_model(stable, target):
            return decision
        rolled_back = _rolled_back(decision.history, target)
        if rolled_back is not None:
            decision.degraded = (rolled_back.reason, rollback_message(rolled_back, stable))
            return decision
        now = stamp(obs.now)
        obs = replace(obs, canary_ready=0)  # ready pods, if any, ran another target
        canary = CanaryStatus(
            uri=target.uri,
            sha256=target.sha256,
            version=target.version,
            template_hash=target.template_hash,
            state="Progressing",
            weight=0,
            step_index=0,
            failed_checks=0,
            passed_checks=0,
            started_at=now,
            step_started_at=now,
            window_start=now,
        )
        decision.events.append(
            (
                "Normal",
                "RolloutStarted",
                f"canary of {describe_model(target)} started; the stable track keeps serving "
                f"{describe_model(stable)}",
            )
        )
    return walk(md, stable, target, canary, obs, decision)
