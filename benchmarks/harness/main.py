"""Run the whole benchmark in one session and write benchmarks/RESULTS.md.

Every server is started once and kept running; each load (body x connections) is then run
against every server back to back, in an order that rotates between loads and rounds, so
that the noise of a shared machine falls on all of them alike. Only ratios taken within this
one run are compared.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np

from . import load, procs, profile, report, servers
from .servers import REPO, ServerSpec, Settings


@dataclasses.dataclass
class Config:
    quick: bool
    rounds: int
    seconds: float
    connections: list[int]
    soak_seconds: float
    profile_seconds: float
    settings: Settings

    @classmethod
    def from_env(cls, work: pathlib.Path) -> Config:
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        env = os.environ.get
        return cls(
            quick=quick,
            rounds=int(env("BENCH_ROUNDS", "1" if quick else "5")),
            seconds=float(env("BENCH_DURATION", "2" if quick else "5")),
            connections=[int(c) for c in env("BENCH_CONNECTIONS", "1,16,64").split(",")],
            soak_seconds=float(env("BENCH_SOAK_S", "20" if quick else "300")),
            profile_seconds=float(env("BENCH_PROFILE_S", "5" if quick else "15")),
            settings=Settings(
                work=work,
                port_base=int(env("BENCH_PORT_BASE", "18100")),
                workers=int(env("BENCH_WORKERS", str(os.cpu_count() or 1))),
                max_batch_size=int(env("BENCH_MAX_BATCH_SIZE", "32")),
                max_batch_delay_ms=float(env("BENCH_MAX_BATCH_DELAY_MS", "2")),
            ),
        )


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Harness:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.work = config.settings.work
        self.bodies = load.load_bodies(self.work / "model")
        self.specs, self.notes = servers.all_servers(config.settings)
        self.running: dict[str, procs.ProcessGroup] = {}
        self.supported: dict[str, list[str]] = {}
        self.results: list[dict[str, object]] = []
        self.inprocess: list[dict[str, object]] = []
        self.extra: dict[str, object] = {}
        self.expected = self._expected_labels()

    def _expected_labels(self) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(self.work / "model" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        rows = np.load(self.work / "model" / "X.npy")[:64]
        return np.asarray(session.run(["label"], {"X": rows})[0], dtype=np.int64)

    # -- servers -----------------------------------------------------------------------
    def start_all(self) -> None:
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        for spec in list(self.specs):
            say(f"starting {spec.key}: {' '.join(spec.argv)}")
            group = procs.ProcessGroup(
                spec.argv,
                logs / f"{spec.key}.log",
                env=servers.server_env(spec),
                cwd=spec.cwd,
                pidfile=self.work / "pids",
            )
            self.running[spec.key] = group
            try:
                took = load.wait_ready(spec.ready_url, group.alive, timeout=180)
            except RuntimeError as exc:
                self._drop(spec, f"{spec.key} did not start ({exc}); see {group.log_path}")
                continue
            self.supported[spec.key] = self._check(spec)
            say(f"{spec.key} ready in {took:.1f} s; bodies: {', '.join(self.supported[spec.key])}")
            if not self.supported[spec.key]:
                self._drop(spec, f"{spec.key} answered no body correctly")

    def _drop(self, spec: ServerSpec, why: str) -> None:
        say(why)
        self.notes.append(why)
        self.specs.remove(spec)
        self.running.pop(spec.key).stop()

    def _check(self, spec: ServerSpec) -> list[str]:
        ok = []
        for key, body in self.bodies.items():
            if spec.bodies is not None and key not in spec.bodies:
                continue
            problem = load.check_body(spec.infer_url, body, self.expected)
            if problem is None:
                ok.append(key)
            else:
                note = (
                    f"{spec.key} does not serve {key} correctly, so it is not measured: {problem}"
                )
                self.notes.append(note)
                say(note)
        return ok

    def stop_all(self) -> None:
        for key, group in list(self.running.items()):
            say(f"stopping {key}")
            group.stop()
            self.running.pop(key)

    # -- measurements ------------------------------------------------------------------
    def measure(self, spec: ServerSpec, body: load.Body, conns: int, seconds: float) -> dict:
        group = self.running[spec.key]
        tree = procs.process_tree(group.pid)
        hist_before = load.scrape_batch_sizes(spec.metrics_url)
        cpu_before = procs.cpu_seconds(tree)
        busy_before, wrk_before = procs.machine_busy_seconds(), procs.children_cpu_seconds()
        figures: dict[str, object] = dict(load.run_wrk(spec.infer_url, body, conns, seconds))
        busy = procs.machine_busy_seconds() - busy_before
        wrk_cpu = procs.children_cpu_seconds() - wrk_before
        tree = procs.process_tree(group.pid)
        cpu = procs.cpu_delta(cpu_before, procs.cpu_seconds(tree))
        elapsed = float(figures["seconds"])  # type: ignore[arg-type]
        # Cores busy with anything but this server and wrk: the other tenants of the machine.
        figures["other_cores"] = max(0.0, busy - cpu - wrk_cpu) / elapsed
        figures["server_cores"] = cpu / elapsed
        figures["wrk_cores"] = wrk_cpu / elapsed
        requests = max(int(figures["requests"]), 1)  # type: ignore[call-overload]
        figures.update(
            server=spec.key,
            body=body.key,
            conns=conns,
            rows_per_s=float(figures["rps"]) * body.rows,  # type: ignore[arg-type]
            cpu_us_per_req=cpu / requests * 1e6,
        )
        entries = procs.memory(group.pid)
        figures["rss_worker_mib"] = procs.worker_rss(entries)
        figures["rss_total_mib"] = sum(mib for _, _, mib in entries)
        figures["processes"] = [f"{kind} {mib:.0f}" for _, kind, mib in entries]
        if spec.metrics_url is not None:
            figures["batch_hist"] = load.histogram_delta(
                hist_before, load.scrape_batch_sizes(spec.metrics_url)
            )
        return figures

    def warm_up(self) -> None:
        seconds = 1.0 if self.config.quick else 3.0
        for spec in self.specs:
            for key in self.supported[spec.key]:
                load.run_wrk(spec.infer_url, self.bodies[key], 16, seconds)
        say("warm-up done")

    def run_inprocess(self, round_no: int) -> None:
        say(f"round {round_no}: onnxruntime in-process")
        done = subprocess.run(
            [
                sys.executable,
                str(servers.BENCH_DIR / "inprocess.py"),
                str(self.work / "model"),
                "--seconds",
                "1" if self.config.quick else "3",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        figures = json.loads(done.stdout)
        figures["round"] = round_no
        self.inprocess.append(figures)
        t1 = figures["threads=1"]
        say(
            f"round {round_no}: in-process p50 {t1['p50_us']:.1f} us/call, "
            f"batch-32 {t1['rows_per_s_b32']:,.0f} rows/s"
        )

    def run_rounds(self) -> None:
        c = self.config
        loads = [(b, n) for b in self.bodies for n in c.connections]
        for round_no in range(1, c.rounds + 1):
            self.run_inprocess(round_no)
            self.extra.setdefault("loadavg_rounds", []).append(procs.loadavg())  # type: ignore[union-attr]
            for index, (body_key, conns) in enumerate(loads):
                body = self.bodies[body_key]
                order = [s for s in self.specs if body_key in self.supported[s.key]]
                shift = (index + round_no) % max(len(order), 1)
                for spec in order[shift:] + order[:shift]:
                    say(f"round {round_no}/{c.rounds} · {body_key} · c={conns} · {spec.key} ...")
                    figures = self.measure(spec, body, conns, c.seconds)
                    figures["round"] = round_no
                    self.results.append(figures)
                    say(
                        f"    {figures['rps']:>9,.0f} req/s  p50 {figures['p50_ms']:.3f} ms  "
                        f"p99 {figures['p99_ms']:.3f} ms  cpu {figures['cpu_us_per_req']:.0f} "
                        f"us/req  errors {figures['errors']} non2xx {figures['non2xx']}  "
                        f"(cores: server {figures['server_cores']:.2f}, wrk "
                        f"{figures['wrk_cores']:.2f}, others {figures['other_cores']:.2f})"
                    )

    def soak(self) -> None:
        """Full load on our server for the soak duration, RSS of each process sampled."""
        spec = next((s for s in self.specs if s.key == "modeldeploy"), None)
        if spec is None or self.config.soak_seconds <= 0:
            return
        group = self.running[spec.key]
        samples: list[tuple[float, dict[str, float]]] = []
        stop = threading.Event()
        began = time.monotonic()
        interval = max(1.0, min(5.0, self.config.soak_seconds / 20))

        def sample() -> None:
            while not stop.is_set():
                rss = {f"{kind} {pid}": mib for pid, kind, mib in procs.memory(group.pid)}
                samples.append((time.monotonic() - began, rss))
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        chunk = float(round(min(30.0, max(2.0, self.config.soak_seconds / 8))))
        keys = self.supported[spec.key]
        runs: list[dict[str, object]] = []
        index = 0
        say(
            f"soak: {self.config.soak_seconds:.0f} s at 64 connections on {spec.key}, "
            f"cycling {', '.join(keys)} in {chunk:.0f} s chunks"
        )
        while (left := self.config.soak_seconds - (time.monotonic() - began)) >= 1.5:
            body = self.bodies[keys[index % len(keys)]]
            figures = load.run_wrk(spec.infer_url, body, 64, min(chunk, left))
            runs.append({"body": body.key, **figures})
            rss_now = sorted(samples[-1][1].values(), reverse=True) if samples else []
            say(
                f"    soak {time.monotonic() - began:5.0f} s  {body.key}: "
                f"{figures['rps']:,.0f} req/s; RSS MiB {', '.join(f'{r:.0f}' for r in rss_now)}"
            )
            index += 1
        stop.set()
        sampler.join()
        self.extra["soak"] = {"seconds": self.config.soak_seconds, "samples": samples, "runs": runs}

    def profile(self) -> None:
        """py-spy on our server, then on the calibration floor, under the same load."""
        if self.config.profile_seconds <= 0:
            return
        for key, slot, folded in (
            ("modeldeploy", "profile", "profile.folded"),
            ("bare-asgi", "profile_floor", "profile-floor.folded"),
        ):
            spec = next((s for s in self.specs if s.key == key), None)
            if spec is None:
                continue
            self.extra[slot] = profile.profile_server(
                spec,
                self.running[spec.key].pid,
                self.bodies["json-b1"],
                16,
                self.config.profile_seconds,
                self.work,
                say,
                folded,
            )


def render_only(work: pathlib.Path) -> int:
    """Rewrite RESULTS.md from the last run's results.json (after editing analysis.md)."""
    raw = json.loads((work / "results.json").read_text())
    for slot in ("profile", "profile_floor"):
        profiled = raw["extra"].get(slot)
        if not profiled or "skipped" in profiled:
            continue
        folded = work / profiled.get("folded", "profile.folded")
        if folded.exists():
            profiled.update(profile.fold(folded.read_text().splitlines()))
    if "server_source" not in raw["meta"]:
        raw["meta"]["server_source"] = f"{report.server_source()} (read when rendering)"
    config = types.SimpleNamespace(**raw["config"])
    out = pathlib.Path(os.environ.get("BENCH_RESULTS", str(REPO / "benchmarks" / "RESULTS.md")))
    out.write_text(report.render(raw, config))
    say(f"wrote {out} from {work / 'results.json'}")
    return 0


