"""The physical limit for one process: onnxruntime called in-process, no HTTP, no codec.

Usage: python benchmarks/inprocess.py WORKDIR [--calls N] [--seconds S]

Prints one JSON object: for intra-op threads 1 and 0 (onnxruntime's default, one per core),
the per-call latency of single-row calls (p50, p99, mean in microseconds) and rows/s at
batch 1 and 32. Each call gets a fresh slice, as a server's decoded request would.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import onnxruntime as ort


def session(model: pathlib.Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def single_row_latency(s: ort.InferenceSession, rows: np.ndarray, calls: int) -> dict[str, float]:
    name = s.get_inputs()[0].name
    for i in range(300):
        s.run(None, {name: rows[i % 1000 : i % 1000 + 1]})
    samples = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        x = rows[i % 1000 : i % 1000 + 1]
        start = clock()
        s.run(None, {name: x})
        samples[i] = clock() - start
    us = samples / 1000.0
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
    }


def rows_per_second(s: ort.InferenceSession, rows: np.ndarray, batch: int, seconds: float) -> float:
    name = s.get_inputs()[0].name
    starts = range(0, 1000 - batch, batch)
    for start in list(starts)[:20]:
        s.run(None, {name: rows[start : start + batch]})
    done = 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for start in starts:
            s.run(None, {name: rows[start : start + batch]})
            done += batch
    return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=pathlib.Path)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    rows = np.load(args.workdir / "X.npy")
    result: dict[str, object] = {"onnxruntime": ort.__version__}
    for threads in (1, 0):
        s = session(args.workdir / "model.onnx", threads)
        figures = single_row_latency(s, rows, args.calls)
        figures["rows_per_s_b1"] = rows_per_second(s, rows, 1, args.seconds)
        figures["rows_per_s_b32"] = rows_per_second(s, rows, 32, args.seconds)
        result[f"threads={threads}"] = figures
    print(json.dumps(result))


if __name__ == "__main__":
    main()
