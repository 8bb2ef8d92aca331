"""One tick through an active canary: what it works on (``Tick``) and how it can end early
(``rollback``, ``promote``). Pure; ``canary`` runs the tick, ``steps`` walks the steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from modeldeploy.api import CanaryStatus, ModelDeployment, ModelStatus, parse_duration
from modeldeploy.api.rollout import Rollout, Step
from modeldeploy.api.status import AnalysisResult
from modeldeploy.rollout.state import (
    Decision,
    Observations,
    canary_replicas,
    describe_model,
    entry,
    parse_time,
    record,
    rollback_message,
    stamp,
)

__all__ = ["CONTRACT_CHECK", "Tick", "no_traffic", "promote", "rollback"]

CONTRACT_CHECK = "comparing the canary's model metadata with the stable model's"


def no_traffic(results: list[AnalysisResult] | None) -> bool:
    """Whether an analysis run saw no sample at all: not a bad canary, an unused one."""
    return bool(results) and all(r.samples == 0 for r in results or ())


@dataclass
class Tick:
    """What one tick through an active canary works on; each function of a tick takes it."""

    md: ModelDeployment
    stable: ModelStatus
    target: ModelStatus
    canary: CanaryStatus
    """``status.canary`` as this tick leaves it (changed in place)."""
    obs: Observations
    decision: Decision

    @property
    def rollout(self) -> Rollout:
        return self.md.spec.rollout

    @property
    def steps(self) -> list[Step]:
        return self.rollout.steps or []

    @property
    def exact(self) -> bool:
        return self.rollout.traffic_routing is not None

    @property
    def deadline(self) -> timedelta:
        return parse_duration(self.rollout.progress_deadline)

    @property
    def total(self) -> int:
        return self.obs.stable_replicas

    def overdue(self) -> bool:
        return self.obs.now - parse_time(self.canary.step_started_at) > self.deadline

    def remaining(self) -> timedelta:
        return self.deadline - (self.obs.now - parse_time(self.canary.step_started_at))

    def next_step(self) -> None:
        self.canary.step_index += 1
        self.canary.step_started_at = stamp(self.obs.now)
        self.canary.state = "Progressing"
        self.canary.shadow_percent = None

    def contract_pending(self) -> str | None:
        """Why traffic may not move yet for want of a contract check; None once checked."""
        if self.canary.contract is not None:
            return None
        reading = self.obs.contract
        return f"{CONTRACT_CHECK}: {reading.error}" if reading and reading.error else CONTRACT_CHECK


def rollback(tick: Tick, reason: str, message: str) -> Decision:
    decision, obs = tick.decision, tick.obs
    ended = entry(tick.target, tick.canary, "RolledBack", reason, message, obs.now)
    record(decision, ended)
    decision.canary = decision.canary_target = None
    decision.canary_replicas = decision.weight = decision.mirror = 0
    decision.stable_target = tick.stable
    decision.stable_replicas = None if obs.autoscaled else tick.total
    decision.progressing = None
    decision.requeue_after = None
    decision.events.append(
        ("Warning", reason, f"rolled back {describe_model(tick.target)}: {message}")
    )
    decision.degraded = (reason, rollback_message(ended, tick.stable))
    return decision


def promote(tick: Tick, reason: str, message: str) -> Decision:
    decision, weight = tick.decision, tick.canary.weight
    tick.canary.state = "Promoting"
    tick.canary.shadow_percent = None
    decision.mirror = 0
    tick.canary.step_started_at = stamp(tick.obs.now)
    decision.events.append(("Normal", reason, message))
    decision.stable_target = tick.target
    decision.canary_replicas = canary_replicas(tick.total, weight, exact=tick.exact)
    decision.weight = weight
    decision.stable_replicas = None if tick.obs.autoscaled else tick.total
    decision.progressing = (
        "Promoting",
        f"Promoting {describe_model(tick.target)}: the stable pods are being replaced.",
    )
    decision.wake(tick.deadline.total_seconds())
    return decision