def main() -> int:
    if sys.argv[2:] == ["--render-only"]:
        return render_only(pathlib.Path(sys.argv[1]).resolve())
    # run.sh's trap sends SIGTERM: unwind through the finally that stops every server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = pathlib.Path(sys.argv[1]).resolve()
    config = Config.from_env(work)
    (work / "pids").write_text("")
    harness = Harness(config)
    meta = report.machine_description(work)
    meta["loadavg_before"] = procs.loadavg()
    meta["started"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta["command"] = os.environ.get("BENCH_COMMAND", "bash benchmarks/run.sh")
    say(f"machine: {meta['nproc']} cores, {meta['cpu']}, load {meta['loadavg_before']}")
    began = time.monotonic()
    try:
        harness.start_all()
        harness.warm_up()
        harness.run_rounds()
        harness.soak()
        harness.profile()
    finally:
        harness.stop_all()
    meta["loadavg_after"] = procs.loadavg()
    meta["elapsed_s"] = time.monotonic() - began
    raw = {
        "meta": meta,
        "config": dataclasses.asdict(config),
        "servers": [dataclasses.asdict(s) for s in harness.specs],
        "supported": harness.supported,
        "notes": harness.notes,
        "results": harness.results,
        "inprocess": harness.inprocess,
        "extra": harness.extra,
    }
    (work / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    out = pathlib.Path(os.environ.get("BENCH_RESULTS", str(REPO / "benchmarks" / "RESULTS.md")))
    out.write_text(report.render(raw, config))
    say(f"wrote {out} ({meta['elapsed_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
