"""The rollout part of a ModelDeployment's spec: strategy, canary steps, analysis, traffic."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema

from modeldeploy.api.types import ApiModel, Duration, Rule, list_map, passthrough_list

BUILTIN_METRICS = (
    "error-rate",
    "client-error-rate",
    "latency-p99",
    "prediction-drift",
    "data-quality",
    "shadow-agreement",
    "shadow-slice-agreement",
)
"""Analysis metrics the operator knows how to query without a `query`."""

SHADOW_METRICS = ("shadow-agreement", "shadow-slice-agreement")
"""Built-in metrics read from the stable track's paired comparison of mirrored rows: they
are measured during shadow steps only."""

CLIENT_METRICS = ("latency-p99", "data-quality")
"""Built-in metrics of the canary's answers to clients alone: not measured during a shadow
step, when the canary answers mirrored copies only (its latency then is not a client's, and
the copies' inputs are the stable's, checked there)."""

COMPARING_METRICS = ("prediction-drift", *SHADOW_METRICS)
"""Built-in metrics that compare the canary with the stable track already (no maxIncrease)."""

DEFAULT_MIN_SAMPLES = 100
"""minSamples of a built-in metric when the spec gives none: requests (error-rate,
client-error-rate, latency-p99), predictions per track (prediction-drift), input values
(data-quality) or mirrored rows (shadow-agreement; per slice for shadow-slice-agreement).
Fewer than 100 make a p99 the maximum and one error a 1% error rate."""

INCREASE_PATTERN = r"^[0-9]+(\.[0-9]+)?%?$"


def _check_increase(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("maxIncrease must not be negative")
        return value
    if len(value) > 16 or not re.match(INCREASE_PATTERN, value):
        raise ValueError(
            f'maxIncrease {value!r} is neither an amount (e.g. "0.01") nor a percentage of '
            "the stable track's value (e.g. 20%)"
        )
    return value


Increase = Annotated[
    int | str,
    AfterValidator(_check_increase),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": INCREASE_PATTERN,
            "maxLength": 16,
        }
    ),
]
"""How far the canary's value may exceed the stable track's: an amount in the metric's unit
(an integer, or a decimal string such as "0.01") or a percentage of stable's value ("20%")."""


def parse_increase(value: int | str) -> tuple[float, bool]:
    """(amount, relative) of a maxIncrease: ``"20%"`` is (0.2, True), ``"0.01"`` (0.01, False)."""
    if isinstance(value, int):
        return float(value), False
    if value.endswith("%"):
        return float(value[:-1]) / 100, True
    return float(value), False


HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Pause(ApiModel):
    """Wait before the next step."""

    duration: Duration | None = Field(
        default=None,
        description="How long to wait (e.g. 60s, 5m). Without it the rollout waits for a "
        "human: the serving.modeldeploy.io/promote annotation or `modeldeploy promote`.",
    )


class Shadow(ApiModel):
    """Mirror a copy of the stable track's requests to the canary, which answers no client."""

    percent: int = Field(
        default=100,
        ge=1,
        le=100,
        description="Percentage of the stable track's requests whose copy is sent to the canary.",
    )
    duration: Duration = Field(
        description="How long to mirror (e.g. 10m), counted from when mirroring starts: once "
        "the canary's pods are ready and its model's contract is checked."
    )


class Step(ApiModel):
    """One canary step: exactly one of setWeight, pause or shadow."""

    __rules__ = (
        Rule(
            cel="(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) "
            "+ (has(self.shadow) ? 1 : 0) == 1",
            message="each step has exactly one of setWeight, pause or shadow",
            check=lambda s: [s.set_weight, s.pause, s.shadow].count(None) == 2,
        ),
    )

    set_weight: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Percentage of traffic (0-100) sent to the canary from this step on.",
    )
    pause: Pause | None = Field(default=None, description="Wait before the next step.")
    shadow: Shadow | None = Field(
        default=None,
        description="Run the canary with no client traffic: the stable pods send it a copy of "
        "percent of their requests and compare its answers with their own, row by row "
        "(shadow-agreement, shadow-slice-agreement), for duration. Only before the first "
        "setWeight.",
    )


