"""What shadow mirroring costs the stable server's clients: latency with mirroring off and on.

Usage: python benchmarks/shadow_bench.py [--rounds 4] [--seconds 5] [--connections 8]
                                         [--pace-ms 8] [--workers 1] [--quiet-cores 0.4]
                                         [--retries 2] [--patience 90] [--out FILE]

One stable server (``make_model.py``'s classifier, started with ``--shadow-config``) is
driven by wrk (``--connections`` closed-loop keep-alive clients, one-row JSON bodies) at two
loads, ``paced`` (each connection pauses ``--pace-ms`` after every answer: far below
capacity, the latency to read) and ``full`` (no pause: capacity), while its shadow
configuration file names, in turn:

- ``off``: what the operator writes outside a shadow step (empty target, percent 0);
- ``healthy``: a second server on 127.0.0.1 serving the same model (it shares the cores);
- ``slow``: a listener on 127.0.0.1 that accepts and never answers, so every copy the
  stable sends waits out ``--shadow-timeout`` (1 s), the slowest a canary can be;
- ``dead``: a closed port on 127.0.0.1 (connection refused).

A second stable server without ``--shadow-config`` (``no-flag``) is measured alongside; its
difference from ``off`` shows how far two configurations that should not differ do in this
run. After each switch, short loads run until the stable's shadow counters move as the new
target says they should (the file is re-read about every second). Each configuration is
measured ``--rounds`` times in an order that rotates; figures are medians over rounds. CPU is
utime + stime of each server's process tree from /proc. The machine is shared: each run
waits until other processes take at most ``--quiet-cores``, and is measured again if they
took more meanwhile (``--retries``), within ``--patience`` seconds in all; runs still
disturbed are marked in the results.
Before the loads, the mirror's own steps for one copy are timed in-process.

The servers run ``python -m modeldeploy_server`` with this checkout's ``serving_image/src``
first on PYTHONPATH, so the code measured is the code beside this file. Writes
benchmarks/SHADOW_RESULTS.md (``--out``) and the raw figures to benchmarks/.work/shadow.json;
``--render-only`` rewrites the Markdown from them. About 5 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import signal
import sys
import time
from typing import Any

BENCH_DIR = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import load, procs, report  # noqa: E402
from harness.loopback import BlackHole, closed_port  # noqa: E402
from harness.servers import REPO, ServerSpec, Settings, our_server  # noqa: E402
from shadow_results import CONFIGS, REASONS, render  # noqa: E402

BODY = "json-b1"


def say(message: str) -> None:
    print(f"[shadow {time.strftime('%H:%M:%S')}] {message}", flush=True)


def write_config(path: pathlib.Path, target: str | None) -> None:
    """Replace the file as the kubelet does (a new inode), in the operator's own format."""
    from modeldeploy.builders.shadow import shadow_config

    scratch = path.with_suffix(".tmp")
    scratch.write_text(shadow_config(target, 100 if target else 0))
    os.replace(scratch, path)


def scrape_shadow(url: str | None) -> dict[str, float]:
    """The shadow counters of a server: rows compared, copies dropped by reason, and (as a
    canary) copies answered."""
    from prometheus_client.parser import text_string_to_metric_families

    assert url is not None
    _, _, payload = load.request(url)
    out = {"rows": 0.0, "answered": 0.0, **{f"dropped:{r}": 0.0 for r in REASONS}}
    for family in text_string_to_metric_families(payload.decode()):
        for sample in family.samples:
            if sample.name == "modeldeploy_shadow_rows_total":
                out["rows"] += sample.value
            elif sample.name == "modeldeploy_shadow_dropped_total":
                out[f"dropped:{sample.labels['reason']}"] += sample.value
            elif sample.name == "modeldeploy_shadow_requests_total":
                out["answered"] += sample.value
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


def moved_as_expected(config: str, moved: dict[str, float]) -> bool:
    """Whether a short load's counter changes say the stable now mirrors as ``config`` says."""
    rows, dropped = moved["rows"], {r: moved[f"dropped:{r}"] for r in REASONS}
    if config in ("no-flag", "off"):
        return rows == 0 and not any(dropped.values())
    if config == "healthy":
        return rows > 0 and dropped["timeout"] == 0 and dropped["canary_error"] == 0
    if config == "slow":
        return rows == 0 and dropped["timeout"] > 0
    return rows == 0 and dropped["canary_error"] > 0  # dead


