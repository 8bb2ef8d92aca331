"""Turn one run's raw figures into benchmarks/RESULTS.md: tables, ratios, targets met or not."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pathlib
import platform
import statistics
import subprocess
from typing import Any

from .servers import BENCH_DIR

OURS, NOBATCH, ONE_WORKER = "modeldeploy", "modeldeploy-nobatch", "modeldeploy-1w"
MLSERVER, KSERVE = "mlserver", "kserve"
MET, NOT_MET, UNKNOWN = "**met**", "**not met**", "not measured"


def _venv_version(python: pathlib.Path, dist: str) -> str:
    if not python.exists():
        return "-"
    done = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version('{dist}'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "-"


def server_source() -> str:
    """Which code of our server ran: git HEAD, uncommitted or not, and a digest of its files."""
    repo = BENCH_DIR.parent
    package = repo / "serving_image" / "src" / "modeldeploy_server"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    git = ["git", "-C", str(repo)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "serving_image"], capture_output=True, text=True
    )
    state = "with uncommitted changes" if dirty.stdout.strip() else "clean"
    return (
        f"git {head.stdout.strip() or '?'} ({state}); sha256 of modeldeploy_server/**/*.py "
        f"{digest.hexdigest()[:16]}"
    )


def machine_description(work: pathlib.Path) -> dict[str, Any]:
    cpu = "unknown"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(pathlib.Path("/proc/meminfo").read_text().split()[1])
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "server_source": server_source(),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": importlib.metadata.version("onnxruntime"),
        "numpy": importlib.metadata.version("numpy"),
        "mlserver": _venv_version(work / "venv-mlserver" / "bin" / "python", "mlserver"),
        "kserve": _venv_version(work / "venv-kserve" / "bin" / "python", "kserve"),
        "onnxruntime_anchor_venvs": _venv_version(
            work / "venv-mlserver" / "bin" / "python", "onnxruntime"
        ),
        "wrk": " ".join((wrk.stdout + wrk.stderr).split()[:2]) or "?",
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def aggregate(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Median over rounds of every figure, per (server, body, connections)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["server"], r["body"], r["conns"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        cell: dict[str, Any] = {"runs": len(runs)}
        for field in ("rps", "rows_per_s", "p50_ms", "p99_ms", "cpu_us_per_req"):
            cell[field] = _median([r[field] for r in runs])
        cell["errors"] = sum(r["errors"] + r["non2xx"] for r in runs)
        cell["rss_worker"] = _median([r["rss_worker_mib"] for r in runs])
        cell["rss_total"] = _median([r["rss_total_mib"] for r in runs])
        cell["procs"] = max((len(r["processes"]) for r in runs), default=0)
        cell["rps_spread"] = (min(r["rps"] for r in runs), max(r["rps"] for r in runs))
        hists = [r.get("batch_hist") for r in runs if r.get("batch_hist")]
        if hists:
            cell["batch_hist"] = {k: sum(h.get(k, 0.0) for h in hists) for k in hists[0]}
        out[key] = cell
    return out


def inprocess_limits(inprocess: list[dict[str, Any]]) -> dict[str, float]:
    t1 = [r["threads=1"] for r in inprocess]
    t0 = [r["threads=0"] for r in inprocess]
    return {
        "p50_ms": _median([r["p50_us"] for r in t1]) / 1000,
        "p99_ms": _median([r["p99_us"] for r in t1]) / 1000,
        "b1_rows": max(_median([r["rows_per_s_b1"] for r in t]) for t in (t1, t0)),
        "b32_rows_t1": _median([r["rows_per_s_b32"] for r in t1]),
        "b32_rows_t0": _median([r["rows_per_s_b32"] for r in t0]),
        "b32_rows": max(_median([r["rows_per_s_b32"] for r in t]) for t in (t1, t0)),
    }


def mean_batch(hist: dict[str, float] | None) -> float | None:
    if not hist or not hist.get("count"):
        return None
    return hist["sum"] / hist["count"]


def _f(value: float | None, fmt: str = ",.0f") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return format(value, fmt)


def soak_verdict(soak: dict[str, Any] | None) -> tuple[str, str]:
    """(measured, verdict) for the RSS-flat target: per process, first vs last third."""
    if not soak or len(soak["samples"]) < 6:
        return "no soak samples", UNKNOWN
    samples = soak["samples"][max(1, len(soak["samples"]) // 10) :]  # skip warm-up
    third = max(1, len(samples) // 3)
    growths = []
    for name in soak_processes(soak):
        first = [s[1][name] for s in samples[:third] if name in s[1]]
        last = [s[1][name] for s in samples[-third:] if name in s[1]]
        if first and last:
            growths.append((name, statistics.mean(first), statistics.mean(last)))
    flat = all(last - first <= max(5.0, 0.05 * first) for _, first, last in growths)
    text = "; ".join(f"{name} {a:.1f} → {b:.1f} MiB" for name, a, b in growths)
    return f"{soak['seconds']:.0f} s soak, per process (first → last third): {text}", (
        MET if flat else NOT_MET
    )


def soak_processes(soak: dict[str, Any]) -> list[str]:
    """Process names ("worker 1234") seen in the soak, largest first."""
    sizes: dict[str, float] = {}
    for _, rss in soak["samples"]:
        for name, mib in rss.items():
            sizes[name] = max(sizes.get(name, 0.0), mib)
    return sorted(sizes, key=lambda name: -sizes[name])


def paired(
    results: list[dict[str, Any]], a: tuple[str, str, int], b: tuple[str, str, int], field: str
) -> list[float]:
    """Per-round ratio a/b of one figure: the two runs of a round were seconds apart."""
    by_round: dict[int, dict[str, float]] = {}
    for r in results:
        for name, key in (("a", a), ("b", b)):
            if (r["server"], r["body"], r["conns"]) == key:
                by_round.setdefault(r["round"], {})[name] = r[field]
    return [v["a"] / v["b"] for _, v in sorted(by_round.items()) if len(v) == 2 and v["b"]]


def _per_round(results: list[dict[str, Any]], key: tuple[str, str, int], field: str) -> list[float]:
    runs = sorted(
        (r["round"], r[field]) for r in results if (r["server"], r["body"], r["conns"]) == key
    )
    return [value for _, value in runs]


def targets(
    cells: dict, limits: dict[str, float], soak: dict | None, results: list[dict[str, Any]]
) -> list[tuple[str, str, str]]:
    rows = []
    ours, mls = cells.get((OURS, "json-b1", 16)), cells.get((MLSERVER, "json-b1", 16))
    if ours and mls:
        ratio, p99_ratio = ours["rps"] / mls["rps"], mls["p99_ms"] / ours["p99_ms"]
        key_ours, key_mls = (OURS, "json-b1", 16), (MLSERVER, "json-b1", 16)
        rps_rounds = paired(results, key_ours, key_mls, "rps")
        p99_rounds = paired(results, key_mls, key_ours, "p99_ms")
        rows.append(
            (
                "16 connections, single-row JSON: ≥10x MLServer's req/s, p99 ≤ 1/5 of MLServer's",
                f"{ours['rps']:,.0f} vs {mls['rps']:,.0f} req/s = **{ratio:.1f}x** (per round "
                f"{', '.join(f'{x:.1f}x' for x in rps_rounds)}); p99 {ours['p99_ms']:.2f} vs "
                f"{mls['p99_ms']:.2f} ms = **1/{p99_ratio:.1f}** (per round "
                f"{', '.join(f'1/{x:.1f}' for x in p99_rounds)})",
                MET if ratio >= 10 and p99_ratio >= 5 else NOT_MET,
            )
        )
    else:
        rows.append(("16 connections, single-row JSON vs MLServer", "-", UNKNOWN))
    one = cells.get((OURS, "json-b1", 1))
    if one and limits:
        gap = one["p50_ms"] - limits["p50_ms"]
        rows.append(
            (
                "1 connection: p50 within 0.15 ms of onnxruntime in-process",
                f"p50 {one['p50_ms']:.3f} ms vs in-process {limits['p50_ms']:.3f} ms: "
                f"**+{gap:.3f} ms**",
                MET if gap <= 0.15 else NOT_MET,
            )
        )
    else:
        rows.append(("1 connection: p50 within 0.15 ms of in-process", "-", UNKNOWN))
    b32 = [cells[k] | {"c": k[2]} for k in cells if k[0] == OURS and k[1] == "binary-b32"]
    if b32 and limits:
        best = max(b32, key=lambda c: c["rows_per_s"])
        share = best["rows_per_s"] / limits["b32_rows"]
        one = [cells[k] for k in cells if k[0] == ONE_WORKER and k[1] == "binary-b32"]
        per_worker = (
            f"; 1 worker: {max(c['rows_per_s'] for c in one) / limits['b32_rows']:.0%}"
            if one
            else ""
        )
        rows.append(
            (
                "batch-32 binary: rows/s ≥ 40% of the in-process limit (one process, batch 32)",
                f"{best['rows_per_s']:,.0f} rows/s (c={best['c']}) vs {limits['b32_rows']:,.0f}: "
                f"**{share:.0%}**{per_worker}",
                MET if share >= 0.40 else NOT_MET,
            )
        )
    else:
        rows.append(("batch-32 binary: rows/s ≥ 40% of in-process", "-", UNKNOWN))
    on64, off64 = cells.get((OURS, "json-b1", 64)), cells.get((NOBATCH, "json-b1", 64))
    on1, off1 = cells.get((OURS, "json-b1", 1)), cells.get((NOBATCH, "json-b1", 1))
    if on64 and off64 and on1 and off1:
        gain = on64["rps"] / off64["rps"]
        gains = paired(results, (OURS, "json-b1", 64), (NOBATCH, "json-b1", 64), "rps")
        p50_deltas = [
            (a - b) * 1000
            for a, b in zip(
                _per_round(results, (OURS, "json-b1", 1), "p50_ms"),
                _per_round(results, (NOBATCH, "json-b1", 1), "p50_ms"),
                strict=False,
            )
        ]
        slack = max(0.02, 0.05 * off1["p50_ms"])
        ok = gain >= 1.05 and on1["p50_ms"] <= off1["p50_ms"] + slack
        mb = mean_batch(on64.get("batch_hist"))
        rows.append(
            (
                "dynamic batching: more req/s at 64 connections (≥ +5%), p50 at 1 connection not "
                "raised (≤ +max(0.02 ms, 5%))",
                f"c=64 {on64['rps']:,.0f} vs {off64['rps']:,.0f} req/s = **{gain:.2f}x** "
                f"(per round {', '.join(f'{x:.2f}x' for x in gains)}) "
                f"mean batch {_f(mb, '.1f')}; "
                f"c=1 p50 {on1['p50_ms']:.3f} vs {off1['p50_ms']:.3f} ms (per round "
                f"{', '.join(f'{d:+.0f}' for d in p50_deltas)} µs)",
                MET if ok else NOT_MET,
            )
        )
    else:
        rows.append(("dynamic batching on vs off", "-", UNKNOWN))
    measured, verdict = soak_verdict(soak)
    rows.append(
        ("RSS flat over the soak at full load (growth ≤ max(5 MiB, 5%))", measured, verdict)
    )
    return rows


def render(raw: dict[str, Any], config: Any) -> str:
    from .render import render_markdown

    return render_markdown(raw, config)


def analysis_text() -> str:
    path = BENCH_DIR / "analysis.md"
    return path.read_text() if path.exists() else ""
