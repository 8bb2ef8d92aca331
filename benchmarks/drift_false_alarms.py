"""How often the prediction-drift gate fails a canary that serves the very model stable does.

Usage: PYTHONPATH=. python benchmarks/drift_false_alarms.py [--seconds 480] [--windows 4,10,30]
                                                            [--simulate-only]

Two parts, written to benchmarks/DRIFT_RESULTS.md (``--out``):

1. **Simulation** (seconds): pairs of tracks drawing predictions from one class distribution
   (multinomial), at several sample sizes; the share of pairs that the gate fails, beside the
   share an absolute bound alone (``max`` on the Jensen-Shannon distance, what the gate was
   before) would have failed. This is the statistic's own false-alarm rate.
2. **Real pipeline** (``--seconds`` of traffic): two ``modeldeploy-server`` processes serving
   one classifier as the stable and the canary track, each sent its own random rows of the
   same data (as two sets of pods behind one Service are), scraped every second by a real
   Prometheus; the operator's own analysis code (``modeldeploy.rollout.analysis.measure``)
   then judges prediction-drift over windows ending every 2 s of the recorded traffic. This
   includes everything between the model and the verdict: the server's counters, scrapes,
   the count queries.

Everything runs on loopback; the traffic is bounded by ``--seconds`` and a request rate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeldeploy.api import ModelDeployment  # noqa: E402
from modeldeploy.rollout.analysis import Sample, measure  # noqa: E402
from modeldeploy.rollout.statistics import homogeneity, jensen_shannon  # noqa: E402
from modeldeploy.rollout.verdicts import SIGNIFICANCE  # noqa: E402
from tests.support.onnx_models import classifier_data, make_classifier  # noqa: E402
from tests.support.prometheus import Prometheus  # noqa: E402
from tests.support.servers import ServerProcess  # noqa: E402

MAX = 0.1
"""The drift bound of docs/canary.md's example (Jensen-Shannon distance)."""
NAMESPACE, NAME = "bench", "iris"


def say(message: str) -> None:
    print(f"[drift {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- 1. simulation ------------------------------------------------------------------------


def simulate(sizes: list[int], shares: list[float], trials: int, seed: int) -> list[dict[str, Any]]:
    """Per sample size: the share of identical-model pairs failed by the gate, by the test
    alone and by the absolute bound alone (canary n, stable 3n: a 25% canary)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        gate = test = bound = 0
        for _ in range(trials):
            canary = rng.multinomial(n, shares)
            stable = rng.multinomial(3 * n, shares)
            c = {str(i): float(v) for i, v in enumerate(canary)}
            s = {str(i): float(v) for i, v in enumerate(stable)}
            distance = jensen_shannon(c, s) or 0.0
            result = homogeneity(c, s)
            significant = result is not None and result.p_value < SIGNIFICANCE
            bound += distance > MAX
            test += significant
            gate += distance > MAX and significant
        rows.append({"n": n, "trials": trials, "gate": gate, "test": test, "bound": bound})
    return rows


# --- 2. the real pipeline -------------------------------------------------------------------


@dataclass
class At:
    """Prometheus's instant query at a past moment (a MetricsSource)."""

    url: str
    time: float

    def query(self, promql: str) -> list[Sample]:
        data = urllib.parse.urlencode({"query": promql, "time": f"{self.time:.3f}"}).encode()
        request = urllib.request.Request(self.url + "/api/v1/query", data=data, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
        return [(dict(r["metric"]), float(r["value"][1])) for r in body["data"]["result"]]


class Traffic(threading.Thread):
    """Requests of 4 random rows to one server, ``per_second`` a second, until stopped."""

    def __init__(self, server: ServerProcess, seed: int, per_second: float) -> None:
        super().__init__(daemon=True)
        self.server, self.pause = server, 1.0 / per_second
        self.rows, _ = classifier_data()
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.sent = self.failed = 0

    def run(self) -> None:
        url = f"{self.server.url}/v2/models/{NAME}/infer"
        while not self.stop.wait(self.pause):
            batch = self.rows[self.rng.integers(0, len(self.rows), size=4)]
            body = {"inputs": [{"name": "X", "shape": [4, 4], "datatype": "FP32",
                                "data": batch.ravel().tolist()}]}  # fmt: skip
            request = urllib.request.Request(
                url, json.dumps(body).encode(), {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5):
                    self.sent += 1
            except OSError:
                self.failed += 1


def gated(window: int) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "model": {"uri": "https://example.com/m.onnx"},
                "rollout": {
                    "strategy": "Canary",
                    "steps": [{"setWeight": 50}],
                    "analysis": {
                        "interval": f"{window}s",
                        "metrics": [{"name": "prediction-drift", "max": MAX, "minSamples": 30}],
                    },
                },
            },
        }
    )


