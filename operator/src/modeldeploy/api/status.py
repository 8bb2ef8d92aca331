"""The status of a ModelDeployment: written only by the operator, through the status subresource.

All rollout state lives here (Flagger/Argo Rollouts style), so an operator restarted in the
middle of a rollout resumes at the same step.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from modeldeploy.api.rollout import Increase
from modeldeploy.api.types import ApiModel, Duration, list_map

__all__ = [
    "AnalysisResult",
    "CanaryStatus",
    "Condition",
    "ConditionType",
    "ContractCheck",
    "HistoryEntry",
    "ModelDeploymentStatus",
    "ModelStatus",
    "Phase",
]


class Phase(StrEnum):
    """The one-word summary of a ModelDeployment (a closed set)."""

    PENDING = "Pending"
    """Accepted; no pod of the model is ready yet (children created, model downloading)."""
    PROGRESSING = "Progressing"
    """A rollout is under way: a canary walks its steps or a rolling update replaces pods."""
    PAUSED = "Paused"
    """A canary waits at a pause without duration for a human to promote or abort it."""
    READY = "Ready"
    """Every desired pod of the current model is ready and serving; no rollout under way."""
    DEGRADED = "Degraded"
    """Serving, but not as asked: the last rollout was rolled back, fewer pods are ready than
    desired, or a child object was refused. The Degraded condition says why."""
    FAILED = "Failed"
    """Not serving at all and not expected to recover without a change of the spec (e.g. the
    first model cannot be downloaded or loaded)."""


class ConditionType(StrEnum):
    """Condition types the operator sets (`status.conditions[].type`)."""

    READY = "Ready"
    """The model is served at status.url by ready pods of the desired model."""
    AVAILABLE = "Available"
    """At least the minimum number of pods is ready (some model is being served)."""
    PROGRESSING = "Progressing"
    """A rollout or scale change is under way (True) or finished (False)."""
    DEGRADED = "Degraded"
    """Something the operator cannot fix on its own: a rollback, a refused child, a missing
    Prometheus address or Gateway API CRD, unschedulable pods."""


ConditionTypeName = Annotated[
    str,
    StringConstraints(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    ),
]
Reason = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    ),
]
Message = Annotated[str, StringConstraints(max_length=32768)]
Timestamp = Annotated[datetime, Field(strict=False)]


class Condition(ApiModel):
    """One aspect of the state, as in the Kubernetes API conventions (metav1.Condition)."""

    type: ConditionTypeName = Field(
        description="Type of the condition: Ready, Available, Progressing or Degraded."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )
    last_transition_time: Timestamp = Field(
        description="When status last changed from one value to another."
    )
    reason: Reason = Field(description="One CamelCase word for the cause, for programs.")
    message: Message = Field(description="What happened and what to do, for humans.")


class ModelStatus(ApiModel):
    """A model version as deployed by a track."""

    uri: Annotated[str, StringConstraints(max_length=2048)] = Field(
        description="URI the model was fetched from."
    )
    sha256: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="SHA-256 of the model file, when the spec gave one."
    )
    version: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="Version from spec.model.version."
    )
    template_hash: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None,
        description="Hash of the serving settings besides the model file (runtime, pod "
        "template), computed by the operator: a change starts a rollout.",
    )


class AnalysisResult(ApiModel):
    """The latest measurement of one analysis metric."""

    name: Annotated[str, StringConstraints(max_length=63)] = Field(
        description="Name of the metric (spec.rollout.analysis.metrics[].name)."
    )
    value: float | None = Field(
        default=None, description="The canary's measured value; unset without data."
    )
    stable_value: float | None = Field(
        default=None,
        description="The stable track's value over the same window (metrics with maxIncrease).",
    )
    min: float | None = Field(default=None, description="Lowest passing value, from the spec.")
    max: float | None = Field(default=None, description="Highest passing value, from the spec.")
    max_increase: Increase | None = Field(
        default=None, description="Highest passing excess over stable's value, from the spec."
    )
    samples: int | None = Field(
        default=None,
        ge=0,
        description="Samples the canary's value rests on: requests, predictions or input values.",
    )
    stable_samples: int | None = Field(
        default=None, ge=0, description="Samples of the stable track, when it was measured."
    )
    min_samples: int | None = Field(
        default=None, ge=0, description="Fewest samples a result may rest on (minSamples)."
    )
    p_value: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="prediction-drift: probability of a difference at least this large between "
        "two tracks serving the same model (chi-squared test of homogeneity).",
    )
    window: Duration | None = Field(
        default=None,
        description="The window measured: analysis.interval, or longer after runs with too "
        "few samples.",
    )
    result: Literal["Passed", "Failed", "Inconclusive"] = Field(
        description="Passed (within the bounds), Failed, or Inconclusive (no data, too few "
        "samples, a difference within chance, or a query error)."
    )
    time: Timestamp = Field(description="When the value was measured.")
    message: Message | None = Field(
        default=None,
        description="What the result rests on or why it is Inconclusive (e.g. the sample "
        "counts, the Prometheus error).",
    )


class ContractCheck(ApiModel):
    """The canary's model metadata compared with the stable model's, before traffic moves."""

    result: Literal["Compatible", "Incompatible", "Unchecked"] = Field(
        description="Compatible: the canary accepts what stable accepts and answers the same "
        "outputs and classes. Incompatible: it does not (rolled back unless "
        "rollout.compatibility is Breaking). Unchecked: the metadata could not be read within "
        "the progress deadline and compatibility is Breaking."
    )
    differences: (
        Annotated[list[Annotated[str, StringConstraints(max_length=512)]], Field(max_length=32)]
        | None
    ) = Field(default=None, description="What changed, e.g. input X: shape [-1,4] -> [-1,5].")
    message: Message | None = Field(default=None, description="Why the check is Unchecked.")
    time: Timestamp = Field(description="When the check was made.")


class CanaryStatus(ApiModel):
    """The rollout under way: the new model, its traffic weight and its analysis."""

    uri: Annotated[str, StringConstraints(max_length=2048)] = Field(
        description="URI of the model the canary serves."
    )
    sha256: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="SHA-256 of the canary model, when the spec gave one."
    )
    version: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="Version of the canary model."
    )
    template_hash: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="Hash of the serving settings the canary runs."
    )
    state: Literal["Progressing", "Shadowing", "Paused", "Promoting"] = Field(
        default="Progressing",
        description="Progressing: walking the steps. Shadowing: at a shadow step, the stable "
        "pods mirror a copy of their requests to the canary (which answers no client) since "
        "stepStartedAt. Paused: waiting at a pause without duration for promote or abort. "
        "Promoting: the stable track is taking the new model; the canary goes once every "
        "stable pod runs it.",
    )
    weight: int = Field(
        default=0, ge=0, le=100, description="Percentage of traffic the canary receives now."
    )
    shadow_percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="While Shadowing: percentage of the stable track's requests mirrored to "
        "the canary.",
    )
    step_index: int = Field(
        default=0, ge=0, description="Index of the current step in spec.rollout.steps."
    )
    failed_checks: int = Field(
        default=0, ge=0, description="Failed analysis runs so far (rolls back at failureLimit)."
    )
    passed_checks: int = Field(
        default=0,
        ge=0,
        description="Passed analysis runs so far: with analysis, promotion waits for at least one.",
    )
    analysis: Annotated[list[AnalysisResult], Field(max_length=16), *list_map("name")] | None = (
        Field(default=None, description="Result of the latest analysis run, by metric.")
    )
    contract: ContractCheck | None = Field(
        default=None,
        description="The model metadata check made once the canary's pods were ready, before "
        "traffic moved; unset until then.",
    )
    window_start: Timestamp | None = Field(
        default=None,
        description="Start of the window the next analysis run reads: the last run that "
        "passed or failed (or the rollout's start), so runs with too few samples accumulate "
        "evidence instead of discarding it.",
    )
    started_at: Timestamp | None = Field(default=None, description="When the rollout started.")
    step_started_at: Timestamp | None = Field(
        default=None, description="When the current step started."
    )


class HistoryEntry(ApiModel):
    """A finished rollout."""

    model: ModelStatus = Field(description="The model that was rolled out.")
    result: Literal["Promoted", "RolledBack", "Superseded"] = Field(
        description="Promoted (now stable), RolledBack (failed analysis, deadline or abort) or "
        "Superseded (the spec changed again before the rollout finished)."
    )
    reason: Reason = Field(
        description="Why, in one word (e.g. AnalysisPassed, AnalysisFailed, "
        "ProgressDeadlineExceeded, Aborted, Promoted)."
    )
    message: Message | None = Field(default=None, description="Details, e.g. the failed values.")
    started_at: Timestamp | None = Field(default=None, description="When the rollout started.")
    time: Timestamp = Field(description="When the rollout finished.")


class ModelDeploymentStatus(ApiModel):
    """The observed state of a ModelDeployment."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the operator last acted on."
    )
    phase: Annotated[Phase, Field(strict=False)] | None = Field(
        default=None,
        description="Summary of the state. Pending: no pod of the model ready yet. "
        "Progressing: a rollout is under way. Paused: a canary waits for a human (promote or "
        "abort). Ready: every desired pod of the current model is ready, no rollout. Degraded: "
        "serving, but not as asked (rolled back, too few pods, a refused child); see the "
        "Degraded condition. Failed: not serving, and not expected to recover until the spec "
        "changes.",
    )
    conditions: Annotated[list[Condition], Field(max_length=16), *list_map("type")] | None = Field(
        default=None,
        description="Ready: the model is served at status.url by ready pods of the desired "
        "model. Available: at least the minimum number of pods is ready. Progressing: a rollout "
        "or scale change is under way. Degraded: something the operator cannot fix on its own "
        "(a rollback, a refused child object, no Prometheus address, no Gateway API CRDs, "
        "unschedulable pods); its message says what to do.",
    )
    replicas: int | None = Field(
        default=None, ge=0, description="Serving pods that exist, all tracks together."
    )
    ready_replicas: int | None = Field(
        default=None, ge=0, description="Serving pods that are ready, all tracks together."
    )
    selector: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None, description="Label selector of the serving pods (for kubectl scale and HPAs)."
    )
    url: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        default=None, description="In-cluster URL of the model's inference API."
    )
    stable: ModelStatus | None = Field(
        default=None, description="The model the stable track serves."
    )
    canary: CanaryStatus | None = Field(
        default=None, description="The rollout under way; unset when none is."
    )
    history: Annotated[list[HistoryEntry], Field(max_length=10)] | None = Field(
        default=None, description="The last finished rollouts, newest first (at most 10)."
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of the given type, if set."""
        return next((c for c in self.conditions or () if c.type == type_), None)
