"""One tick of an active canary: check its contract, count its analysis, walk its steps,
promote or roll back. Pure; ``plan.advance`` decides when there is a canary to walk.

The order within a tick is the order of the questions a careful human would ask: was it
aborted? is it being promoted? does its model still speak the stable model's language? what
did the analysis measure? may the next step move traffic?
"""

from __future__ import annotations

from datetime import datetime, timedelta

from modeldeploy.api import CanaryStatus, ModelDeployment, ModelStatus, parse_duration
from modeldeploy.api.rollout import Analysis
from modeldeploy.api.status import AnalysisResult, ContractCheck
from modeldeploy.rollout.contract import ContractReading, differences
from modeldeploy.rollout.state import (
    Decision,
    Observations,
    canary_replicas,
    describe_model,
    entry,
    iso,
    last_analysis,
    model_key,
    parse_time,
    record,
    rollback_message,
    stable_share,
    stamp,
)
from modeldeploy.rollout.verdicts import summary

__all__ = ["no_traffic", "walk"]

CONTRACT_CHECK = "comparing the canary's model metadata with the stable model's"


def no_traffic(results: list[AnalysisResult] | None) -> bool:
    """Whether an analysis run saw no sample at all: not a bad canary, an unused one."""
    return bool(results) and all(r.samples == 0 for r in results or ())


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


