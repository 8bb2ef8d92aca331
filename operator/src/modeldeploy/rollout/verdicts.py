"""Judging one analysis measurement against its metric's bounds, and saying what was measured.

Pure: a measurement is a ``status.canary.analysis`` entry (``value``, ``samples`` and, for a
comparison with the stable track, ``stableValue``, ``stableSamples``, ``pValue``); ``judge``
fills in ``result`` and ``message`` of the entry under construction (``describe`` and
``summary`` say what a finished ``AnalysisResult`` measured). The order of the questions is
the point: no data, then too few samples (Inconclusive, never a pass or a failure), then the
bounds.
"""

from __future__ import annotations

import math
from typing import Any

from modeldeploy.api.rollout import AnalysisMetric, parse_increase
from modeldeploy.api.status import AnalysisResult

__all__ = [
    "SIGNIFICANCE",
    "describe",
    "increase_limit",
    "judge",
    "summary",
]

SIGNIFICANCE = 0.01
"""prediction-drift fails only when two tracks serving one model would differ this much with
probability below this (1 %); a larger distance that chance explains is Inconclusive."""


def increase_limit(stable: float, max_increase: int | str) -> float:
    """The highest passing canary value given the stable track's: ``stable + amount``, or
    ``stable + |stable| x percentage`` for a relative bound."""
    amount, relative = parse_increase(max_increase)
    return stable + (abs(stable) * amount if relative else amount)


def _inconclusive(entry: dict[str, Any], message: str) -> None:
    entry["result"] = "Inconclusive"
    entry["message"] = message[:1024]


def judge(metric: AnalysisMetric, entry: dict[str, Any]) -> None:
    """Set ``entry``'s result (and, when Inconclusive, its message) from what it measured."""
    need = metric.effective_min_samples()
    value, samples = entry.get("value"), entry.get("samples")
    compared = metric.max_increase is not None or "stableSamples" in entry
    if value is None:
        default = "no sample from the canary" if samples == 0 else "no data for the canary"
        return _inconclusive(entry, entry.get("message") or f"{default} in this window")
    if samples is not None and samples < need:
        return _inconclusive(
            entry, f"too few samples from the canary: {samples} of the {need} (minSamples)"
        )
    stable_samples = entry.get("stableSamples")
    if compared:
        if metric.max_increase is not None and entry.get("stableValue") is None:
            return _inconclusive(entry, "no data for the stable track in this window")
        if stable_samples is not None and stable_samples < need:
            return _inconclusive(
                entry,
                f"too few samples from the stable track: {stable_samples} of the {need} "
                "(minSamples)",
            )
    low = metric.min if metric.min is not None else -math.inf
    high = metric.max if metric.max is not None else math.inf
    within = low <= value <= high
    if metric.max_increase is not None:
        within = within and value <= increase_limit(entry["stableValue"], metric.max_increase)
    if within:
        entry["result"] = "Passed"
        return None
    p_value = entry.get("pValue")
    if p_value is not None and p_value >= SIGNIFICANCE:
        return _inconclusive(
            entry,
            f"{value:.3g} is above max but within chance for {samples} and {stable_samples} "
            f"predictions (p = {p_value:.2g}, failing needs p < {SIGNIFICANCE:g})",
        )
    entry["result"] = "Failed"
    return None


def _bounds(result: AnalysisResult) -> str:
    parts = [f"{k} {v:g}" for k, v in (("min", result.min), ("max", result.max)) if v is not None]
    if result.max_increase is not None and result.stable_value is not None:
        parts.append(f"stable {result.stable_value:.4g} + at most {result.max_increase}")
    return ", ".join(parts)


def describe(result: AnalysisResult) -> str:
    """'latency-p99 = 0.049 (max 1, stable 0.024 + at most 20%)', with what the value rests
    on (or why there is none) after a colon."""
    if result.value is None:
        return f"{result.name}: no data ({result.message or 'no samples'})"
    text = f"{result.name} = {result.value:.4g}"
    bounds = _bounds(result)
    text += f" ({bounds})" if bounds else ""
    return text + (f": {result.message}" if result.message else "")


def summary(results: list[AnalysisResult]) -> str:
    """'latency-p99 = 0.31 (max 0.05); passing: error-rate = 0 (max 0.01)': what failed (or
    was inconclusive) first, then what passed, so a rollback says what was measured."""
    failed = [describe(r) for r in results if r.result != "Passed"]
    passed = [describe(r) for r in results if r.result == "Passed"]
    return "; ".join(failed) + (f"; passing: {', '.join(passed)}" if passed else "")
