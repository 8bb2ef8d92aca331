"""The rollout step function: (spec, status, observations) -> (next state, intents). Pure.

All rollout state lives in ``status`` (``stable``, ``canary``, ``history``), so any replica of
the operator, restarted at any moment, continues from the same step. One call is one tick: it
may start a canary, check its model's contract against the stable model's, move it through as
many steps as are complete, count an analysis run, promote, or roll back — and says what the
children must look like afterwards (``canary`` walks an active canary). No traffic moves to a
canary whose contract has not been checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from modeldeploy.api import ModelDeployment, parse_duration
from modeldeploy.rollout.canary import walk
from modeldeploy.rollout.state import (
    HISTORY_LIMIT,
    Decision,
    Observations,
    Target,
    canary_replicas,
    entry,
    iso,
    last_analysis,
    parse_time,
    record,
    rollback_message,
    template_hash,
)

__all__ = [
    "HISTORY_LIMIT",
    "Decision",
    "Observations",
    "Target",
    "advance",
    "analysis_due",
    "analysis_window",
    "canary_replicas",
    "iso",
    "parse_time",
    "template_hash",
]


def analysis_due(md: ModelDeployment, status: Mapping[str, Any], now: datetime) -> bool:
    """Whether this tick should read the analysis metrics (one interval after the last run,
    or after the rollout started)."""
    canary = status.get("canary")
    analysis = md.spec.rollout.analysis
    if not canary or analysis is None or canary.get("state") == "Promoting":
        return False
    if md.spec.rollout.strategy != "Canary":
        return False
    if not Target.of_status(canary).matches(Target.of_spec(md)):
        return False
    last = last_analysis(canary) or parse_time(canary["startedAt"])
    return now - last >= parse_duration(analysis.interval)


def analysis_window(md: ModelDeployment, status: Mapping[str, Any], now: datetime) -> timedelta:
    """What the next analysis run reads: back to the last run that passed or failed (or the
    start), at least one interval, at most one progress deadline. Runs with too few samples
    thus widen the window until it holds enough, instead of discarding what they saw."""
    rollout = md.spec.rollout
    interval = parse_duration(rollout.analysis.interval if rollout.analysis else "1m")
    canary = status.get("canary") or {}
    since = canary.get("windowStart") or canary.get("startedAt")
    span = now - parse_time(since) if since else interval
    longest = max(interval, parse_duration(rollout.progress_deadline))
    return min(max(span, interval), longest)


def _rolled_back(history: list[dict[str, Any]], target: Target) -> dict[str, Any] | None:
    """The latest rollback of ``target``, when the last finished rollout was that one."""
    last = history[0] if history else None
    if last and last.get("result") == "RolledBack":
        return last if Target.of_status(last["model"]).matches(target) else None
    return None


def advance(md: ModelDeployment, status: Mapping[str, Any], obs: Observations) -> Decision:
    """One tick of the rollout of ``md`` (see the module docstring)."""
    target = Target.of_spec(md)
    stable = Target.of_status(status["stable"]) if status.get("stable") else None
    canary = dict(status["canary"]) if status.get("canary") else None
    decision = Decision(
        stable_target=stable or target,
        stable=dict(status["stable"]) if status.get("stable") else None,
        history=[dict(h) for h in status.get("history") or ()],
        stable_replicas=None if obs.autoscaled else obs.stable_replicas,
        clear_annotations=obs.promote or obs.abort,
    )
    if obs.routing_error:
        decision.degraded = ("TrafficRoutingUnavailable", obs.routing_error)
    if md.spec.rollout.strategy != "Canary" or stable is None:
        # Rolling, or the first model: nothing to compare with, deploy it directly.
        if canary is not None:
            ended = Target.of_status(canary)
            record(
                decision,
                entry(
                    ended,
                    canary,
                    "Superseded",
                    "StrategyChanged",
                    "rollout.strategy is no longer Canary; the stable track takes the spec",
                    obs.now,
                ),
            )
        decision.stable_target = target
        return decision

    if canary is not None and not Target.of_status(canary).matches(target):
        ended = Target.of_status(canary)
        message = f"spec changed to {target.describe()} before the rollout of it finished"
        record(decision, entry(ended, canary, "Superseded", "SpecChanged", message, obs.now))
        decision.events.append(
            ("Normal", "RolloutSuperseded", f"rollout of {ended.describe()} superseded: {message}")
        )
        canary = None

    if canary is None:
        if stable.matches(target):
            return decision
        rolled_back = _rolled_back(decision.history, target)
        if rolled_back is not None:
            decision.degraded = (rolled_back["reason"], rollback_message(rolled_back, stable))
            return decision
        now = iso(obs.now)
        obs = replace(obs, canary_ready=0)  # ready pods, if any, ran another target
        canary = {
            **target.to_status(),
            "state": "Progressing",
            "weight": 0,
            "stepIndex": 0,
            "failedChecks": 0,
            "passedChecks": 0,
            "startedAt": now,
            "stepStartedAt": now,
            "windowStart": now,
        }
        decision.events.append(
            (
                "Normal",
                "RolloutStarted",
                f"canary of {target.describe()} started; the stable track keeps serving "
                f"{stable.describe()}",
            )
        )
    return walk(md, stable, target, canary, obs, decision)
