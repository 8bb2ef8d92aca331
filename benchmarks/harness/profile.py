"""Where our server spends its time per request: py-spy samples under load, folded.

py-spy attaches to the running server (and its worker processes) without restarting it,
samples every Python stack while wrk drives it, and the folded stacks are reduced to the
frames with the most self time and the most inclusive time. Each frame's share of the
samples, times the CPU per request measured in the same run, gives microseconds per request.
"""

from __future__ import annotations

import collections
import os
import pathlib
import re
import shutil
import subprocess
import threading
from collections.abc import Callable

from . import load, procs
from .servers import REPO, ServerSpec

_LINE = re.compile(r":\d+\)$")
_PROCESS = re.compile(r'process \d+:"[^"]*";?')
# Where a frame's self time goes, by the file it is in (first match wins).
COMPONENTS = (
    ("flush (modeldeploy_server/worker.py)", "socket write: one send() per response (ours)"),
    ("concurrent/futures/thread.py", "helper threads"),
    ("onnxruntime/", "onnxruntime session.run (the model)"),
    ("uvicorn/", "uvicorn HTTP protocol (parse, send)"),
    ("uvloop/", "event loop (uvloop: socket I/O, scheduling)"),
    ("asyncio/", "event loop (uvloop: socket I/O, scheduling)"),
    ("modeldeploy_server/codec/", "ours: codec (JSON / binary decode and encode)"),
    ("modeldeploy_server/batching.py", "ours: dynamic batching"),
    ("modeldeploy_server/dataplane.py", "ours: data plane (checks, outputs)"),
    ("modeldeploy_server/rest.py", "ours: REST layer (routing, headers, body)"),
    ("modeldeploy_server/metrics.py", "ours: metrics"),
    ("modeldeploy_server/", "ours: other"),
    ("numpy/", "numpy"),
    ("bare_asgi.py", "calibration app: decode, encode (orjson, numpy)"),
)
_PLUMBING = (
    "multiprocessing/",
    "<string>",
    "runners.py",
    "uvloop/__init__",
    "server.py",
    "worker.py",
)


def find_py_spy(work: pathlib.Path) -> str | None:
    for candidate in (REPO / ".venv" / "bin" / "py-spy", work / "venv-tools" / "bin" / "py-spy"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("py-spy")


def frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (to/file.py)``: lines merged, path shortened."""
    frame = _LINE.sub(")", frame.strip())
    if "(" in frame:
        func, _, path = frame.partition(" (")
        path = path.rstrip(")")
        for marker in ("site-packages/", "serving_image/src/", "lib/python3"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        frame = f"{func} ({path})"
    return frame


def fold(lines: list[str]) -> dict[str, object]:
    """Self and inclusive sample counts per frame from py-spy's raw (folded) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # Drop the "process PID:\"cmdline\"" pseudo-frames py-spy puts first (with
        # --subprocesses); a cmdline may itself hold ';'.
        stack = _PROCESS.sub("", stack)
        frames = [frame_name(f) for f in stack.split(";") if f and not f.startswith("thread ")]
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        parts[component(frames[-1])] += n
        for frame in set(frames):
            if not any(marker in frame for marker in _PLUMBING):
                inclusive[frame] += n
    return {
        "samples": total,
        "self": own.most_common(25),
        "inclusive": inclusive.most_common(40),
        "components": parts.most_common(),
    }


def component(frame: str) -> str:
    for marker, name in COMPONENTS:
        if marker in frame:
            return name
    if frame.startswith("Runner.run ") or frame.startswith("run (uvloop"):
        return "event loop (uvloop: socket I/O, scheduling)"
    return "other"


def profile_server(
    spec: ServerSpec,
    pid: int,
    body: load.Body,
    conns: int,
    seconds: float,
    work: pathlib.Path,
    say: Callable[[str], None],
    out_name: str = "profile.folded",
) -> dict[str, object]:
    py_spy = find_py_spy(work)
    if py_spy is None:
        say("profile skipped: py-spy is not installed")
        return {"skipped": "py-spy is not installed"}
    out = work / out_name
    say(f"profile: py-spy on {spec.key} for {seconds:.0f} s at c={conns}, {body.key}")
    command = [
        py_spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
        "--rate", "200", "--format", "raw", "--duration", f"{seconds + 2:.0f}",
        "--output", str(out),
    ]  # fmt: skip
    spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    threading.Event().wait(1.0)  # let py-spy attach before the load starts
    tree = procs.process_tree(pid)
    before = procs.cpu_seconds(tree)
    figures = load.run_wrk(spec.infer_url, body, conns, seconds)
    cpu = procs.cpu_delta(before, procs.cpu_seconds(procs.process_tree(pid)))
    log, _ = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not out.exists():
        message = log.decode(errors="replace")[-500:]
        say(f"profile failed: {message}")
        return {"skipped": f"py-spy failed: {message}"}
    folded = fold(out.read_text().splitlines())
    folded.update(
        command=" ".join(os.path.basename(c) if c == py_spy else c for c in command),
        rps=figures["rps"],
        cpu_us_per_req=cpu / max(int(figures["requests"]), 1) * 1e6,
        body=body.key,
        folded=out_name,
        conns=conns,
        seconds=seconds,
    )
    say(f"profile: {folded['samples']} samples at {figures['rps']:,.0f} req/s (under py-spy)")
    return folded


def print_profile(folded: dict[str, object], top: int) -> None:
    total = max(int(folded["samples"]), 1)  # type: ignore[call-overload]
    per_req = float(folded["cpu_us_per_req"])  # type: ignore[arg-type]
    print(f"\n{folded['rps']:,.0f} req/s under py-spy, {per_req:.0f} CPU µs/req, {total} samples")
    for title, key in (("self", "self"), ("inclusive", "inclusive")):
        print(f"\ntop frames by {title} time        share   µs/req")
        for frame, n in folded[key][:top]:  # type: ignore[index]
            print(f"  {n / total:6.1%} {n / total * per_req:7.1f}  {frame}")


def main() -> int:
    """Profile our server alone: ``bash benchmarks/profile.sh [--body B] [--conns N] ...``."""
    import argparse
    import signal
    import sys
    import time

    from .servers import Settings, our_server

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("work", type=pathlib.Path)
    parser.add_argument("--body", default="json-b1")
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--port", type=int, default=18190)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = args.work.resolve()
    settings = Settings(work, args.port, args.workers, args.max_batch_size, 2.0)
    spec = our_server(settings, "modeldeploy", "modeldeploy", 0, args.workers, args.max_batch_size)
    bodies = load.load_bodies(work / "model")
    log = work / "profile-server.log"
    group = procs.ProcessGroup(spec.argv, log, pidfile=work / "profile-pids")
    try:
        load.wait_ready(spec.ready_url, group.alive, timeout=120)
        load.run_wrk(spec.infer_url, bodies[args.body], args.conns, 3)  # warm up

        def say(message: str) -> None:
            print(f"[profile {time.strftime('%H:%M:%S')}] {message}", flush=True)

        folded = profile_server(
            spec, group.pid, bodies[args.body], args.conns, args.seconds, work, say
        )
    finally:
        group.stop()
    if "skipped" in folded:
        return 1
    print_profile(folded, args.top)
    print(f"\nfolded stacks: {work / 'profile.folded'} (flamegraph.pl or speedscope read them)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
