"""The rollout's state and the step function's vocabulary: what a track runs (``Target``),
what a tick observed (``Observations``) and what it decided (``Decision``). Pure."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.rollout.contract import ContractReading

__all__ = [
    "HISTORY_LIMIT",
    "Decision",
    "Event",
    "Observations",
    "Target",
    "canary_replicas",
    "entry",
    "iso",
    "last_analysis",
    "parse_time",
    "record",
    "rollback_message",
    "stable_share",
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
    contract: ContractReading | None = None
    """Both tracks' model metadata, read once the canary's pods are ready and until the
    comparison is in ``status.canary.contract``."""
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


def stable_share(total: int, canary: int) -> int:
    """Stable pods beside ``canary`` ready canary pods under replica-ratio routing."""
    return max(1, total - canary)


def last_analysis(canary: Mapping[str, Any]) -> datetime | None:
    """When the latest analysis run was made, if any."""
    times = [parse_time(r["time"]) for r in canary.get("analysis") or ()]
    return max(times) if times else None


def entry(
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


def record(decision: Decision, entry: dict[str, Any]) -> None:
    decision.history = [entry, *decision.history][:HISTORY_LIMIT]


def rollback_message(entry: Mapping[str, Any], stable: Target) -> str:
    model = Target.of_status(entry["model"])
    return (
        f"Rolled back {model.describe()}: {entry.get('message') or entry['reason']}. "
        f"The stable track serves {stable.describe()}. Change spec.model (or the pod template) "
        "to roll out again."
    )
