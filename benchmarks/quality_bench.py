"""What model-aware monitoring costs: our server with and without a training profile.

Usage: python benchmarks/quality_bench.py [--rounds 5] [--seconds 3] [--connections 1,16]
                                          [--bodies json-b1,binary-b32] [--workers N]

Three servers run side by side on the benchmark model of ``make_model.py`` (20 float
features, 3 classes): ``baseline`` (no profile; it still counts predicted classes, as every
classifier does), ``profile-observe`` (the profile, default policy) and ``profile-reject``
(``--quality-policy reject``: every request is checked on its own). The profile is written by
``modeldeploy``'s exporter code (``modeldeploy.commands.profile``) from the 1,000 rows of
``X.npy`` and the model's own predictions; the request bodies are rows of that sample, so
nothing is refused and the full path runs. Each load (body x connections) is run against the
three servers back to back, in an order that rotates, ``--rounds`` times; figures are medians.
Before the loads, the cost of the checks alone is timed in-process (no HTTP).

Writes benchmarks/QUALITY_RESULTS.md (``--out``) and the raw figures to
benchmarks/.work/quality.json. Takes about 3 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import signal
import statistics
import sys
import time
from typing import Any

import numpy as np

BENCH_DIR = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import load, procs, report  # noqa: E402
from harness.servers import REPO, ServerSpec, Settings, our_server  # noqa: E402

KEYS = ("baseline", "profile-observe", "profile-reject")


def say(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_profile(model_dir: pathlib.Path) -> pathlib.Path:
    """The training profile of the benchmark model, as ``modeldeploy export`` writes it."""
    import onnxruntime as ort

    from modeldeploy.commands.profile import classification_profile, training_profile

    model = model_dir / "model.onnx"
    rows = np.load(model_dir / "X.npy")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    labels = session.run(["label"], {"X": rows})[0]
    doc = training_profile(
        rows,
        model_sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
        input_name="X",
        prediction=classification_profile("label", labels, classes=["0", "1", "2"]),
    )
    path = model_dir / "model.profile.json"
    path.write_text(json.dumps(doc))
    return path


def time_checks(model_dir: pathlib.Path, profile_path: pathlib.Path) -> list[dict[str, Any]]:
    """Microseconds per request of the input checks and of prediction counting, alone."""
    from modeldeploy_server.predictions import ClassCounter
    from modeldeploy_server.profile import read_profile
    from modeldeploy_server.quality import InputMonitor, QualityOptions
    from modeldeploy_server.tensors import TensorSpec

    profile = read_profile(profile_path)
    rows = np.load(model_dir / "X.npy")
    spec = TensorSpec("X", "FP32", (-1, 20))
    figures = []
    for batch in (1, 32):
        requests = [{"X": rows[i : i + batch].copy()} for i in range(0, 1000 - batch, batch)]
        labels = [np.arange(batch, dtype=np.int64) % 3 for _ in requests]
        for what in ("inputs, observe", "inputs, reject", "predicted classes"):
            best = float("inf")
            for _ in range(5):  # the fastest of five: the machine is shared
                policy = "reject" if what.endswith("reject") else "observe"
                monitor = InputMonitor(profile, spec, QualityOptions(policy))  # type: ignore[arg-type]
                counter = ClassCounter("label")
                began = time.perf_counter()
                if what == "predicted classes":
                    for predicted in labels:
                        counter.observe(predicted)
                else:
                    for inputs in requests:
                        monitor.check(inputs)
                    monitor.snapshot()  # the flush a scrape does is part of the work
                best = min(best, (time.perf_counter() - began) / len(requests))
            figures.append({"rows": batch, "what": what, "us_per_request": best * 1e6})
    return figures


def measure(spec: ServerSpec, group: procs.ProcessGroup, body: load.Body, conns: int,
            seconds: float) -> dict[str, Any]:  # fmt: skip
    before = procs.cpu_seconds(procs.process_tree(group.pid))
    figures: dict[str, Any] = dict(load.run_wrk(spec.infer_url, body, conns, seconds))
    cpu = procs.cpu_delta(before, procs.cpu_seconds(procs.process_tree(group.pid)))
    figures.update(server=spec.key, body=body.key, conns=conns,
                   cpu_us_per_req=cpu / max(int(figures["requests"]), 1) * 1e6)  # fmt: skip
    return figures


def scrape_issues(url: str) -> tuple[float, float]:
    """(values checked, issues) summed over features, from /metrics."""
    _, _, payload = load.request(url)
    values = issues = 0.0
    for line in payload.decode().splitlines():
        if line.startswith("modeldeploy_feature_values_total{"):
            values += float(line.rsplit(" ", 1)[1])
        elif line.startswith("modeldeploy_feature_issues_total{"):
            issues += float(line.rsplit(" ", 1)[1])
    return values, issues


def summary(cells: dict[tuple[str, str, int], list[dict[str, Any]]], config: dict[str, Any]
            ) -> list[str]:  # fmt: skip
    """The reading: CPU per request is the stable figure on a shared machine; req/s is not."""
    out = []
    for key, name in (("profile-observe", "observe"), ("profile-reject", "reject")):
        ratios = []
        for body in config["bodies"]:
            for conns in config["connections"]:
                mine, base = cells.get((key, body, conns)), cells.get(("baseline", body, conns))
                if mine and base:
                    cpu = statistics.median(r["cpu_us_per_req"] for r in mine)
                    ratios.append(cpu / statistics.median(r["cpu_us_per_req"] for r in base) - 1)
        if ratios:
            out.append(
                f"- **{name}**: server CPU per request {min(ratios):+.0%} to {max(ratios):+.0%} "
                "against the baseline over these loads."
            )
    return [
        "Reading: CPU time per request (utime + stime of the server's processes over the "
        "requests completed) is the cost; requests/s on a shared 2-core machine, where wrk "
        "runs on the same cores, varies more between rounds than between servers.",
        "",
        *out,
    ]


def render(raw: dict[str, Any]) -> str:
    meta, config = raw["meta"], raw["config"]
    cells: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in raw["results"]:
        cells.setdefault((r["server"], r["body"], r["conns"]), []).append(r)

    def med(key: tuple[str, str, int], field: str) -> float:
        return statistics.median(r[field] for r in cells[key])

    lines = [
        "# Model-aware monitoring: the cost of a training profile",
        "",
        "Written by `benchmarks/quality_bench.py`; reproduce with:",
        "",
        "```sh",
        meta["command"].strip(),
        "```",
        "",
        f"Run {meta['started']}, {meta['elapsed_s'] / 60:.1f} min, on {meta['nproc']} cores "
        f"({meta['cpu']}), Python {meta['python']}, onnxruntime {meta['onnxruntime']}, numpy "
        f"{meta['numpy']}; load average {meta['loadavg_before']} before, "
        f"{meta['loadavg_after']} after (the machine is shared: only ratios within this run "
        "are compared). Server: " + meta["server_source"] + ".",
        "",
        f"Model: `make_model.py`'s (StandardScaler + RandomForest, 20 float features, 3 "
        f"classes). Every server: {config['workers']} workers, max batch "
        f"{config['max_batch_size']}, max delay {config['max_batch_delay_ms']:g} ms. Load: wrk, "
        f"{config['seconds']:g} s per run, {config['rounds']} rounds in rotating order; figures "
        "are medians over rounds.",
        "",
        "| body | conns | baseline req/s | observe req/s | reject req/s | observe / baseline "
        "| reject / baseline | CPU µs/req (base, observe, reject) | p99 ms (base, observe, "
        "reject) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for body in config["bodies"]:
        for conns in config["connections"]:
            keys = [(k, body, conns) for k in KEYS]
            if not all(k in cells for k in keys):
                continue
            rps = [med(k, "rps") for k in keys]
            cpu = ", ".join(f"{med(k, 'cpu_us_per_req'):.0f}" for k in keys)
            p99 = ", ".join(f"{med(k, 'p99_ms'):.2f}" for k in keys)
            lines.append(
                f"| {body} | {conns} | {rps[0]:,.0f} | {rps[1]:,.0f} | {rps[2]:,.0f} | "
                f"{rps[1] / rps[0]:.1%} | {rps[2] / rps[0]:.1%} | {cpu} | {p99} |"
            )
    lines += ["", *summary(cells, config)]
    lines += [
        "",
        "The work alone, in-process, no HTTP (`InputMonitor.check` per request, with the "
        "flush of the staged rows a scrape does; `ClassCounter.observe` per request; the "
        "fastest of five passes over the 1,000 sample rows):",
        "",
        "| rows per request | what | µs per request | µs per row |",
        "| ---: | --- | ---: | ---: |",
    ]
    for f in raw["inprocess"]:
        lines.append(
            f"| {f['rows']} | {f['what']} | {f['us_per_request']:.2f} | "
            f"{f['us_per_request'] / f['rows']:.2f} |"
        )
    lines += ["", "After the loads (from each server's /metrics):", ""]
    for key, (values, issues) in raw["sanity"].items():
        lines.append(f"- `{key}`: {values:,.0f} feature values checked, {issues:,.0f} issues")
    lines += ["", *raw.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def render_only() -> int:
    """Rewrite QUALITY_RESULTS.md from the last run's quality.json."""
    raw = json.loads((BENCH_DIR / ".work" / "quality.json").read_text())
    (BENCH_DIR / "QUALITY_RESULTS.md").write_text(render(raw))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", default="1,16")
    parser.add_argument("--bodies", default="json-b1,binary-b32")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--port-base", type=int, default=18200)
    parser.add_argument("--out", type=pathlib.Path, default=BENCH_DIR / "QUALITY_RESULTS.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = BENCH_DIR / ".work"
    model_dir = load.benchmark_model(work, say)
    profile = write_profile(model_dir)
    bodies = load.load_bodies(model_dir)
    chosen = [b for b in args.bodies.split(",") if b]
    connections = [int(c) for c in args.connections.split(",")]
    settings = Settings(work, args.port_base, args.workers, 32, 2.0)
    specs = []
    for offset, key in enumerate(KEYS):
        spec = our_server(settings, key, key, offset * 10, args.workers, 32)
        if key != "baseline":
            spec.argv += ["--profile-uri", profile.as_uri()]
        if key == "profile-reject":
            spec.argv += ["--quality-policy", "reject"]
        specs.append(spec)
    meta = report.machine_description(work)
    meta.update(loadavg_before=procs.loadavg(), started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    meta["command"] = "python benchmarks/quality_bench.py " + " ".join(sys.argv[1:])
    say("timing the checks in-process")
    inprocess = time_checks(model_dir, profile)
    for f in inprocess:
        say(f"    {f['rows']:>2} rows, {f['what']}: {f['us_per_request']:.2f} us/request")
    began = time.monotonic()
    running: dict[str, procs.ProcessGroup] = {}
    results: list[dict[str, Any]] = []
    sanity: dict[str, tuple[float, float]] = {}
    (work / "logs").mkdir(exist_ok=True)
    try:
        for spec in specs:
            running[spec.key] = procs.ProcessGroup(spec.argv, work / "logs" / f"{spec.key}.log")
        labels = _expected(model_dir)
        for spec in specs:
            load.wait_ready(spec.ready_url, running[spec.key].alive, timeout=120)
            for key in chosen:
                problem = load.check_body(spec.infer_url, bodies[key], labels)
                if problem is not None:
                    raise RuntimeError(f"{spec.key} answers {key} wrongly: {problem}")
            load.run_wrk(spec.infer_url, bodies[chosen[0]], 16, 1.0)  # warm-up
        say("servers ready and checked")
        loads = [(b, c) for b in chosen for c in connections]
        for round_no in range(1, args.rounds + 1):
            for index, (body_key, conns) in enumerate(loads):
                shift = (index + round_no) % len(specs)
                for spec in specs[shift:] + specs[:shift]:
                    figures = measure(spec, running[spec.key], bodies[body_key], conns,
                                      args.seconds)  # fmt: skip
                    figures["round"] = round_no
                    results.append(figures)
                    say(f"round {round_no} {body_key} c={conns} {spec.key}: "
                        f"{figures['rps']:,.0f} req/s, p99 {figures['p99_ms']:.2f} ms, "
                        f"{figures['cpu_us_per_req']:.0f} us CPU/req, "
                        f"non-2xx {figures['non2xx']}")  # fmt: skip
        for spec in specs:
            assert spec.metrics_url is not None
            sanity[spec.key] = scrape_issues(spec.metrics_url)
    finally:
        for group in running.values():
            group.stop()
    meta.update(loadavg_after=procs.loadavg(), elapsed_s=time.monotonic() - began)
    raw = {
        "meta": meta,
        "config": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "connections": connections,
            "bodies": chosen,
            "workers": args.workers,
            "max_batch_size": 32,
            "max_batch_delay_ms": 2.0,
        },
        "results": results,
        "inprocess": inprocess,
        "sanity": sanity,
    }
    (work / "quality.json").write_text(json.dumps(raw, indent=1, default=str))
    args.out.write_text(render(raw))
    say(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


def _expected(model_dir: pathlib.Path) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    rows = np.load(model_dir / "X.npy")[:64]
    return np.asarray(session.run(["label"], {"X": rows})[0], dtype=np.int64)


if __name__ == "__main__":
    sys.exit(render_only() if sys.argv[1:] == ["--render-only"] else main())