def pipeline(seconds: int, windows: list[int], work: Path) -> dict[str, Any]:
    model = make_classifier(work / "model.onnx")
    servers = {}
    for track in ("stable", "canary"):
        env = {"MODELDEPLOY_DEPLOYMENT_NAME": NAME, "MODELDEPLOY_TRACK": track}
        servers[track] = ServerProcess(model, work / f"{track}.log", name=NAME, env=env)
    try:
        for server in servers.values():
            server.wait_ready()
        with Prometheus(work / "prometheus") as prometheus:
            targets = [
                (f"127.0.0.1:{server.metrics_port}", {"namespace": NAMESPACE, "job": track})
                for track, server in servers.items()
            ]
            prometheus.set_targets(targets)
            prometheus.wait_for_targets()
            # A 25% canary: a third of stable's traffic, 4 rows a request.
            load = [Traffic(servers["stable"], 1, 6.0), Traffic(servers["canary"], 2, 2.0)]
            start = time.time()
            for thread in load:
                thread.start()
            say(f"traffic for {seconds} s")
            time.sleep(seconds)
            for thread in load:
                thread.stop.set()
                thread.join(10)
            end = time.time()
            time.sleep(3)  # the last scrape
            results = {}
            for window in windows:
                md = gated(window)
                counts = {"Passed": 0, "Failed": 0, "Inconclusive": 0}
                bound = evaluated = 0
                samples: list[int] = []
                moment = start + window + 2
                while moment <= end:
                    [entry] = measure(
                        md,
                        At(prometheus.url, moment),
                        datetime.fromtimestamp(moment, UTC),
                        window=timedelta(seconds=window),
                    )
                    counts[entry["result"]] += 1
                    evaluated += 1
                    bound += (entry.get("value") or 0.0) > MAX
                    samples.append(int(entry.get("samples") or 0))
                    moment += 2
                results[str(window)] = {
                    "evaluated": evaluated,
                    "independent": int((end - start) // window),
                    "results": counts,
                    "bound_alone": bound,
                    "median_canary_samples": int(np.median(samples)) if samples else 0,
                }
                say(f"window {window} s: {counts}, the bound alone fails {bound}")
            return {
                "seconds": round(end - start),
                "sent": {"stable": load[0].sent, "canary": load[1].sent},
                "failed_requests": load[0].failed + load[1].failed,
                "windows": results,
            }
    finally:
        for server in servers.values():
            server.stop()


# --- the report -----------------------------------------------------------------------------


def percent(count: int, total: int) -> str:
    return f"{100 * count / total:.2f}%" if total else "-"


def interval(count: int, total: int) -> str:
    """The 95% Wilson interval of a proportion, in percent."""
    if not total:
        return "-"
    z, p = 1.96, count / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return f"{100 * max(0.0, centre - half):.2f} to {100 * (centre + half):.2f}%"


def report(simulated: list[dict[str, Any]], real: dict[str, Any] | None, args: Any) -> str:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# prediction-drift: false alarms on two identical models",
        "",
        "Written by `benchmarks/drift_false_alarms.py`; reproduce with:",
        "",
        "```sh",
        "PYTHONPATH=. .venv/bin/python benchmarks/drift_false_alarms.py"
        + ("" if args.simulate_only else f" --seconds {args.seconds}"),
        "```",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, git {head}; load average {load} at the end.",
        "",
        f"The gate fails a run when the Jensen-Shannon distance exceeds `max` ({MAX}) **and** a "
        f"chi-squared test of homogeneity gives p < {SIGNIFICANCE} (rare classes pooled until "
        "each cell expects 5). A false alarm is a failed run between two tracks that serve the "
        "same model. `bound alone` is what `max` by itself (the gate before) would have failed.",
        "",
        f"## 1. The statistic (simulation, {simulated[0]['trials']} pairs per row)",
        "",
        f"Predictions drawn from one distribution over {len(args.shares)} classes "
        f"({', '.join(f'{s:g}' for s in args.shares)}); the canary gets n, stable 3n.",
        "",
        "| canary predictions n | gate fails | 95% interval | test alone (p < 0.01) "
        "| bound alone |",
        "| ---: | ---: | --- | ---: | ---: |",
    ]
    for row in simulated:
        t = row["trials"]
        lines.append(
            f"| {row['n']} | {percent(row['gate'], t)} | {interval(row['gate'], t)} | "
            f"{percent(row['test'], t)} | {percent(row['bound'], t)} |"
        )
    if real is not None:
        lines += [
            "",
            f"## 2. The real pipeline ({real['seconds']} s of traffic)",
            "",
            "Two `modeldeploy-server` processes serving one 3-class classifier (the tests' "
            "RandomForest) as stable and canary; stable gets 6 requests/s, the canary 2 (4 "
            f"random rows each: {real['sent']['stable']} and {real['sent']['canary']} requests, "
            f"{real['failed_requests']} failed); Prometheus scrapes both every second; "
            "`measure()` judges windows ending every 2 s (overlapping windows: the "
            "independent ones are the duration over the window).",
            "",
            "| window | runs judged | independent windows | median canary predictions | "
            "failed (false alarms) | inconclusive | passed | bound alone |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for window, found in real["windows"].items():
            n, counts = found["evaluated"], found["results"]
            bound = found["bound_alone"]
            lines.append(
                f"| {window} s | {n} | {found['independent']} | "
                f"{found['median_canary_samples']} | {counts['Failed']} "
                f"({percent(counts['Failed'], n)}) | {counts['Inconclusive']} | "
                f"{counts['Passed']} | {bound} ({percent(bound, n)}) |"
            )
    lines += [
        "",
        "Reading: a distance is noisy at small n (two tracks of one model differ by about "
        "`sqrt((k-1)/(4 n ln 2))`), so the bound alone fails identical models often when "
        "predictions are few; the test's p-value accounts for n, so the gate's false alarms "
        f"stay near or below {SIGNIFICANCE:.0%} of runs whatever n is, and a rollback needs "
        "`failureLimit` (2) of them.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=480)
    parser.add_argument("--windows", default="4,10,30")
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--sizes", default="10,30,100,300,1000,10000")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.7, 0.2, 0.08, 0.02])
    parser.add_argument("--simulate-only", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "DRIFT_RESULTS.md")
    args = parser.parse_args()
    say("simulating")
    simulated = simulate([int(n) for n in args.sizes.split(",")], args.shares, args.trials, seed=11)
    real = None
    if not args.simulate_only:
        with tempfile.TemporaryDirectory(prefix="drift-") as work:
            real = pipeline(args.seconds, [int(w) for w in args.windows.split(",")], Path(work))
    args.out.write_text(report(simulated, real, args))
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