class PrometheusSource(ApiModel):
    """The Prometheus server analysis metrics are read from."""

    address: Annotated[
        str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048)
    ] = Field(
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090."
    )


class AnalysisMetric(ApiModel):
    """A check run at each analysis interval: the canary's value must lie within [min, max]
    and exceed the stable track's by at most maxIncrease."""

    __rules__ = (
        Rule(
            cel=f"self.name in [{', '.join(repr(n) for n in BUILTIN_METRICS)}] || has(self.query)",
            message="metrics[].query is required for a metric that is not built in "
            f"({', '.join(BUILTIN_METRICS)})",
            check=lambda m: m.name in BUILTIN_METRICS or m.query is not None,
            field_path=".query",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="has(self.min) || has(self.max) || has(self.maxIncrease)",
            message="metrics[] needs a bound: min, max or maxIncrease",
            check=lambda m: m.min is not None or m.max is not None or m.max_increase is not None,
            field_path=".max",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.maxIncrease) || type(self.maxIncrease) == string "
            "|| self.maxIncrease >= 0",
            message="metrics[].maxIncrease must not be negative",
            check=lambda m: not isinstance(m.max_increase, int) or m.max_increase >= 0,
            field_path=".maxIncrease",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="self.name != 'prediction-drift' || has(self.query) || !has(self.maxIncrease)",
            message="prediction-drift compares the canary with the stable track already: "
            "bound it with max, not maxIncrease",
            check=lambda m: (
                m.name != "prediction-drift" or m.query is not None or m.max_increase is None
            ),
            field_path=".maxIncrease",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=f"!(self.name in [{', '.join(repr(n) for n in SHADOW_METRICS)}]) "
            "|| has(self.query) || !has(self.maxIncrease)",
            message="shadow-agreement and shadow-slice-agreement compare the canary's answers "
            "with the stable model's on the same rows already: bound them with min, not "
            "maxIncrease",
            check=lambda m: (
                m.name not in SHADOW_METRICS or m.query is not None or m.max_increase is None
            ),
            field_path=".maxIncrease",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="metrics[].min must be less than or equal to max",
            check=lambda m: m.min is None or m.max is None or m.min <= m.max,
            field_path=".min",
            reason="FieldValueInvalid",
        ),
    )

    name: Annotated[
        str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    ] = Field(
        description="Name of the check. Built in: error-rate (fraction of a track's requests "
        "answered 5xx), client-error-rate (fraction answered 4xx; bound it with maxIncrease, "
        "since client mistakes reach both tracks), latency-p99 (99th percentile latency, "
        "seconds), prediction-drift (Jensen-Shannon distance, 0 to 1, between the canary's and "
        "the stable track's predictions: class counts or the output histogram; it fails only "
        "when the difference is also statistically significant), data-quality (fraction of "
        "input values outside the model's training profile), and, during shadow steps, "
        "shadow-agreement (fraction of mirrored rows where the canary's answer agrees with the "
        "stable model's) and shadow-slice-agreement (the same in the worst slice of the "
        "training profile's bins with at least minSamples rows). Any other name needs a query."
    )
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description="PromQL returning one number; replaces the built-in query of a built-in "
        "name. Placeholders: {{namespace}}, {{name}} (the ModelDeployment), {{track}} (canary, "
        "or stable for maxIncrease) and {{interval}} (the analysis window: analysis.interval, "
        "longer after runs that had too few samples).",
    )
    min: float | None = Field(default=None, description="Lowest passing value.")
    max: float | None = Field(default=None, description="Highest passing value.")
    max_increase: Increase | None = Field(
        default=None,
        description="Highest passing excess of the canary's value over the stable track's, "
        "measured over the same window: a percentage of stable's value (e.g. 20%) or an amount "
        'in the metric\'s unit (an integer, or a decimal string such as "0.01").',
    )
    min_samples: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="Fewest samples a run may judge: below it the result is Inconclusive (the "
        "next run reads a longer window). Counted per track: requests (error-rate, "
        "client-error-rate, latency-p99 and queries), predictions (prediction-drift), input "
        "values (data-quality) or mirrored rows (shadow-agreement; shadow-slice-agreement "
        "judges only slices with at least this many rows). Default "
        f"{DEFAULT_MIN_SAMPLES} for built-in metrics, 0 for queries.",
    )

    def measured(self, shadowing: bool) -> bool:
        """Whether an analysis run measures this metric, during a shadow step or outside one
        (the shadow gates only during one, latency-p99 and data-quality only outside)."""
        if self.query is not None:
            return True
        if self.name in SHADOW_METRICS:
            return shadowing
        return not (shadowing and self.name in CLIENT_METRICS)

    def effective_min_samples(self) -> int:
        """minSamples, or the default of a built-in metric."""
        if self.min_samples is not None:
            return self.min_samples
        return DEFAULT_MIN_SAMPLES if self.query is None else 0