class _Tick:
    """The state of one tick through an active canary; each method is one kind of step."""

    def __init__(
        self,
        md: ModelDeployment,
        stable: ModelStatus,
        target: ModelStatus,
        canary: CanaryStatus,
        obs: Observations,
        decision: Decision,
    ) -> None:
        self.md, self.stable, self.target, self.canary = md, stable, target, canary
        self.obs, self.decision = obs, decision
        self.rollout = md.spec.rollout
        self.steps = self.rollout.steps or []
        self.exact = self.rollout.traffic_routing is not None
        self.deadline = parse_duration(self.rollout.progress_deadline)
        self.total = obs.stable_replicas
        self.weight = canary.weight

    # -- outcomes ----------------------------------------------------------------------------

    def rollback(self, reason: str, message: str) -> Decision:
        decision, obs = self.decision, self.obs
        ended = entry(self.target, self.canary, "RolledBack", reason, message, obs.now)
        record(decision, ended)
        decision.canary = decision.canary_target = None
        decision.canary_replicas = decision.weight = 0
        decision.stable_target = self.stable
        decision.stable_replicas = None if obs.autoscaled else self.total
        decision.progressing = None
        decision.requeue_after = None
        decision.events.append(
            ("Warning", reason, f"rolled back {describe_model(self.target)}: {message}")
        )
        decision.degraded = (reason, rollback_message(ended, self.stable))
        return decision

    def promote(self, reason: str, message: str) -> Decision:
        decision = self.decision
        self.canary.state = "Promoting"
        self.canary.step_started_at = stamp(self.obs.now)
        decision.events.append(("Normal", reason, message))
        decision.stable_target = self.target
        decision.canary_replicas = canary_replicas(self.total, self.weight, exact=self.exact)
        decision.weight = self.weight
        decision.stable_replicas = None if self.obs.autoscaled else self.total
        decision.progressing = (
            "Promoting",
            f"Promoting {describe_model(self.target)}: the stable pods are being replaced.",
        )
        decision.wake(self.deadline.total_seconds())
        return decision

    # -- helpers -----------------------------------------------------------------------------

    def overdue(self) -> bool:
        return self.obs.now - parse_time(self.canary.step_started_at) > self.deadline

    def remaining(self) -> timedelta:
        return self.deadline - (self.obs.now - parse_time(self.canary.step_started_at))

    def next_step(self) -> None:
        self.canary.step_index += 1
        self.canary.step_started_at = stamp(self.obs.now)
        self.canary.state = "Progressing"

    def contract_pending(self) -> str | None:
        """Why traffic may not move yet for want of a contract check; None once checked."""
        if self.canary.contract is not None:
            return None
        reading = self.obs.contract
        return f"{CONTRACT_CHECK}: {reading.error}" if reading and reading.error else CONTRACT_CHECK

    # -- the parts of a tick -----------------------------------------------------------------

    def promoting(self) -> Decision:
        """The stable track takes the new model; done once every stable pod runs it."""
        decision, target, canary = self.decision, self.target, self.canary
        decision.stable_target = target
        decision.canary_replicas = canary_replicas(self.total, self.weight, exact=self.exact)
        decision.weight = self.weight
        if self.obs.stable_runs == model_key(target):
            passed = canary.passed_checks
            message = f"promoted at step {canary.step_index} of {len(self.steps)}"
            if self.rollout.analysis:
                message += f" after {passed} passing analysis run(s)"
                if passed == 0 and no_traffic(canary.analysis):
                    message += " (no traffic reached the canary)"
            record(decision, entry(target, canary, "Promoted", "Promoted", message, self.obs.now))
            decision.stable = target
            decision.canary = decision.canary_target = None
            decision.canary_replicas = decision.weight = 0
            decision.events.append(
                ("Normal", "Promoted", f"{describe_model(target)} is now the stable model")
            )
            return decision
        if self.overdue():
            return self.rollback(
                "ProgressDeadlineExceeded",
                f"the stable pods did not all run {describe_model(target)} within "
                f"{self.rollout.progress_deadline} of promotion",
            )
        decision.progressing = (
            "Promoting",
            f"Promoting {describe_model(target)}: the stable pods are being replaced; the canary "
            f"keeps {self.weight}% of traffic until they are all ready.",
        )
        decision.wake(self.deadline.total_seconds())
        return decision

    def check_contract(self) -> Decision | None:
        """Record this tick's contract reading; a rollback when it breaks a Strict contract."""
        reading = self.obs.contract
        if self.canary.contract is not None or reading is None:
            return None
        compatibility = self.rollout.compatibility
        found_record, found = _contract_record(
            compatibility, reading, stamp(self.obs.now), self.overdue()
        )
        if found_record is None:
            return None
        self.canary.contract = found_record
        described = describe_model(self.target)
        if found_record.result == "Unchecked":
            self.decision.events.append(
                ("Warning", "ContractUnchecked",
                 f"{described}: {found_record.message}; traffic moves all the same after "
                 f"{self.rollout.progress_deadline}, as rollout.compatibility is Breaking")
            )  # fmt: skip
        elif found and compatibility == "Breaking":
            self.decision.events.append(
                ("Warning", "BreakingChange",
                 f"{described} changes the model's contract, as rollout.compatibility: "
                 f"Breaking allows: {'; '.join(found)}")
            )  # fmt: skip
        elif found:
            return self.rollback(
                "IncompatibleModel",
                "the canary's model breaks what clients of the stable model rely on: "
                f"{'; '.join(found)} (set rollout.compatibility: Breaking if that is intended)",
            )
        return None

    def count_analysis(self, analysis: Analysis) -> Decision | None:
        """Count this tick's analysis run; a rollback at the failure limit."""
        results = self.obs.analysis
        if results is None:
            return None
        canary = self.canary
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
            canary.window_start = stamp(self.obs.now)
        if canary.failed_checks >= analysis.failure_limit:
            return self.rollback(
                "AnalysisFailed",
                f"{canary.failed_checks} failed analysis run(s) (failureLimit "
                f"{analysis.failure_limit}): {summary(results)}",
            )
        return None

    def all_steps_done(self) -> Decision | str:
        """Promote, or say what promotion waits for (a contract check, a passing run)."""
        analysis, canary = self.rollout.analysis, self.canary
        pending = self.contract_pending()
        if pending is not None:
            if self.overdue():
                return self.rollback(
                    "ProgressDeadlineExceeded",
                    f"no contract check within {self.rollout.progress_deadline}: {pending}",
                )
            self.decision.wake(min(self.remaining().total_seconds(), 5))
            return f"All steps done; {pending} before promotion."
        if analysis is None or canary.passed_checks > 0:
            return self.promote(
                "Promoting",
                f"{describe_model(self.target)} passed all {len(self.steps)} step(s)"
                + (f" and {canary.passed_checks} analysis run(s)" if analysis else ""),
            )
        last = canary.analysis
        if self.overdue():
            deadline = self.rollout.progress_deadline
            if no_traffic(last) and analysis.on_no_traffic == "Promote":
                return self.promote(
                    "PromotedWithoutTraffic",
                    f"no traffic reached {describe_model(self.target)} within {deadline}, so no "
                    "analysis could judge it: promoted, as analysis.onNoTraffic: Promote says",
                )
            if no_traffic(last):
                return self.rollback(
                    "ProgressDeadlineExceeded",
                    f"no traffic reached the canary within {deadline}, so no analysis could "
                    "judge it (analysis.onNoTraffic: Rollback)",
                )
            return self.rollback(
                "ProgressDeadlineExceeded",
                f"no passing analysis run within {deadline}"
                + (f"; the last one measured {summary(last)}" if last else ""),
            )
        self.decision.wake(self.remaining().total_seconds())
        waiting = "All steps done; waiting for a passing analysis run before promotion"
        if no_traffic(last):
            return f"{waiting}: no traffic has reached the canary yet."
        return f"{waiting}" + (f" (last run: {summary(last)})." if last else ".")

    def set_weight(self, weight: int, where: str) -> Decision | str | None:
        """None when the weight moved; else what it waits for (or the rollback, overdue)."""
        obs = self.obs
        needed = canary_replicas(self.total, weight, exact=self.exact)
        self.decision.canary_replicas = needed
        pending = self.contract_pending()
        if obs.canary_ready >= needed and pending is None and not obs.routing_error:
            self.weight = self.canary.weight = weight
            self.next_step()
            return None
        if obs.routing_error:
            waiting = f"Canary at {self.weight}% ({where}): {obs.routing_error}"
        elif obs.canary_ready >= needed:
            waiting = f"Canary at {self.weight}% ({where}): {pending} before sending it {weight}%."
        else:
            waiting = (
                f"Canary at {self.weight}% ({where}): waiting for {needed} canary pod(s) to be "
                f"ready ({obs.canary_ready} ready) before sending it {weight}%."
            )
        if self.overdue():
            missing = f"{obs.canary_ready} of {needed} pod(s) ready"
            if obs.canary_ready >= needed and pending is not None:
                missing = pending
            return self.rollback(
                "ProgressDeadlineExceeded",
                f"the canary did not reach {weight}% within {self.rollout.progress_deadline}: "
                f"{missing}",
            )
        wait = self.remaining().total_seconds()
        if obs.canary_ready >= needed and pending is not None:
            wait = min(wait, 5)  # the metadata may be readable in a moment
        self.decision.wake(wait)
        return waiting

    def walk_steps(self) -> Decision | str:
        """Move through every step that is complete; what the canary waits for, or the end."""
        while True:
            index = self.canary.step_index
            if index >= len(self.steps):
                return self.all_steps_done()
            step = self.steps[index]
            where = f"step {index + 1} of {len(self.steps)}"
            if step.set_weight is not None:
                waiting = self.set_weight(step.set_weight, where)
                if waiting is None:
                    continue
                return waiting
            assert step.pause is not None
            if step.pause.duration is None:
                self.canary.state = "Paused"
                return (
                    f"Canary at {self.weight}% ({where}): paused until promoted (`modeldeploy "
                    f"promote {self.md.name}` or the serving.modeldeploy.io/promote=true "
                    "annotation) or aborted."
                )
            end = parse_time(self.canary.step_started_at) + parse_duration(step.pause.duration)
            if self.obs.now >= end:
                self.next_step()
                continue
            self.decision.wake((end - self.obs.now).total_seconds())
            return f"Canary at {self.weight}% ({where}): pausing until {iso(end)}."

    def run(self) -> Decision:
        obs, decision, canary = self.obs, self.decision, self.canary
        if obs.abort:
            return self.rollback(
                "Aborted", "aborted by the serving.modeldeploy.io/abort annotation"
            )
        if canary.state == "Promoting":
            return self.promoting()
        broken = self.check_contract()
        if broken is not None:
            return broken
        analysis = self.rollout.analysis
        if analysis is not None:
            failed = self.count_analysis(analysis)
            if failed is not None:
                return failed
        if obs.promote:
            return self.promote(
                "PromotedByUser",
                f"{describe_model(self.target)} promoted by the serving.modeldeploy.io/promote "
                "annotation",
            )
        waiting = self.walk_steps()
        if isinstance(waiting, Decision):
            return waiting
        total, weight, exact = self.total, self.weight, self.exact
        decision.weight = weight
        decision.canary_replicas = max(
            decision.canary_replicas, canary_replicas(total, weight, exact=exact)
        )
        if not exact and not obs.autoscaled and weight > 0:
            # Only pods already ready for the current weight take over the stable track's share.
            decision.stable_replicas = stable_share(
                total, canary_replicas(total, weight, exact=False)
            )
        reason = "CanaryPaused" if canary.state == "Paused" else "CanaryProgressing"
        decision.progressing = (reason, waiting)
        if analysis is not None:  # analysis runs in the background, paused or not
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
    return _Tick(md, stable, target, canary, obs, decision).run()
