"""The rollout's state and the step function's vocabulary: what a track runs (``ModelStatus``),
what a tick observed (``Observations``) and what it decided (``Decision``). Pure."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from modeldeploy.api import CanaryStatus, HistoryEntry, ModelDeployment, ModelStatus
from modeldeploy.api.status import AnalysisResult
from modeldeploy.rollout.contract import ContractReading

__all__ = [
    "HISTORY_LIMIT",
    "Decision",
    "Event",
    "Observations",
    "canary_replicas",
    "describe_model",
    "desired_model",
    "entry",
    "iso",
    "last_analysis",
    "model_key",
    "model_of",
    "parse_time",
    "record",
    "rollback_message",
    "same_model",
    "stable_share",
    "stamp",
    "template_hash",
]

HISTORY_LIMIT = 10
MIN_REQUEUE_SECONDS = 1.0

Event = tuple[str, str, str]
"""(type Normal|Warning, reason, message)."""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp(moment: datetime) -> datetime:
    """``moment`` as status stores it: UTC, whole seconds."""
    return moment.astimezone(UTC).replace(microsecond=0)


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


def desired_model(md: ModelDeployment) -> ModelStatus:
    """What the spec asks the pods to run: the model file and the serving settings."""
    model = md.spec.model
    return ModelStatus(
        uri=model.uri, sha256=model.sha256, version=model.version, template_hash=template_hash(md)
    )


def model_of(track: ModelStatus | CanaryStatus) -> ModelStatus:
    """The model a track runs (the canary's status carries its model beside its progress)."""
    if isinstance(track, ModelStatus):
        return track
    return ModelStatus(
        uri=track.uri, sha256=track.sha256, version=track.version, template_hash=track.template_hash
    )


def same_model(one: ModelStatus | CanaryStatus, other: ModelStatus | CanaryStatus) -> bool:
    """Same model and settings. A missing template hash (a status written before hashes
    existed) matches any: an operator upgrade must not start rollouts by itself."""
    same_file = (one.uri, one.sha256, one.version) == (other.uri, other.sha256, other.version)
    hashes = (one.template_hash, other.template_hash)
    return same_file and (None in hashes or hashes[0] == hashes[1])


def model_key(model: ModelStatus | CanaryStatus) -> str:
    """A short stable identifier, stamped on the Deployment that runs this model."""
    wire = model_of(model).model_dump(mode="json", by_alias=True, exclude_none=True)
    return hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()[:16]


def describe_model(model: ModelStatus | CanaryStatus) -> str:
    return model.uri + (f" (version {model.version})" if model.version else "")


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
    """``model_key`` of what every stable pod runs, all ready (None while they roll)."""
    analysis: list[AnalysisResult] | None = None
    """This tick's analysis run (``status.canary.analysis`` entries), when one was due."""
    analysis_error: str | None = None
    """Why analysis cannot run at all (e.g. no Prometheus address)."""
    routing_error: str | None = None
    """Why traffic cannot be routed (e.g. no Gateway API CRDs)."""
    contract: ContractReading | None = None
    """Both tracks' model metadata, read once the canary's pods are ready and until the
    comparison is in ``status.canary.contract``."""
    promote: bool = False
    abort: bool = False


@dataclass
class Decision:
    """The next rollout state and what the children must look like."""

    stable_target: ModelStatus
    canary: CanaryStatus | None = None
    stable: ModelStatus | None = None
    """``status.stable`` (None: left to the status computation, which records the first model
    once it is ready)."""
    history: list[HistoryEntry] = field(default_factory=list)
    canary_target: ModelStatus | None = None
    """What the canary Deployment runs; None when there must be no canary Deployment."""
    canary_replicas: int = 0
    stable_replicas: int | None = None
    """Pods of the stable Deployment; None when the autoscaler owns the count."""
    weight: int = 0
    """Percentage of traffic routed to the canary."""
    mirror: int = 0
    """Percentage of the stable track's requests mirrored to the canary (a shadow step); 0
    turns mirroring off, as it is whenever a shadow step is not under way."""
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


def stable_share(total: int, canary: int) -> int:
    """Stable pods beside ``canary`` ready canary pods under replica-ratio routing."""
    return max(1, total - canary)


def last_analysis(canary: CanaryStatus) -> datetime | None:
    """When the latest analysis run was made, if any."""
    times = [parse_time(r.time) for r in canary.analysis or ()]
    return max(times) if times else None


def entry(
    model: ModelStatus,
    canary: CanaryStatus,
    result: Literal["Promoted", "RolledBack", "Superseded"],
    reason: str,
    message: str,
    now: datetime,
) -> HistoryEntry:
    return HistoryEntry(
        model=model,
        result=result,
        reason=reason,
        message=message[:4096],
        started_at=canary.started_at,
        time=stamp(now),
    )


def record(decision: Decision, entry: HistoryEntry) -> None:
    decision.history = [entry, *decision.history][:HISTORY_LIMIT]


def rollback_message(entry: HistoryEntry, stable: ModelStatus) -> str:
    return (
        f"Rolled back {describe_model(entry.model)}: {entry.message or entry.reason}. "
        f"The stable track serves {describe_model(stable)}. Change spec.model (or the pod "
        "template) to roll out again."
    )