MetricList = Annotated[list[AnalysisMetric], Field(min_length=1, max_length=16), *list_map("name")]


class Analysis(ApiModel):
    """Measured evidence that decides a canary: checks read from Prometheus at each interval."""

    interval: Duration = Field(default="1m", description="Time between two analysis runs.")
    failure_limit: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Number of failed analysis runs that rolls the canary back.",
    )
    inconclusive: Literal["Wait", "Fail"] = Field(
        default="Wait",
        description="What a run without data means: Wait (count nothing; the progress deadline "
        "still applies) or Fail (count a failed run).",
    )
    prometheus: PrometheusSource | None = Field(
        default=None,
        description="Prometheus to query. Defaults to the address the operator is configured "
        "with; without either the rollout reports a Degraded condition.",
    )
    metrics: MetricList = Field(description="The checks; each run passes when all pass.")
    on_no_traffic: Literal["Rollback", "Promote"] = Field(
        default="Rollback",
        description="What the progress deadline does to a canary that received no request at "
        "all, so that no analysis could judge it: Rollback (the default), or Promote (for "
        "models that may see no traffic during a rollout, e.g. a nightly batch).",
    )


class GatewayAPIRouting(ApiModel):
    """Weighted traffic with a Gateway API HTTPRoute (one backend Service per track)."""

    parent_refs: Annotated[
        list[dict[str, Any]],
        Field(min_length=1),
        passthrough_list("HTTPRoute's spec.parentRefs (gateway.networking.k8s.io/v1)", 32),
    ] = Field(description="Gateways the HTTPRoute attaches to.")
    hostnames: (
        Annotated[
            list[Annotated[str, StringConstraints(pattern=HOSTNAME_PATTERN, max_length=253)]],
            Field(max_length=16),
        ]
        | None
    ) = Field(default=None, description="Hostnames the HTTPRoute matches; all when unset.")


class TrafficRouting(ApiModel):
    """How canary traffic is split between the stable and the canary track."""

    gateway_api: GatewayAPIRouting = Field(
        alias="gatewayAPI",
        description="Split traffic with a Gateway API HTTPRoute (exact weights).",
    )


StepList = Annotated[list[Step], Field(max_length=32)]