def settle(config: str, spec: ServerSpec, body: load.Body, conns: int) -> float:
    """Run 1-second loads until the stable's counters move as ``config`` expects; seconds."""
    began = time.monotonic()
    while time.monotonic() - began < 20:
        before = scrape_shadow(spec.metrics_url)
        load.run_wrk(spec.infer_url, body, conns, 1.0)
        if moved_as_expected(config, delta(before, scrape_shadow(spec.metrics_url))):
            return time.monotonic() - began
    raise RuntimeError(f"the stable server did not start mirroring as {config!r} says in 20 s")


def measure(
    spec: ServerSpec,
    stable: procs.ProcessGroup,
    canary: procs.ProcessGroup,
    body: load.Body,
    conns: int,
    seconds: float,
    pause_ms: int,
) -> dict[str, Any]:
    """One wrk run against ``spec``, with the CPU each party spent and the counters' moves."""
    counters = scrape_shadow(spec.metrics_url)
    trees = {"stable": stable.pid, "canary": canary.pid}
    cpu = {name: procs.cpu_seconds(procs.process_tree(pid)) for name, pid in trees.items()}
    busy, wrk_cpu, wall = procs.machine_busy_seconds(), procs.children_cpu_seconds(), time.time()
    own = time.process_time()
    figures: dict[str, Any] = dict(load.run_wrk(spec.infer_url, body, conns, seconds, pause_ms))
    wall = time.time() - wall
    requests = max(int(figures["requests"]), 1)
    for name, pid in trees.items():
        spent = procs.cpu_delta(cpu[name], procs.cpu_seconds(procs.process_tree(pid)))
        figures[f"{name}_cpu_us_per_req"] = spent / requests * 1e6
        figures[f"{name}_cores"] = spent / wall
    figures["wrk_cores"] = (procs.children_cpu_seconds() - wrk_cpu) / wall
    figures["machine_cores"] = (procs.machine_busy_seconds() - busy) / wall
    figures["bench_cores"] = (time.process_time() - own) / wall  # scrapes, the black hole
    figures["counters"] = delta(counters, scrape_shadow(spec.metrics_url))
    return figures


