"""Analysis: read the checks from Prometheus's HTTP API, for the canary and, where a metric
compares the tracks, for the stable track over the same window; then judge them.

``Prometheus`` is the port (one instant query per call, standard library HTTP); the rest is
pure: the built-in queries, placeholder rendering, and the verdicts (``verdicts``). No data,
or fewer samples than ``minSamples``, is Inconclusive, never a pass.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from modeldeploy.api import ModelDeployment, parse_duration
from modeldeploy.api.rollout import SHADOW_METRICS, AnalysisMetric
from modeldeploy.api.status import AnalysisResult
from modeldeploy.rollout.agreement import agreement, describe_disagreement, slices, worst_slice
from modeldeploy.rollout.plan import iso
from modeldeploy.rollout.statistics import homogeneity, jensen_shannon
from modeldeploy.rollout.verdicts import judge

__all__ = [
    "BUILTIN_QUERIES",
    "AnalysisError",
    "MetricsSource",
    "Prometheus",
    "counted",
    "measure",
    "render",
]

Sample = tuple[dict[str, str], float]
"""(labels, value) of one series of an instant vector."""


class AnalysisError(Exception):
    """A query that could not be answered (unreachable Prometheus, bad PromQL)."""


class MetricsSource(Protocol):
    def query(self, promql: str) -> list[Sample]: ...


@dataclass
class Prometheus:
    """Prometheus's HTTP API (``/api/v1/query``)."""

    address: str
    timeout: float = 5.0

    def query(self, promql: str) -> list[Sample]:
        url = self.address.rstrip("/") + "/api/v1/query"
        data = urllib.parse.urlencode({"query": promql}).encode()
        request = urllib.request.Request(url, data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            try:
                detail = json.load(error).get("error", error.reason)
            except ValueError:
                detail = error.reason
            raise AnalysisError(
                f"Prometheus at {self.address} refused the query: {detail}"
            ) from error
        except (OSError, ValueError) as error:
            raise AnalysisError(f"Prometheus at {self.address} is unreachable: {error}") from error
        result = body.get("data", {})
        if result.get("resultType") == "scalar":
            return [({}, float(result["result"][1]))]
        return [
            (dict(item.get("metric", {})), float(item["value"][1]))
            for item in result.get("result", [])
        ]


SELECTOR = 'namespace="{{namespace}}",deployment="{{name}}",track="{{track}}"'
WINDOW = "{{interval}}"


def counted(metric: str, matchers: str = "", by: str = "") -> str:
    """PromQL for what a counter counted in the window: the counter now minus the counter one
    window ago, series by series (all of it for a series younger than the window, such as a
    new canary pod's). Not ``increase()``, which extrapolates to the window's edges: sample
    counts and the drift test need the events that happened."""
    series = metric + "{" + SELECTOR + matchers + "}"
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (clamp_min({series} - {series} offset {WINDOW}, 0) or {series})"


REQUESTS = counted("modeldeploy_requests_total")

RATIOS: dict[str, tuple[str, str, str]] = {
    # name: (events counted, out of, what they are)
    "error-rate": (
        counted("modeldeploy_requests_total", ',code=~"5.."'),
        REQUESTS,
        "requests answered 5xx",
    ),
    "client-error-rate": (
        counted("modeldeploy_requests_total", ',code=~"4.."'),
        REQUESTS,
        "requests answered 4xx",
    ),
    "data-quality": (
        counted("modeldeploy_feature_issues_total"),
        counted("modeldeploy_feature_values_total"),
        "input values outside the profile",
    ),
}
"""Built-in metrics that are a fraction of counted events; the denominator is the sample."""

SHADOW_REQUESTS = counted("modeldeploy_shadow_requests_total")
SHADOW_RATIOS: dict[str, tuple[str, str, str]] = {
    "error-rate": (
        counted("modeldeploy_shadow_requests_total", ',code=~"5.."'),
        SHADOW_REQUESTS,
        "mirrored copies answered 5xx",
    ),
    "client-error-rate": (
        counted("modeldeploy_shadow_requests_total", ',code=~"4.."'),
        SHADOW_REQUESTS,
        "mirrored copies answered 4xx",
    ),
}
"""The canary's error rates during a shadow step, when it answers mirrored copies only."""

LATENCY_P99 = (
    "histogram_quantile(0.99, sum by (le) "
    f"(rate(modeldeploy_request_duration_seconds_bucket{{{SELECTOR}}}[{WINDOW}])))"
)
LATENCY_SAMPLES = counted("modeldeploy_request_duration_seconds_count")
CLASS_COUNTS = counted("modeldeploy_predictions_total", by="class")
VALUE_BUCKETS = counted("modeldeploy_prediction_value_bucket", by="le")

# The paired comparison of mirrored rows, counted by the stable track's pods (the track that
# mirrors), so read with {{track}} = stable.
SHADOW_TRACK = "stable"
SHADOW_ROWS = counted("modeldeploy_shadow_rows_total")
SHADOW_DISAGREED = counted("modeldeploy_shadow_disagreeing_rows_total")
SHADOW_DROPPED = counted("modeldeploy_shadow_dropped_total")
SLICE_ROWS = counted("modeldeploy_shadow_slice_rows_total", by="feature, bin")
SLICE_DISAGREED = counted("modeldeploy_shadow_disagreements_total", by="feature, bin")

BUILTIN_QUERIES: dict[str, list[str]] = {
    **{name: [numerator, denominator] for name, (numerator, denominator, _) in RATIOS.items()},
    "latency-p99": [LATENCY_P99, LATENCY_SAMPLES],
    "prediction-drift": [CLASS_COUNTS, VALUE_BUCKETS],
    "shadow-agreement": [SHADOW_DISAGREED, SHADOW_ROWS, SHADOW_DROPPED],
    "shadow-slice-agreement": [SLICE_DISAGREED, SLICE_ROWS],
}
"""Every query a built-in metric runs, per track (for the documentation and its test)."""


def render(query: str, md: ModelDeployment, track: str = "canary", seconds: int = 0) -> str:
    """Fill the placeholders {{namespace}}, {{name}}, {{track}}, {{interval}} (the window,
    ``seconds`` long; the analysis interval when 0)."""
    if seconds <= 0:
        analysis = md.spec.rollout.analysis
        interval = parse_duration(analysis.interval if analysis else "1m").total_seconds()
        seconds = int(interval)
    values = {
        "namespace": md.namespace or "default",
        "name": md.name,
        "track": track,
        "interval": f"{max(seconds, 1)}s",
    }
    for key, value in values.items():
        query = query.replace("{{" + key + "}}", value)
    return query


def _single(samples: list[Sample]) -> float | None:
    if not samples:
        return None
    if len(samples) > 1:
        raise AnalysisError(
            f"the query returned {len(samples)} series; aggregate it to one (e.g. sum(...))"
        )
    value = samples[0][1]
    return None if math.isnan(value) or math.isinf(value) else value


def _count(samples: list[Sample]) -> float:
    """A counted() result: nothing counted is 0."""
    value = _single(samples)
    return max(0.0, value) if value is not None else 0.0


def _bins(samples: list[Sample]) -> dict[str, float]:
    """Per-bin counts from cumulative histogram buckets (``le``)."""
    buckets = sorted(
        ((float(labels.get("le", "inf")), value) for labels, value in samples),
        key=lambda item: item[0],
    )
    counts, below = {}, 0.0
    for bound, cumulative in buckets:
        counts[f"{bound:g}"] = max(0.0, cumulative - below)
        below = cumulative
    return counts


@dataclass
class _Reader:
    """The queries of one analysis run: one ModelDeployment, one window."""

    md: ModelDeployment
    source: MetricsSource
    seconds: int
    versions: tuple[str, str] = ("the canary", "the stable model")
    """How messages name the canary's and the stable track's models (e.g. v2, v1)."""
    shadowing: bool = False
    """During a shadow step the canary answers mirrored copies only, which its server counts
    apart (``modeldeploy_shadow_requests_total``): its error rates are read from those."""

    def query(self, promql: str, track: str) -> list[Sample]:
        return self.source.query(render(promql, self.md, track, self.seconds))

    def track(self, metric: AnalysisMetric, track: str) -> tuple[float | None, int, str]:
        """(value, samples, what the value rests on) of one track."""
        if metric.query is not None:
            value = _single(self.query(metric.query, track))
            return value, round(_count(self.query(REQUESTS, track))), ""
        if metric.name in RATIOS:
            numerator, denominator, what = RATIOS[metric.name]
            if self.shadowing and track == "canary" and metric.name in SHADOW_RATIOS:
                numerator, denominator, what = SHADOW_RATIOS[metric.name]
            total = _count(self.query(denominator, track))
            if total <= 0:
                return None, 0, ""
            events = _count(self.query(numerator, track))
            return events / total, round(total), f"{events:.0f} of {total:.0f} {what}"
        if metric.name == "latency-p99":
            samples = round(_count(self.query(LATENCY_SAMPLES, track)))
            return _single(self.query(LATENCY_P99, track)), samples, ""
        # the API refuses this; kept as a clear message all the same
        raise AnalysisError(f"{metric.name} is not a built-in metric and has no query")

    def drift(self, entry: dict[str, Any]) -> None:
        """prediction-drift: the distance between the tracks' predictions and its p-value."""
        canary: dict[str, float] = {}
        stable: dict[str, float] = {}
        for promql, label in ((CLASS_COUNTS, "class"), (VALUE_BUCKETS, "le")):
            found = {t: self.query(promql, t) for t in ("canary", "stable")}
            if found["canary"] or found["stable"]:
                if label == "class":
                    canary, stable = ({lb.get("class", ""): v for lb, v in found[t]}
                                      for t in ("canary", "stable"))  # fmt: skip
                else:
                    canary, stable = _bins(found["canary"]), _bins(found["stable"])
                break
        entry["samples"] = round(sum(canary.values()))
        entry["stableSamples"] = round(sum(stable.values()))
        distance = jensen_shannon(canary, stable)
        test = homogeneity(canary, stable)
        if distance is None or test is None:
            return
        entry.update(value=round(distance, 6), pValue=round(test.p_value, 6))
        entry["message"] = (
            f"compared {entry['samples']} canary and {entry['stableSamples']} stable "
            f"predictions; p = {test.p_value:.2g}"
        )

    def shadow(self, metric: AnalysisMetric, entry: dict[str, Any]) -> None:
        """shadow-agreement (all mirrored rows) or shadow-slice-agreement (the worst slice
        with at least minSamples rows): agreement of the canary's answers with stable's."""
        canary, stable = self.versions
        if metric.name == "shadow-agreement":
            rows = _count(self.query(SHADOW_ROWS, SHADOW_TRACK))
            entry["samples"] = round(rows)
            value = agreement(rows, _count(self.query(SHADOW_DISAGREED, SHADOW_TRACK)))
            if value is None:
                entry["message"] = "no mirrored row compared in this window"
                return
            disagreed = rows * (1 - value)
            entry.update(value=round(value, 6))
            entry["message"] = describe_disagreement(canary, stable, rows, disagreed)
            dropped = _count(self.query(SHADOW_DROPPED, SHADOW_TRACK))
            if dropped > 0:
                entry["message"] += f" ({dropped:.0f} copies dropped, not compared)"
            return
        found = slices(
            self.query(SLICE_ROWS, SHADOW_TRACK), self.query(SLICE_DISAGREED, SHADOW_TRACK)
        )
        need = metric.effective_min_samples()
        worst = worst_slice(found, need)
        if worst is None:
            most = max((s.rows for s in found), default=0.0)
            entry["samples"] = round(most)
            entry["message"] = (
                f"no slice has {need} mirrored rows yet (minSamples; the largest has {most:.0f})"
                if found
                else "no mirrored row compared in this window"
            )
            return
        entry.update(value=round(worst.agreement, 6), samples=round(worst.rows))
        entry["message"] = describe_disagreement(
            canary, stable, worst.rows, worst.disagreements, worst.where
        )

    def read(self, metric: AnalysisMetric, entry: dict[str, Any]) -> None:
        """Fill ``entry`` with what ``metric`` measures (value, samples, stable's too)."""
        if metric.query is None and metric.name == "prediction-drift":
            return self.drift(entry)
        if metric.query is None and metric.name in SHADOW_METRICS:
            return self.shadow(metric, entry)
        value, samples, rests_on = self.track(metric, "canary")
        entry["samples"] = samples
        if value is not None:
            entry["value"] = round(value, 6)
        if metric.max_increase is None:
            if rests_on:
                entry["message"] = rests_on
            return None
        stable, stable_samples, stable_rests_on = self.track(metric, "stable")
        entry["stableSamples"] = stable_samples
        if stable is not None:
            entry["stableValue"] = round(stable, 6)
        if rests_on and stable_rests_on:
            entry["message"] = f"canary {rests_on}; stable {stable_rests_on}"
        return None


def measure(
    md: ModelDeployment,
    source: MetricsSource | None,
    now: datetime,
    *,
    window: timedelta | None = None,
    unavailable: str | None = None,
    shadowing: bool = False,
    versions: tuple[str | None, str | None] = (None, None),
) -> list[AnalysisResult]:
    """One analysis run over the ``window`` ending now (default: the interval): every metric
    of ``md``'s analysis, as ``status.canary.analysis``.

    The shadow gates are measured only while ``shadowing`` (a shadow step mirrors requests):
    outside of one there is nothing to compare, and they neither pass nor fail. ``versions``
    names the canary's and the stable model in their messages (e.g. v2, v1)."""
    analysis = md.spec.rollout.analysis
    if analysis is None:
        return []
    seconds = max(1, int((window or parse_duration(analysis.interval)).total_seconds()))
    stamp = iso(now)
    names = (versions[0] or "the canary", versions[1] or "the stable model")
    results = []
    for metric in analysis.metrics:
        if not metric.measured(shadowing):
            continue
        entry: dict[str, Any] = {"name": metric.name, "window": f"{seconds}s", "time": stamp}
        for key, value in (
            ("min", metric.min),
            ("max", metric.max),
            ("maxIncrease", metric.max_increase),
            ("minSamples", metric.effective_min_samples()),
        ):
            if value is not None:
                entry[key] = value
        try:
            if source is None:
                raise AnalysisError(unavailable or "no metrics source")
            _Reader(md, source, seconds, names, shadowing).read(metric, entry)
        except AnalysisError as error:
            entry.update(result="Inconclusive", message=str(error)[:1024])
        else:
            judge(metric, entry)
        results.append(AnalysisResult.model_validate(entry))
    return results