class Rollout(ApiModel):
    """How a change of model or pod template is rolled out."""

    __rules__ = (
        Rule(
            cel="self.strategy == 'Canary' || !has(self.steps)",
            message="rollout.steps is only allowed with strategy Canary",
            check=lambda r: r.strategy == "Canary" or r.steps is None,
            field_path=".steps",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="self.strategy != 'Canary' || (has(self.steps) && size(self.steps) > 0)",
            message="rollout.steps must list at least one step with strategy Canary",
            check=lambda r: r.strategy != "Canary" or bool(r.steps),
            field_path=".steps",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.strategy == 'Canary' || !has(self.analysis)",
            message="rollout.analysis is only allowed with strategy Canary",
            check=lambda r: r.strategy == "Canary" or r.analysis is None,
            field_path=".analysis",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="self.strategy == 'Canary' || !has(self.trafficRouting)",
            message="rollout.trafficRouting is only allowed with strategy Canary",
            check=lambda r: r.strategy == "Canary" or r.traffic_routing is None,
            field_path=".trafficRouting",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.steps) || "
            "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
            message="rollout.steps[].setWeight must never decrease from one step to the next",
            check=lambda r: _never_decreasing(r.steps),
            field_path=".steps",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.steps) || !self.steps.exists(s, has(s.setWeight)) || "
            "self.steps.map(s, has(s.shadow)).lastIndexOf(true) < "
            "self.steps.map(s, has(s.setWeight)).indexOf(true)",
            message="rollout.steps[].shadow must come before the first setWeight: a canary "
            "that answers clients is no longer shadowed",
            check=lambda r: _shadow_first(r.steps),
            field_path=".steps",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.analysis) || !self.analysis.metrics.exists(m, !has(m.query) && "
            f"m.name in [{', '.join(repr(n) for n in SHADOW_METRICS)}]) || "
            "(has(self.steps) && self.steps.exists(s, has(s.shadow)))",
            message="rollout.analysis.metrics[] shadow-agreement and shadow-slice-agreement "
            "need a shadow step in rollout.steps: they are measured only while the canary is "
            "shadowed",
            check=lambda r: _shadow_metrics_have_a_step(r),
            field_path=".analysis",
            reason="FieldValueInvalid",
        ),
    )

    strategy: Literal["Rolling", "Canary"] = Field(
        default="Rolling",
        description="Rolling: replace the pods in place. Canary: run the new model beside the "
        "old one and move traffic to it step by step, judged by analysis.",
    )
    steps: StepList | None = Field(
        default=None,
        description="Canary steps, in order: shadow mirrors a copy of the stable track's "
        "requests to the canary (only before the first setWeight), setWeight moves traffic "
        "(weights never decrease), pause waits. After the last step the canary is promoted.",
    )
    analysis: Analysis | None = Field(
        default=None,
        description="Checks that roll the canary back when they fail; without analysis only "
        "the steps and the progress deadline decide.",
    )
    traffic_routing: TrafficRouting | None = Field(
        default=None,
        description="How canary traffic is split. Without it the weight is approximated by the "
        "ratio of canary to stable pods behind the one Service.",
    )
    compatibility: Literal["Strict", "Breaking"] = Field(
        default="Strict",
        description="Strict: before any traffic moves, the canary's model metadata (inputs: "
        "names, datatypes, shapes; outputs: names, datatypes; class labels) must accept what "
        "the stable model accepts, or the canary is rolled back. Breaking: an intended "
        "breaking change; differences are reported in an Event and the status, not enforced.",
    )
    progress_deadline: Duration = Field(
        default="10m",
        description="Longest time the rollout may go without progress (new pods becoming "
        "ready, a step completing; a pause waiting for a human does not count) before it is "
        "rolled back.",
    )


def _never_decreasing(steps: list[Step] | None) -> bool:
    weights = [s.set_weight for s in steps or () if s.set_weight is not None]
    return weights == sorted(weights)


def _shadow_first(steps: list[Step] | None) -> bool:
    weights = [i for i, s in enumerate(steps or ()) if s.set_weight is not None]
    shadows = [i for i, s in enumerate(steps or ()) if s.shadow is not None]
    return not weights or not shadows or shadows[-1] < weights[0]


def _shadow_metrics_have_a_step(rollout: Rollout) -> bool:
    metrics = rollout.analysis.metrics if rollout.analysis else []
    if not any(m.query is None and m.name in SHADOW_METRICS for m in metrics):
        return True
    return any(s.shadow is not None for s in rollout.steps or ())
