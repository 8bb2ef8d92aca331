"""``modeldeploy status NAME``: a ModelDeployment's state as a person reads it.

The status is rendered from the stored dict, not through the API models, so fields added by a
newer operator (or missing from an older one) never break the command: known fields get their
place in the layout, unknown scalar fields of the canary are listed after them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml

from modeldeploy.commands import cluster
from modeldeploy.rollout.plan import parse_time

__all__ = ["add_arguments", "machine_view", "render", "run"]

_ANALYSIS_COLUMNS = (
    "METRIC", "VALUE", "STABLE", "MIN", "MAX", "MAX INCREASE", "SAMPLES", "RESULT", "MEASURED",
    "MESSAGE",
)  # fmt: skip
"""VALUE is the canary's, STABLE the stable track's (metrics with maxIncrease); SAMPLES is
the canary's, then the stable track's when it was measured."""

# Canary fields with a place in the layout; any other scalar field is listed after them.
_CANARY_LAYOUT = (
    "uri", "sha256", "version", "templateHash", "weight", "stepIndex", "state", "shadowPercent",
    "failedChecks", "passedChecks", "startedAt", "stepStartedAt", "analysis", "contract",
    "windowStart",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="name of the ModelDeployment")
    cluster.add_cluster_arguments(parser)
    parser.add_argument(
        "--output",
        "-o",
        choices=("table", "json", "yaml"),
        default="table",
        help="table (default) for people; json or yaml for programs",
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    kube, namespace = cluster.target(args)
    obj = cluster.get_deployment(kube, namespace, args.name)
    if args.output == "json":
        print(json.dumps(machine_view(obj), indent=2), file=out)
    elif args.output == "yaml":
        print(yaml.safe_dump(machine_view(obj), sort_keys=False), end="", file=out)
    else:
        print(render(obj), end="", file=out)
    return 0


def machine_view(obj: dict[str, Any]) -> dict[str, Any]:
    """What ``-o json|yaml`` prints: the identity, the desired model and the whole status."""
    meta = obj.get("metadata", {})
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "generation": meta.get("generation"),
        "model": obj.get("spec", {}).get("model", {}),
        "status": obj.get("status") or {},
    }


def render(obj: dict[str, Any], now: datetime | None = None) -> str:
    """The readable table of one ModelDeployment (``now`` fixes the ages, for tests)."""
    now = now or datetime.now(UTC)
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {})
    status = obj.get("status") or {}
    lines: list[str] = []
    fields: list[tuple[str, str]] = [
        ("Name", str(meta.get("name", ""))),
        ("Namespace", str(meta.get("namespace", ""))),
        ("Phase", str(status.get("phase") or "(no status yet: is the operator running?)")),
    ]
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        fields.append(("Observed", f"generation {observed} of {generation} (operator catching up)"))
    if "replicas" in status or "readyReplicas" in status:
        fields.append(
            ("Replicas", f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)} ready")
        )
    if status.get("url"):
        fields.append(("URL", str(status["url"])))
    fields.append(("Desired model", _model(spec.get("model", {}))))
    if status.get("stable"):
        fields.append(("Stable model", _model(status["stable"])))
    lines += _fields(fields)

    canary = status.get("canary")
    if canary:
        lines += ["", "Canary:"]
        lines += _fields(_canary_fields(canary, spec, now), indent="  ")
        analysis = canary.get("analysis") or []
        if analysis:
            lines += ["", "Last analysis:"]
            lines += _table(
                _ANALYSIS_COLUMNS,
                [
                    (
                        str(entry.get("name", "")),
                        _number(entry.get("value")),
                        _number(entry.get("stableValue")),
                        _number(entry.get("min")),
                        _number(entry.get("max")),
                        _number(entry.get("maxIncrease")),
                        _samples(entry),
                        str(entry.get("result", "")),
                        _ago(entry.get("time"), now),
                        str(entry.get("message") or ""),
                    )
                    for entry in analysis
                ],
            )
    else:
        lines += ["", "Canary: none under way"]

    conditions = status.get("conditions") or []
    if conditions:
        lines += ["", "Conditions:"]
        lines += _table(
            ("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"),
            [
                (
                    str(c.get("type", "")),
                    str(c.get("status", "")),
                    str(c.get("reason", "")),
                    _ago(c.get("lastTransitionTime"), now),
                    str(c.get("message", "")),
                )
                for c in conditions
            ],
        )
    history = status.get("history") or []
    if history:
        lines += ["", "History (newest first):"]
        lines += _table(
            ("RESULT", "REASON", "MODEL", "FINISHED", "MESSAGE"),
            [
                (
                    str(h.get("result", "")),
                    str(h.get("reason", "")),
                    _model(h.get("model") or {}, sha=False),
                    _ago(h.get("time"), now),
                    str(h.get("message") or ""),
                )
                for h in history
            ],
        )
    return "\n".join(lines) + "\n"


def _canary_fields(
    canary: dict[str, Any], spec: dict[str, Any], now: datetime
) -> list[tuple[str, str]]:
    fields = [("Model", _model(canary))]
    if "weight" in canary:
        fields.append(("Weight", f"{canary['weight']}%"))
    if "stepIndex" in canary:
        steps = (spec.get("rollout") or {}).get("steps") or []
        index = int(canary["stepIndex"])
        step = f"{index + 1} of {len(steps)}" if steps else str(index + 1)
        if 0 <= index < len(steps):
            step += f" ({_step(steps[index])})"
        fields.append(("Step", step))
    if canary.get("state"):
        state = str(canary["state"])
        if state == "Shadowing" and canary.get("shadowPercent"):
            state += (
                f" (the stable pods mirror {canary['shadowPercent']}% of their requests to "
                "it; no client sees its answers)"
            )
        fields.append(("State", state))
    if "failedChecks" in canary:
        limit = ((spec.get("rollout") or {}).get("analysis") or {}).get("failureLimit")
        checks = str(canary["failedChecks"])
        fields.append(("Failed checks", f"{checks} of {limit} allowed" if limit else checks))
    if "passedChecks" in canary:
        fields.append(("Passed checks", str(canary["passedChecks"])))
    contract = canary.get("contract")
    if isinstance(contract, dict):
        detail = "; ".join(contract.get("differences") or ()) or contract.get("message") or ""
        result = str(contract.get("result", "?"))
        fields.append(("Contract", f"{result}: {detail}" if detail else result))
    if canary.get("startedAt"):
        fields.append(("Started", _time(canary["startedAt"], now)))
    if canary.get("stepStartedAt"):
        fields.append(("Step started", _time(canary["stepStartedAt"], now)))
    if canary.get("windowStart"):
        fields.append(("Window since", _time(canary["windowStart"], now)))
    for key, value in canary.items():
        if key not in _CANARY_LAYOUT and not isinstance(value, dict | list):
            fields.append((_title(key), str(value)))
    return fields


def _step(step: dict[str, Any]) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return f"pause {duration}" if duration else "pause until promoted"
    if "shadow" in step:
        shadow = step.get("shadow") or {}
        return f"shadow {shadow.get('percent', 100)}% for {shadow.get('duration', '?')}"
    return ", ".join(f"{k} {v}" for k, v in step.items())


def _title(key: str) -> str:
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in key).strip()
    return words[:1].upper() + words[1:]


def _model(model: dict[str, Any], sha: bool = True) -> str:
    text = str(model.get("uri", "?"))
    if model.get("version"):
        text += f" (version {model['version']})"
    if sha and model.get("sha256"):
        text += f" sha256 {str(model['sha256'])[:12]}"
    return text


def _samples(entry: dict[str, Any]) -> str:
    """'250' (the canary's), or '250/740' when the stable track was measured too."""
    canary, stable = entry.get("samples"), entry.get("stableSamples")
    if canary is None:
        return "-"
    return f"{canary}/{stable}" if stable is not None else str(canary)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _seconds_since(value: Any, now: datetime) -> int | None:
    try:
        moment = parse_time(value)
    except ValueError:
        return None
    seconds = int((now - moment).total_seconds())
    return seconds if seconds >= 0 else None


def _time(value: Any, now: datetime) -> str:
    """The timestamp and how long ago it was."""
    if not value:
        return "-"
    seconds = _seconds_since(value, now)
    return f"{value} ({_age(seconds)} ago)" if seconds is not None else str(value)


def _ago(value: Any, now: datetime) -> str:
    """How long ago, for table cells (the timestamp itself is in -o json)."""
    if not value:
        return "-"
    seconds = _seconds_since(value, now)
    return f"{_age(seconds)} ago" if seconds is not None else str(value)


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _fields(fields: Sequence[tuple[str, str]], indent: str = "") -> list[str]:
    width = max((len(label) for label, _ in fields), default=0) + 1
    return [f"{indent}{label + ':':<{width}} {value}" for label, value in fields]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns as wide as their longest cell; the last column runs free."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append(("  " + "  ".join([*cells, row[-1]])).rstrip())
    return lines
