"""The rollout step function: (spec, status, observations) -> (next state, intents). Pure.

All rollout state lives in ``status`` (``stable``, ``canary``, ``history``), so any replica of
the operator, restarted at any moment, continues from the same step. One call is one tick: it
may start a canary, move it through as many steps as are complete, count an analysis run,
promote, or roll back — and says what the children must look like afterwards.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from modeldeploy.api import ModelDeployment, parse_duration

__all__ = [
    "HISTORY_LIMIT",
    "Decision",
    "Observations",
    "Target",
    "advance",
    "analysis_due",
    "canary_replicas",
    "iso",
    "parse_time",
    "template_hash",
]

HISTORY_LIMIT = 10
MIN_REQUEUE_SECONDS = 1.0

Event = tuple[str, str, str]
"""(type Normal|Warning, reason, message)."""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def template_hash(md: ModelDeployment) -> str:
    """Hash of what the pods run besides the model file: a change starts a rollout too."""
    spec = md.spec.model_dump(
        mode="json", by_alias=True, exclude_none=True, include={"model", "runtime", "pod_template"}
    )
    for key in ("uri", "sha256", "version"):
        spec["model"].pop(key, None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Target:
    """One version of what a track serves: the model file and the serving settings."""

    uri: str
    sha256: str | None = None
    version: str | None = None
    template_hash: str | None = None

    @classmethod
    def of_spec(cls, md: ModelDeployment) -> Target:
        model = md.spec.model
        return cls(model.uri, model.sha256, model.version, template_hash(md))

    @classmethod
    def of_status(cls, data: Mapping[str, Any]) -> Target:
        return cls(
            str(data["uri"]), data.get("sha256"), data.get("version"), data.get("templateHash")
        )

    def to_status(self) -> dict[str, Any]:
        fields = {
            "uri": self.uri,
            "sha256": self.sha256,
            "version": self.version,
            "templateHash": self.template_hash,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def matches(self, other: Target) -> bool:
        """Same model and settings. A missing template hash (a status written before hashes
        existed) matches any: an operator upgrade must not start rollouts by itself."""
        same_model = (self.uri, self.sha256, self.version) == (
            other.uri,
            other.sha256,
            other.version,
        )
        hashes = (self.template_hash, other.template_hash)
        return same_model and (None in hashes or hashes[0] == hashes[1])

    def key(self) -> str:
        """A short stable identifier, stamped on the Deployment that runs this target."""
        raw = json.dumps(self.to_status(), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    def describe(self) -> str:
        return self.uri + (f" (version {self.version})" if self.version else "")


@dataclass
class Observations:
    """What the reconciler saw this tick (before acting)."""

    now: datetime
    stable_replicas: int
    """Pods the stable track has when no rollout is under way (spec, or the autoscaler's)."""
    autoscaled: bool = False
    canary_ready: int = 0
    """Ready pods of the canary Deployment, when it runs the canary target."""
    stable_runs: str | None = None
    """``Target.key()`` of what every stable pod runs, all ready (None while they roll)."""
    analysis: list[dict[str, Any]] | None = None
    """This tick's analysis run (``status.canary.analysis`` entries), when one was due."""
    analysis_error: str | None = None
    """Why analysis cannot run at all (e.g. no Prometheus address)."""
    routing_error: str | None = None
    """Why traffic cannot be routed (e.g. no Gateway API CRDs)."""
    promote: bool = False
    abort: bool = False


@dataclass
class Decision:
    """The next rollout state and what the children must look like."""

    stable_target: Target
    canary: dict[str, Any] | None = None
    stable: dict[str, Any] | None = None
    """``status.stable`` (None: left to the status computation, which records the first model
    once it is ready)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    canary_target: Target | None = None
    """What the canary Deployment runs; None when there must be no canary Deployment."""
    canary_replicas: int = 0
    stable_replicas: int | None = None
    """Pods of the stable Deployment; None when the autoscaler owns the count."""
    weight: int = 0
    """Percentage of traffic routed to the canary."""
    events: list[Event] = field(default_factory=list)
    clear_annotations: bool = False
    requeue_after: float | None = None
    progressing: tuple[str, str] | None = None
    """(reason, message) of the Progressing condition while a rollout is under way."""
    degraded: tuple[str, str] | None = None
    """(reason, message) of a rollout problem: a rollback, no Prometheus, no Gateway API."""

    def wake(self, seconds: float) -> None:
        seconds = max(seconds, MIN_REQUEUE_SECONDS)
        self.requeue_after = min(self.requeue_after or seconds, seconds)


def canary_replicas(total: int, weight: int, *, exact: bool) -> int:
    """Canary pods for ``weight`` percent of ``total``: enough for its share (at least one).

    With exact (Gateway API) routing the canary only needs the capacity for its share; with
    replica-ratio routing the pod count *is* the share, so it is rounded to the nearest pod.
    """
    share = total * weight / 100
    return max(1, math.ceil(share) if exact else round(share))


def _stable_share(total: int, canary: int) -> int:
    """Stable pods beside ``canary`` ready canary pods under replica-ratio routing."""
    return max(1, total - canary)


def _last_analysis(canary: Mapping[str, Any]) -> datetime | None:
    times = [parse_time(r["time"]) for r in canary.get("analysis") or ()]
    return max(times) if times else None


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
    last = _last_analysis(canary) or parse_time(canary["startedAt"])
    return now - last >= parse_duration(analysis.interval)


def _entry(
    target: Target,
    canary: Mapping[str, Any],
    result: str,
    reason: str,
    message: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "model": target.to_status(),
        "result": result,
        "reason": reason,
        "message": message[:4096],
        "startedAt": canary.get("startedAt"),
        "time": iso(now),
    }


def _record(decision: Decision, entry: dict[str, Any]) -> None:
    decision.history = [entry, *decision.history][:HISTORY_LIMIT]


def _rolled_back(history: list[dict[str, Any]], target: Target) -> dict[str, Any] | None:
    """The latest rollback of ``target``, when the last finished rollout was that one."""
    last = history[0] if history else None
    if last and last.get("result") == "RolledBack":
        return last if Target.of_status(last["model"]).matches(target) else None
    return None


def rollback_message(entry: Mapping[str, Any], stable: Target) -> str:
    model = Target.of_status(entry["model"])
    return (
        f"Rolled back {model.describe()}: {entry.get('message') or entry['reason']}. "
        f"The stable track serves {stable.describe()}. Change spec.model (or the pod template) "
        "to roll out again."
    )


def _measured(r: Mapping[str, Any]) -> str:
    if r.get("value") is None:
        return f"{r['name']}: no data ({r.get('message') or 'no samples'})"
    bounds = ", ".join(f"{k} {r[k]:g}" for k in ("min", "max") if r.get(k) is not None)
    return f"{r['name']} = {r['value']:.4g} ({bounds})"


def failed_values(results: list[dict[str, Any]]) -> str:
    """'latency-p99 = 0.31 (max 0.05); passing: error-rate = 0 (max 0.01)': what failed (or
    had no data) first, then what passed, so a rollback says what was measured."""
    failed = [_measured(r) for r in results if r["result"] != "Passed"]
    passed = [_measured(r) for r in results if r["result"] == "Passed"]
    return "; ".join(failed) + (f"; passing: {', '.join(passed)}" if passed else "")


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
            _record(
                decision,
                _entry(
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
        _record(decision, _entry(ended, canary, "Superseded", "SpecChanged", message, obs.now))
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
        }
        decision.events.append(
            (
                "Normal",
                "RolloutStarted",
                f"canary of {target.describe()} started; the stable track keeps serving "
                f"{stable.describe()}",
            )
        )
    return _walk(md, stable, target, canary, obs, decision)


def _walk(
    md: ModelDeployment,
    stable: Target,
    target: Target,
    canary: dict[str, Any],
    obs: Observations,
    decision: Decision,
) -> Decision:
    """Advance an active canary as far as the observations allow."""
    rollout = md.spec.rollout
    steps = rollout.steps or []
    exact = rollout.traffic_routing is not None
    deadline = parse_duration(rollout.progress_deadline)
    total = obs.stable_replicas
    decision.canary_target = target
    decision.canary = canary
    if obs.routing_error:
        decision.degraded = ("TrafficRoutingUnavailable", obs.routing_error)
    elif obs.analysis_error:
        decision.degraded = ("AnalysisUnavailable", obs.analysis_error)

    def rollback(reason: str, message: str) -> Decision:
        entry = _entry(target, canary, "RolledBack", reason, message, obs.now)
        _record(decision, entry)
        decision.canary = decision.canary_target = None
        decision.canary_replicas = decision.weight = 0
        decision.stable_target = stable
        decision.stable_replicas = None if obs.autoscaled else total
        decision.progressing = None
        decision.requeue_after = None
        decision.events.append(("Warning", reason, f"rolled back {target.describe()}: {message}"))
        decision.degraded = (reason, rollback_message(entry, stable))
        return decision

    def overdue() -> bool:
        return obs.now - parse_time(canary["stepStartedAt"]) > deadline

    def next_step() -> None:
        canary["stepIndex"] = int(canary["stepIndex"]) + 1
        canary["stepStartedAt"] = iso(obs.now)
        canary["state"] = "Progressing"

    if obs.abort:
        return rollback("Aborted", "aborted by the serving.modeldeploy.io/abort annotation")

    weight = int(canary.get("weight", 0))
    if canary.get("state") == "Promoting":
        decision.stable_target = target
        decision.canary_replicas = canary_replicas(total, weight, exact=exact)
        decision.weight = weight
        if obs.stable_runs == target.key():
            passed = int(canary.get("passedChecks", 0))
            message = f"promoted at step {int(canary['stepIndex'])} of {len(steps)}" + (
                f" after {passed} passing analysis run(s)" if rollout.analysis else ""
            )
            _record(decision, _entry(target, canary, "Promoted", "Promoted", message, obs.now))
            decision.stable = target.to_status()
            decision.canary = decision.canary_target = None
            decision.canary_replicas = decision.weight = 0
            decision.events.append(
                ("Normal", "Promoted", f"{target.describe()} is now the stable model")
            )
            return decision
        if overdue():
            return rollback(
                "ProgressDeadlineExceeded",
                f"the stable pods did not all run {target.describe()} within "
                f"{rollout.progress_deadline} of promotion",
            )
        decision.progressing = (
            "Promoting",
            f"Promoting {target.describe()}: the stable pods are being replaced; the canary "
            f"keeps {weight}% of traffic until they are all ready.",
        )
        decision.wake(deadline.total_seconds())
        return decision

    analysis = rollout.analysis
    if obs.analysis is not None and analysis is not None:
        canary["analysis"] = obs.analysis
        results = {r["result"] for r in obs.analysis}
        if "Failed" in results or ("Inconclusive" in results and analysis.inconclusive == "Fail"):
            canary["failedChecks"] = int(canary.get("failedChecks", 0)) + 1
        elif "Inconclusive" not in results:
            canary["passedChecks"] = int(canary.get("passedChecks", 0)) + 1
        if canary["failedChecks"] >= analysis.failure_limit:
            return rollback(
                "AnalysisFailed",
                f"{canary['failedChecks']} failed analysis run(s) (failureLimit "
                f"{analysis.failure_limit}): {failed_values(obs.analysis)}",
            )

    def promote(reason: str, message: str) -> Decision:
        canary["state"] = "Promoting"
        canary["stepStartedAt"] = iso(obs.now)
        decision.events.append(("Normal", reason, message))
        decision.stable_target = target
        decision.canary_replicas = canary_replicas(total, weight, exact=exact)
        decision.weight = weight
        decision.stable_replicas = None if obs.autoscaled else total
        decision.progressing = (
            "Promoting",
            f"Promoting {target.describe()}: the stable pods are being replaced.",
        )
        decision.wake(deadline.total_seconds())
        return decision

    if obs.promote:
        return promote(
            "PromotedByUser",
            f"{target.describe()} promoted by the serving.modeldeploy.io/promote annotation",
        )

    waiting: str
    while True:
        index = int(canary["stepIndex"])
        if index >= len(steps):
            if analysis is not None and int(canary.get("passedChecks", 0)) == 0:
                waiting = "All steps done; waiting for a passing analysis run before promotion."
                if overdue():
                    return rollback(
                        "ProgressDeadlineExceeded",
                        f"no passing analysis run within {rollout.progress_deadline}",
                    )
                decision.wake(deadline.total_seconds())
                break
            return promote(
                "Promoting",
                f"{target.describe()} passed all {len(steps)} step(s)"
                + (f" and {canary['passedChecks']} analysis run(s)" if analysis else ""),
            )
        step = steps[index]
        where = f"step {index + 1} of {len(steps)}"
        if step.set_weight is not None:
            needed = canary_replicas(total, step.set_weight, exact=exact)
            decision.canary_replicas = needed
            if obs.canary_ready >= needed and not obs.routing_error:
                weight = canary["weight"] = step.set_weight
                next_step()
                continue
            waiting = (
                f"Canary at {weight}% ({where}): waiting for {needed} canary pod(s) to be ready "
                f"({obs.canary_ready} ready) before sending it {step.set_weight}%."
            )
            if obs.routing_error:
                waiting = f"Canary at {weight}% ({where}): {obs.routing_error}"
            if overdue():
                return rollback(
                    "ProgressDeadlineExceeded",
                    f"the canary did not reach {step.set_weight}% within "
                    f"{rollout.progress_deadline}: {obs.canary_ready} of {needed} pod(s) ready",
                )
            remaining = deadline - (obs.now - parse_time(canary["stepStartedAt"]))
            decision.wake(remaining.total_seconds())
            break
        assert step.pause is not None
        if step.pause.duration is None:
            canary["state"] = "Paused"
            waiting = (
                f"Canary at {weight}% ({where}): paused until promoted (`modeldeploy promote "
                f"{md.name}` or the serving.modeldeploy.io/promote=true annotation) or aborted."
            )
            break
        end = parse_time(canary["stepStartedAt"]) + parse_duration(step.pause.duration)
        if obs.now >= end:
            next_step()
            continue
        waiting = f"Canary at {weight}% ({where}): pausing until {iso(end)}."
        decision.wake((end - obs.now).total_seconds())
        break

    decision.weight = weight
    decision.canary_replicas = max(
        decision.canary_replicas, canary_replicas(total, weight, exact=exact)
    )
    if not exact and not obs.autoscaled and weight > 0:
        # Only pods already ready for the current weight take over the stable track's share.
        decision.stable_replicas = _stable_share(total, canary_replicas(total, weight, exact=False))
    reason = "CanaryPaused" if canary.get("state") == "Paused" else "CanaryProgressing"
    decision.progressing = (reason, waiting)
    if analysis is not None:  # analysis runs in the background, paused or not
        last = _last_analysis(canary) or parse_time(canary["startedAt"])
        decision.wake((last + parse_duration(analysis.interval) - obs.now).total_seconds())
    return decision