def time_copy_work(model_dir: pathlib.Path, canary: ServerSpec) -> list[dict[str, Any]]:
    """Microseconds of the mirror's own steps for one one-row copy, in-process: encoding it,
    decoding the canary's answer (real bytes from the running canary), pairing, counting."""
    import numpy as np
    import onnxruntime as ort

    from modeldeploy_server.shadow import compare, decode_mirror_response, encode_mirror_request
    from modeldeploy_server.shadow_metrics import ShadowTally
    from modeldeploy_server.shadow_pairing import pairing_spec
    from modeldeploy_server.tensors import Tensor, TensorSpec

    outputs = [TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 3))]
    spec = pairing_spec(outputs, None)
    assert spec is not None
    row = np.load(model_dir / "X.npy")[:1]
    session = ort.InferenceSession(str(model_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    label, probabilities = session.run(["label", "probabilities"], {"X": row})
    stable = {"label": label, "probabilities": probabilities}
    inputs = [Tensor("X", "FP32", row)]
    body, header_length = encode_mirror_request(inputs, spec.outputs)
    status, headers, answer = load.request(
        canary.infer_url, "POST", body,
        {"Content-Type": "application/octet-stream",
         "Inference-Header-Content-Length": str(header_length), "Modeldeploy-Shadow": "1"},
    )  # fmt: skip
    assert status == 200, answer[:200]
    length = int(headers["inference-header-content-length"])
    canary_outputs = decode_mirror_response(answer, length)
    paired = compare(spec, stable, canary_outputs, 0.01)
    tally = ShadowTally("rf")
    steps = {
        "encode the copy": lambda: encode_mirror_request(inputs, spec.outputs),
        "decode the canary's answer": lambda: decode_mirror_response(answer, length),
        "pair the answers": lambda: compare(spec, stable, canary_outputs, 0.01),
        "count (ShadowTally.record)": lambda: tally.record(
            paired.disagree, [], paired.probability_difference, paired.abs_error,
            paired.relative_error,
        ),
    }  # fmt: skip
    figures = []
    for what, step in steps.items():
        best = float("inf")
        for _ in range(5):  # the fastest of five: the machine is shared
            began = time.perf_counter()
            for _ in range(2000):
                step()
            best = min(best, (time.perf_counter() - began) / 2000)
        figures.append({"what": what, "us": best * 1e6})
    return figures


def start(spec: ServerSpec, logs: pathlib.Path) -> procs.ProcessGroup:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "serving_image" / "src"), env.get("PYTHONPATH")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    return procs.ProcessGroup(spec.argv, logs / f"shadow-{spec.key}.log", env=env)


def server(settings: Settings, key: str, offset: int, workers: int) -> ServerSpec:
    """``our_server``'s flags, run from this checkout with one intra-op thread per worker."""
    spec = our_server(settings, key, key, offset, workers, settings.max_batch_size)
    spec.argv[:1] = [sys.executable, "-m", "modeldeploy_server"]
    spec.argv += ["--threads", "1", "--log-level", "warning"]
    return spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load, config and round")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--pace-ms", type=int, default=8, help="pause per answer, paced load")
    parser.add_argument("--workers", type=int, default=1, help="of each server")
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.4,
        help="a run waits until other processes take at most this, and is measured again "
        "if they took more meanwhile",
    )
    parser.add_argument("--retries", type=int, default=2, help="at most, per run")
    parser.add_argument(
        "--patience", type=float, default=90, help="seconds in all for waiting and retries"
    )
    parser.add_argument("--port-base", type=int, default=18300)
    parser.add_argument("--out", type=pathlib.Path, default=BENCH_DIR / "SHADOW_RESULTS.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = BENCH_DIR / ".work"
    model_dir = load.benchmark_model(work, say)
    body = load.load_bodies(model_dir)[BODY]
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config_file = work / "shadow-config.json"
    write_config(config_file, None)
    settings = Settings(work, args.port_base, args.workers, 32, 2.0)
    stable = server(settings, "stable", 0, args.workers)
    stable.argv += ["--shadow-config", str(config_file)]
    noflag = server(settings, "no-flag", 10, args.workers)
    canary = server(settings, "canary", 20, args.workers)
    hole = BlackHole()
    targets = {
        "off": None,
        "healthy": f"http://127.0.0.1:{canary.port}",
        "slow": f"http://127.0.0.1:{hole.port}",
        "dead": f"http://127.0.0.1:{closed_port()}",
    }
    loads = (("paced", args.pace_ms), ("full", 0))
    meta = report.machine_description(work)
    meta.update(loadavg_before=procs.loadavg(), started=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    pythonpath = os.environ.get("PYTHONPATH")
    meta["command"] = (
        f"PYTHONPATH={shlex.quote(_relative(pythonpath))} " if pythonpath else ""
    ) + shlex.join([os.path.relpath(sys.executable, REPO), *map(_relative, sys.argv)])
    began = time.monotonic()
    running: dict[str, procs.ProcessGroup] = {}
    results: list[dict[str, Any]] = []
    machine: procs.SharedMachine | None = None
    try:
        for spec in (stable, noflag, canary):
            running[spec.key] = start(spec, logs)
        for spec in (stable, noflag, canary):
            load.wait_ready(spec.ready_url, running[spec.key].alive, timeout=120)
            problem = load.check_body(spec.infer_url, body, _expected(model_dir))
            if problem is not None:
                raise RuntimeError(f"{spec.key} answers {BODY} wrongly: {problem}")
        say(f"servers ready and checked; stable :{stable.port}, no-flag :{noflag.port}, "
            f"canary :{canary.port}, never-answering :{hole.port}, closed "
            f"{targets['dead']}")  # fmt: skip
        copy_work = time_copy_work(model_dir, canary)
        say("the mirror's own work per copy, in-process: "
            + ", ".join(f"{f['what']} {f['us']:.1f} us" for f in copy_work))  # fmt: skip
        for spec in (stable, noflag):
            load.run_wrk(spec.infer_url, body, args.connections, 3.0)  # warm-up
        total = args.rounds * len(CONFIGS) * len(loads)
        machine = procs.SharedMachine(
            [g.pid for g in running.values()], args.quiet_cores, args.patience, say
        )
        for round_no in range(1, args.rounds + 1):
            shift = round_no - 1
            for config in CONFIGS[shift:] + CONFIGS[:shift]:
                spec = noflag if config == "no-flag" else stable
                if config != "no-flag":
                    write_config(config_file, targets[config])
                took = settle(config, spec, body, args.connections)
                for load_key, pause in loads:
                    for attempt in range(1, args.retries + 2):
                        machine.wait()
                        figures = measure(spec, running[spec.key], running["canary"], body,
                                          args.connections, args.seconds, pause)  # fmt: skip
                        busy = others_cores(figures)
                        if attempt > args.retries or not machine.disturbed(busy, args.seconds):
                            break
                        say(f"    {config} {load_key}: other processes took {busy:.2f} "
                            "cores meanwhile; measuring again")  # fmt: skip
                    figures.update(config=config, load=load_key, round=round_no, settle_s=took,
                                   attempts=attempt)  # fmt: skip
                    results.append(figures)
                    say(f"[{len(results)}/{total}] round {round_no} {config:<7} {load_key:<5} "
                        + progress_line(figures))  # fmt: skip
        write_config(config_file, None)
    finally:
        for group in running.values():
            group.stop()
        hole.close()
    meta.update(loadavg_after=procs.loadavg(), elapsed_s=time.monotonic() - began)
    assert machine is not None
    raw = {
        "meta": meta,
        "config": {
            "rounds": args.rounds,
            "seconds": args.seconds,
            "connections": args.connections,
            "pace_ms": args.pace_ms,
            "quiet_cores": args.quiet_cores,
            "retries": args.retries,
            "patience": args.patience,
            "patience_used": args.patience - machine.left,
            "workers": args.workers,
            "body": BODY,
            "stable_argv": ["python", *map(_relative, stable.argv[1:])],
        },
        "results": results,
        "copy_work": copy_work,
    }
    (work / "shadow.json").write_text(json.dumps(raw, indent=1, default=str))
    args.out.write_text(render(raw))
    say(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


def others_cores(figures: dict[str, Any]) -> float:
    """Cores the machine spent on anything but the servers, wrk and this script."""
    ours = sum(figures[f"{name}_cores"] for name in ("stable", "canary", "wrk", "bench"))
    return float(figures["machine_cores"] - ours)


def progress_line(figures: dict[str, Any]) -> str:
    moved = figures["counters"]
    drops = ", ".join(f"{r} {moved[f'dropped:{r}']:.0f}" for r in REASONS if moved[f"dropped:{r}"])
    return (
        f"{figures['rps']:,.0f} req/s, p50 {figures['p50_ms']:.2f} ms, p99 "
        f"{figures['p99_ms']:.2f} ms, max {figures['max_ms']:.1f} ms, errors "
        f"{figures['errors'] + figures['non2xx']}; stable {figures['stable_cpu_us_per_req']:.0f} "
        f"us CPU/req, canary {figures['canary_cores']:.2f} cores; compared {moved['rows']:.0f}"
        + (f", dropped {drops}" if drops else "")
    )


def _relative(arg: str) -> str:
    """An argument as read from the repository's root: the results name no machine path."""
    return arg.replace(f"{REPO}/", "").replace(str(REPO), ".")


def _expected(model_dir: pathlib.Path) -> Any:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    rows = np.load(model_dir / "X.npy")[:64]
    return np.asarray(session.run(["label"], {"X": rows})[0], dtype=np.int64)


def render_only() -> int:
    """Rewrite SHADOW_RESULTS.md from the last run's shadow.json."""
    raw = json.loads((BENCH_DIR / ".work" / "shadow.json").read_text())
    (BENCH_DIR / "SHADOW_RESULTS.md").write_text(render(raw))
    return 0


if __name__ == "__main__":
    sys.exit(render_only() if sys.argv[1:] == ["--render-only"] else main())
