"""Analysis: read the canary's checks from Prometheus's HTTP API and judge them.

``Prometheus`` is the port (one instant query per call, standard library HTTP); the rest is
pure: the built-in queries, placeholder rendering, and the verdict of each value against its
``min``/``max``. No data is Inconclusive, never a pass.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from modeldeploy.api import ModelDeployment, parse_duration
from modeldeploy.api.rollout import AnalysisMetric
from modeldeploy.rollout.plan import iso

__all__ = [
    "AnalysisError",
    "MetricsSource",
    "Prometheus",
    "builtin_query",
    "jensen_shannon",
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


def _window(md: ModelDeployment) -> str:
    analysis = md.spec.rollout.analysis
    seconds = parse_duration(analysis.interval if analysis else "1m").total_seconds()
    return f"{max(int(seconds), 1)}s"


SELECTOR = 'namespace="{{namespace}}",deployment="{{name}}",track="{{track}}"'
WINDOW = "[{{interval}}]"


def _promql(template: str) -> str:
    return template.replace("SEL", SELECTOR).replace("[WIN]", WINDOW)


BUILTIN_QUERIES: dict[str, str] = {
    # No 5xx is 0; no request at all is no data (the division has nothing to divide).
    "error-rate": _promql(
        '(sum(rate(modeldeploy_requests_total{SEL,code=~"5.."}[WIN])) or vector(0))'
        " / sum(rate(modeldeploy_requests_total{SEL}[WIN]))"
    ),
    "latency-p99": _promql(
        "histogram_quantile(0.99,"
        " sum by (le) (rate(modeldeploy_request_duration_seconds_bucket{SEL}[WIN])))"
    ),
    "data-quality": _promql(
        "(sum(rate(modeldeploy_feature_issues_total{SEL}[WIN])) or vector(0))"
        " / sum(rate(modeldeploy_feature_values_total{SEL}[WIN]))"
    ),
}
"""Queries of the built-in metrics; prediction-drift compares two distributions instead."""

CLASS_COUNTS = _promql("sum by (class) (increase(modeldeploy_predictions_total{SEL}[WIN]))")
VALUE_BUCKETS = _promql("sum by (le) (increase(modeldeploy_prediction_value_bucket{SEL}[WIN]))")


def builtin_query(name: str) -> str | None:
    return BUILTIN_QUERIES.get(name)


def render(query: str, md: ModelDeployment, track: str = "canary") -> str:
    """Fill the placeholders {{namespace}}, {{name}}, {{track}}, {{interval}}."""
    values = {
        "namespace": md.namespace or "default",
        "name": md.name,
        "track": track,
        "interval": _window(md),
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


def jensen_shannon(p: Mapping[str, float], q: Mapping[str, float]) -> float | None:
    """Jensen-Shannon distance (base 2, 0..1) between two count distributions."""
    keys = sorted(set(p) | set(q))
    total_p, total_q = sum(p.values()), sum(q.values())
    if total_p <= 0 or total_q <= 0:
        return None
    pp = [p.get(k, 0.0) / total_p for k in keys]
    qq = [q.get(k, 0.0) / total_q for k in keys]
    mm = [(a + b) / 2 for a, b in zip(pp, qq, strict=True)]

    def kl(a: list[float], b: list[float]) -> float:
        return sum(x * math.log2(x / y) for x, y in zip(a, b, strict=True) if x > 0)

    return math.sqrt(max(0.0, (kl(pp, mm) + kl(qq, mm)) / 2))


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


def _prediction_drift(md: ModelDeployment, source: MetricsSource) -> float | None:
    for query, distribution in (
        (CLASS_COUNTS, lambda s: {lbl.get("class", ""): v for lbl, v in s}),
        (VALUE_BUCKETS, _bins),
    ):
        canary = source.query(render(query, md, "canary"))
        stable = source.query(render(query, md, "stable"))
        if canary and stable:
            return jensen_shannon(distribution(canary), distribution(stable))
    return None


def _value(metric: AnalysisMetric, md: ModelDeployment, source: MetricsSource) -> float | None:
    if metric.query is None and metric.name == "prediction-drift":
        return _prediction_drift(md, source)
    query = metric.query or builtin_query(metric.name)
    if query is None:  # the API refuses this; kept as a clear message all the same
        raise AnalysisError(f"{metric.name} is not a built-in metric and has no query")
    return _single(source.query(render(query, md)))


def measure(
    md: ModelDeployment,
    source: MetricsSource | None,
    now: datetime,
    *,
    unavailable: str | None = None,
) -> list[dict[str, Any]]:
    """One analysis run: every metric of ``md``'s analysis, as ``status.canary.analysis``."""
    analysis = md.spec.rollout.analysis
    if analysis is None:
        return []
    stamp = iso(now)
    results = []
    for metric in analysis.metrics:
        entry: dict[str, Any] = {"name": metric.name, "time": stamp}
        if metric.min is not None:
            entry["min"] = metric.min
        if metric.max is not None:
            entry["max"] = metric.max
        try:
            if source is None:
                raise AnalysisError(unavailable or "no metrics source")
            value = _value(metric, md, source)
        except AnalysisError as error:
            entry.update(result="Inconclusive", message=str(error)[:1024])
            results.append(entry)
            continue
        if value is None:
            entry.update(result="Inconclusive", message="no data for the canary in this interval")
        else:
            low = metric.min if metric.min is not None else -math.inf
            high = metric.max if metric.max is not None else math.inf
            entry.update(
                value=round(value, 6), result="Passed" if low <= value <= high else "Failed"
            )
        results.append(entry)
    return results
