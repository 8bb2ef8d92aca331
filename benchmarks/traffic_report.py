"""Render the traffic tests' records (``MODELDEPLOY_TRAFFIC_RECORD``, JSON lines) as the
tables of ``benchmarks/TRAFFIC_RESULTS.md``: the canary's measured share at each weight, through
the gateway and through the Service, and the client requests answered and failed during each
rollout. ``make bench-traffic`` runs the tests and this script.

    python benchmarks/traffic_report.py RECORDS.jsonl > benchmarks/TRAFFIC_RESULTS.md
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

COMMAND = "make bench-traffic"


def split_table(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| routing | weight | requests | canary answered | canary share | error (points) "
        "| pods (stable/canary) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in records:
        pods = r.get("pods") or {}
        pod_cell = f"{pods.get('stable', 0)}/{pods.get('canary', 0)}" if pods else ""
        lines.append(
            f"| {r['routing']} | {r['weight']} % | {r['sent']} "
            f"| {r['by_track'].get('canary', 0):.0f} | {r['canary_percent']:.1f} % "
            f"| {r['canary_percent'] - r['weight']:+.1f} "
            f"| {pod_cell} |"
        )
    return lines


def rollout_table(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| phase | clients | requests | failed | outcomes |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for r in records:
        for clients, summary in r["clients"].items():
            outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(summary["outcomes"].items()))
            lines.append(
                f"| {r['phase']} | {clients} | {summary['sent']} | {summary['failed']} "
                f"| {outcomes} |"
            )
    return lines


def autoscaling_table(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| phase | requests | failed | stable pods at the peak | load → scaled up | "
        "load stopped → back to one pod |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        lines.append(
            f"| {r['phase']} | {r['requests']} | {r['failed']} | {r['peak']} "
            f"| {r['scale_up_seconds']} s | {r['scale_down_seconds']} s |"
        )
    return lines


def main(path: str) -> int:
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    splits = [r for r in records if r["kind"] == "split"]
    rollouts = [r for r in records if r["kind"] == "rollout"]
    scaling = [r for r in records if r["kind"] == "autoscaling"]
    out = [
        "# Real traffic through the gateway and the Service: split and zero-loss rollouts",
        "",
        f"Recorded {time.strftime('%Y-%m-%d')} by `{COMMAND}` (the tests of "
        "`tests/integration/node/test_traffic.py` and `test_autoscaling.py`, run on a running "
        "`make cluster`), on "
        f"{platform.machine()} with {len(os.sched_getaffinity(0))} cores. "
        "Pods on the local cluster's real node; the gateway is Traefik (Gateway API, "
        "`kubernetesGateway` provider); counts are the servers' own "
        "`modeldeploy_requests_total`, read from each pod before and after.",
        "",
        "## The canary's share at each weight",
        "",
        "`gatewayAPI`: a canary with `trafficRouting.gatewayAPI`, 2,000 requests through the "
        "gateway on pooled connections. `replicas`: no traffic routing, 4 replicas, 2,000 "
        "requests through the Service, one connection per request (kube-proxy chooses a pod "
        "per connection): the share follows the pods, the weight rounded to whole pods with at "
        "least one pod per track, so its error is the rounding, up to half a pod's share.",
        "",
        *split_table(splits),
        "",
        "## Client requests during rollouts (none may fail)",
        "",
        "Closed-loop clients (each sends the next request when the last is answered) through the "
        "gateway on pooled connections, through the Service on pooled connections, and through "
        "the Service with a connection per request, during each phase from the change to the "
        "last old pod gone. The pods drain 5 s (`spec.runtime.shutdown.drainSeconds`), answer "
        "`Connection: close` while draining, then get 20 s for requests in flight; the grace "
        "period is 30 s.",
        "",
        *rollout_table(rollouts),
        "",
        "## The HorizontalPodAutoscaler on real CPU",
        "",
        "`tests/integration/node/test_autoscaling.py`: one pod (100m CPU requested), target 50 % "
        "CPU, at most 3 pods; four closed-loop clients with a connection per request, through "
        "the Service, then through the gateway with a canary paused at 50 %. metrics-server "
        "reads the kubelet every 10 s; the local controller-manager syncs HPAs every 2 s with a "
        "10 s scale-down stabilization (a cluster's defaults are 15 s and 5 min).",
        "",
        *autoscaling_table(scaling),
        "",
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
