"""SHADOW_RESULTS.md from the raw figures of ``shadow_bench.py`` (benchmarks/.work/shadow.json)."""

from __future__ import annotations

import math
import statistics
from typing import Any

CONFIGS = ("no-flag", "off", "healthy", "slow", "dead")
LABELS = {
    "no-flag": "off: no `--shadow-config`",
    "off": "off: `--shadow-config`, empty target",
    "healthy": "100% to a healthy canary",
    "slow": "100% to a canary that never answers",
    "dead": "100% to a closed port",
}
REASONS = ("queue_full", "canary_error", "timeout", "unpairable")
ON = ("healthy", "slow", "dead")

Cells = dict[tuple[str, str], list[dict[str, Any]]]


def _cells(raw: dict[str, Any]) -> Cells:
    cells: Cells = {}
    for r in raw["results"]:
        cells.setdefault((r["config"], r["load"]), []).append(r)
    return cells


def _med(runs: list[dict[str, Any]], field: str) -> float:
    return statistics.median(r[field] for r in runs)


def _summed(runs: list[dict[str, Any]], counter: str) -> float:
    return sum(r["counters"][counter] for r in runs)


def _quiet(runs: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    return [r for r in runs if not _disturbed(r, threshold)]


def _p99(run: dict[str, Any], threshold: float) -> str:
    return f"{run['p99_ms']:.2f}" + ("*" if _disturbed(run, threshold) else "")


def _share(part: float, whole: float) -> str:
    return f"{part:,.0f} ({part / whole:.1%})" if part else "0"


def latency_table(cells: Cells, load: str, threshold: float) -> list[str]:
    lines = [
        "| mirroring | req/s | p50 ms | p90 ms | p99 ms | p99 per round | max ms | client errors "
        "| p99 - off | p99, undisturbed runs (n) | p99 - off (both), undisturbed |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    off = cells.get(("off", load))
    for config in CONFIGS:
        runs = cells.get((config, load))
        if not runs:
            continue
        p99 = _med(runs, "p99_ms")
        versus = f"{p99 - _med(off, 'p99_ms'):+.2f} ms" if off and config != "off" else "-"
        quiet = _quiet(runs, threshold)
        # Undisturbed runs are few on a busy machine: both servers with mirroring off are
        # the baseline for them.
        quiet_off = _quiet(cells.get(("off", load), []) + cells.get(("no-flag", load), []),
                           threshold)  # fmt: skip
        calm = f"{_med(quiet, 'p99_ms'):.2f} ({len(quiet)})" if quiet else "- (0)"
        calm_versus = (
            f"{_med(quiet, 'p99_ms') - _med(quiet_off, 'p99_ms'):+.2f} ms"
            if quiet and quiet_off and config in ON
            else "-"
        )
        lines.append(
            f"| {LABELS[config]} | {_med(runs, 'rps'):,.0f} | {_med(runs, 'p50_ms'):.2f} | "
            f"{_med(runs, 'p90_ms'):.2f} | {p99:.2f} | "
            f"{', '.join(_p99(r, threshold) for r in runs)} | "
            f"{max(r['max_ms'] for r in runs):.1f} | "
            f"{sum(r['errors'] + r['non2xx'] for r in runs)} | {versus} | {calm} | "
            f"{calm_versus} |"
        )
    return lines


def cost_table(cells: Cells, loads: list[str]) -> list[str]:
    lines = [
        "| mirroring | load | stable CPU µs/req | stable cores | canary cores | wrk cores | "
        "machine cores busy | others' cores | copies compared | dropped: queue_full | "
        "canary_error | timeout | unpairable |",
        "| --- | --- |" + " ---: |" * 11,
    ]
    for load in loads:
        for config in CONFIGS:
            runs = cells.get((config, load))
            if not runs:
                continue
            requests = sum(r["requests"] for r in runs)
            others = statistics.median(
                r["machine_cores"]
                - sum(r[f"{p}_cores"] for p in ("stable", "canary", "wrk", "bench"))
                for r in runs
            )
            drops = " | ".join(_share(_summed(runs, f"dropped:{r}"), requests) for r in REASONS)
            lines.append(
                f"| {LABELS[config]} | {load} | {_med(runs, 'stable_cpu_us_per_req'):.0f} | "
                f"{_med(runs, 'stable_cores'):.2f} | {_med(runs, 'canary_cores'):.2f} | "
                f"{_med(runs, 'wrk_cores'):.2f} | {_med(runs, 'machine_cores'):.2f} | "
                f"{others:.2f} | "
                f"{_share(_summed(runs, 'rows'), requests)} | {drops} |"
            )
    return lines


def reading(cells: Cells, threshold: float) -> list[str]:
    """The figures the bound is stated from, computed (so a re-run restates them)."""
    if not all((c, load) in cells for c in CONFIGS for load in ("paced", "full")):
        return ["(an incomplete run: no reading)"]

    def fig(config: str, load: str, field: str) -> float:
        return _med(cells[(config, load)], field)

    def calm(configs: tuple[str, ...], load: str) -> list[dict[str, Any]]:
        return _quiet([r for c in configs for r in cells[(c, load)]], threshold)

    off_both = ("off", "no-flag")
    base = calm(off_both, "paced")
    undisturbed = bool(base) and all(calm((c,), "paced") for c in ON)
    if undisturbed:
        p99 = {c: _med(calm((c,), "paced"), "p99_ms") for c in ON}
        p99_off, which = _med(base, "p99_ms"), "the undisturbed runs"
        counts = {c: len(calm((c,), "paced")) for c in ON}
        spread = f"; the undisturbed off runs' p99 range {_spread(base)}"
    else:
        p99 = {c: fig(c, "paced", "p99_ms") for c in ON}
        p99_off, which = fig("off", "paced", "p99_ms"), "all runs (too few undisturbed)"
        counts = {c: len(cells[(c, "paced")]) for c in ON}
        spread = ""
    n_off = len(base) if undisturbed else len(cells[("off", "paced")])
    excess = max(max(p99.values()) - p99_off, 0)
    within = ", less than the off runs' own spread" if undisturbed and excess < _width(base) else ""
    noise = abs(fig("no-flag", "paced", "p99_ms") - fig("off", "paced", "p99_ms"))
    worst = max(ON, key=lambda c: p99[c])
    full_off = fig("off", "full", "rps")
    base_cpu = fig("off", "full", "stable_cpu_us_per_req")
    # req/s of a CPU-bound worker = its cores / CPU per request
    predicted = (
        fig("healthy", "full", "stable_cores")
        / fig("off", "full", "stable_cores")
        * base_cpu
        / fig("healthy", "full", "stable_cpu_us_per_req")
        - 1
    )
    return [
        f"- **Latency at the paced load** ({fig('off', 'paced', 'rps'):,.0f} req/s; medians "
        f"over {which}): p99 off {p99_off:.2f} ms (n={n_off}), "
        + ", ".join(f"{c} {p99[c]:.2f} ms ({p99[c] - p99_off:+.2f}, n={counts[c]})" for c in ON)
        + f"{spread}. Over all runs, the two servers with mirroring off differ by {noise:.2f} "
        "ms at p99: what other people's load does to a p99 here.",
        "- **Capacity at full load** (the stable's one worker saturated): req/s "
        + ", ".join(f"{c} {fig(c, 'full', 'rps') / full_off - 1:+.0%}" for c in ON)
        + f" against off ({full_off:,.0f} req/s).",
        f"- **What a copy costs the stable** (CPU per request at full load, off {base_cpu:.0f} "
        "µs): "
        + ", ".join(
            f"{c} {fig(c, 'full', 'stable_cpu_us_per_req'):.0f} µs "
            f"({fig(c, 'full', 'stable_cpu_us_per_req') / base_cpu - 1:+.0%})"
            for c in ON
        )
        + ". The senders run on the worker's event loop, on the core that serves the clients: "
        "a copy sent and answered costs CPU there; a copy dropped at a full queue (the "
        "never-answering canary), or while the mirror pauses on a canary that refuses its "
        "connections (the closed port), costs almost nothing.",
        "- **The canary shares the two cores**: the healthy canary took "
        f"{fig('healthy', 'full', 'canary_cores'):.2f} cores at full load "
        f"({fig('healthy', 'paced', 'canary_cores'):.2f} paced) and the stable got "
        f"{fig('healthy', 'full', 'stable_cores'):.2f} cores (off: "
        f"{fig('off', 'full', 'stable_cores'):.2f}, so "
        f"{fig('healthy', 'full', 'stable_cores') / fig('off', 'full', 'stable_cores') - 1:+.0%}"
        "). With its CPU per request "
        f"x{fig('healthy', 'full', 'stable_cpu_us_per_req') / base_cpu:.2f}, that predicts "
        f"{predicted:+.0%} req/s; measured "
        f"{fig('healthy', 'full', 'rps') / full_off - 1:+.0%}. In a cluster the canary's pods "
        "have their own CPU; here its work comes out of what the stable and wrk could use.",
        f"- **Bound**: at the paced load, p99 with mirroring on was at most "
        f"{excess:.2f} ms above off (the {worst} canary, medians over "
        f"{which}){within}; "
        "a slow or dead canary adds no waiting, only the CPU of the copies. At saturation "
        "the cost is capacity, not waiting on the canary: req/s falls by up to "
        f"{1 - min(fig(c, 'full', 'rps') for c in ON) / full_off:.0%} (the "
        f"{min(ON, key=lambda c: fig(c, 'full', 'rps'))} canary).",
        f"- **To document**: at a load the stable can carry with its copies (here "
        f"{fig('off', 'paced', 'rps'):,.0f} req/s on one worker), p99 with 100% mirroring "
        f"stays within {max(math.ceil(excess), 1)} ms of mirroring off, whatever the canary "
        "does. Each copy costs the stable's worker about "
        f"{fig('healthy', 'full', 'stable_cpu_us_per_req') - base_cpu:.0f} µs of CPU when the "
        f"canary answers ({fig('dead', 'full', 'stable_cpu_us_per_req') - base_cpu:.0f} µs when "
        "it refuses the connection): during a shadow step the stable needs about "
        f"{fig('healthy', 'full', 'stable_cpu_us_per_req') / base_cpu:.1f}x its CPU for the "
        "same traffic, and the canary its own.",
    ]


def _width(runs: list[dict[str, Any]]) -> float:
    values = [r["p99_ms"] for r in runs]
    return max(values) - min(values)


def _spread(runs: list[dict[str, Any]]) -> str:
    values = [r["p99_ms"] for r in runs]
    return f"{min(values):.2f}-{max(values):.2f} ms"


def _disturbed(run: dict[str, Any], threshold: float) -> bool:
    ours = sum(run[f"{name}_cores"] for name in ("stable", "canary", "wrk", "bench"))
    return bool(run["machine_cores"] - ours > threshold)


def disturbance(raw: dict[str, Any]) -> str:
    runs, threshold = raw["results"], raw["config"]["quiet_cores"]
    again = sum(r.get("attempts", 1) - 1 for r in runs)
    still = sum(_disturbed(r, threshold) for r in runs)
    return (
        f"{again} runs were measured again; {still} of the {len(runs)} runs kept were still "
        "disturbed (marked * under p99 per round)."
    )


def render(raw: dict[str, Any]) -> str:
    meta, config = raw["meta"], raw["config"]
    cells = _cells(raw)
    paced = cells[("off", "paced")]
    stable_argv = " ".join(config["stable_argv"])
    lines = [
        "# Shadow mirroring: the stable server's client latency, mirroring off and on",
        "",
        "Written by `benchmarks/shadow_bench.py` (`make bench-shadow`); this run, exactly:",
        "",
        "```sh",
        meta["command"].strip(),
        "```",
        "",
        f"Run {meta['started']}, {meta['elapsed_s'] / 60:.1f} min, on {meta['nproc']} cores "
        f"({meta['cpu']}), {meta['memory_gib']} GiB, Linux {meta['kernel']}, Python "
        f"{meta['python']}, onnxruntime {meta['onnxruntime']}, {meta['wrk']}; load average "
        f"{meta['loadavg_before']} before, {meta['loadavg_after']} after (a shared machine: "
        "only figures within this run are compared). Server: " + meta["server_source"] + ".",
        "",
        "## Setup",
        "",
        f"- Model: `make_model.py`'s classifier (StandardScaler + RandomForest, 50 trees, 20 "
        f"float features, 3 classes); every request is one row as JSON (`{config['body']}`).",
        f"- Stable server, the same process for every configuration but `no-flag`: "
        f"`{stable_argv}`. `no-flag` is a second process with the same flags, without "
        "`--shadow-config`. The canary: a third process, the same model and flags, on "
        f"127.0.0.1. {config['workers']} worker and 1 intra-op thread each, so stable and "
        "canary could each have a core, as two pods with `cpu: 1` on a 2-core node.",
        "- The shadow configuration file is rewritten between configurations, as the kubelet "
        "rewrites the ConfigMap's (in the operator's own format); after each switch, 1-second "
        "loads run until the stable's counters move as the new target says (compared rows for "
        "`healthy`, timeouts for `slow`, canary errors for `dead`, nothing for `off`).",
        "- `slow`: a listener in the benchmark process that accepts and never answers, the "
        "slowest a canary can be: each copy sent waits out `--shadow-timeout` (1 s). `dead`: a "
        "port nothing listens on (connection refused).",
        f"- Load: wrk, 1 thread, {config['connections']} kept-alive connections, closed loop, "
        f"on the same 2 cores. **paced**: each connection pauses {config['pace_ms']} ms after "
        f"each answer (about {_med(paced, 'rps'):,.0f} req/s, far below capacity); **full**: "
        "no pause, as fast as the stable answers (its worker saturated). "
        f"{config['seconds']:g} s per load, configuration and round; {config['rounds']} rounds, "
        "the order of configurations rotated each round; figures are medians over rounds, "
        "max is the largest of any round, errors and counters are summed.",
        "- The machine is shared (another engineer's tests and cluster run on it): each run "
        f"waited until other processes took at most {config['quiet_cores']:g} cores, and was "
        f"measured again (up to {config['retries']} times) if they took more meanwhile, "
        f"within {config['patience']:g} s in all ({config['patience_used']:.0f} s used). "
        + disturbance(raw),
        "",
        f"## Client latency at a paced load ({config['connections']} connections, "
        f"{config['pace_ms']} ms pause)",
        "",
        *latency_table(cells, "paced", config["quiet_cores"]),
        "",
        f"## Client latency at full load ({config['connections']} connections, no pause)",
        "",
        *latency_table(cells, "full", config["quiet_cores"]),
        "",
        "## What the mirror did, and the CPU it took",
        "",
        "Counters from the stable's `/metrics` (`modeldeploy_shadow_rows_total`, "
        "`modeldeploy_shadow_dropped_total` by reason), read before and after each run; the "
        "share is of the client requests of those runs (one row each). CPU: utime + stime of "
        "each process tree from /proc; cores = CPU seconds / wall seconds; machine = every "
        "process on the machine (/proc/stat); others = machine - stable - canary - wrk - the "
        "benchmark itself: processes of other people on this shared machine.",
        "",
        *cost_table(cells, ["paced", "full"]),
        "",
        "## Reading",
        "",
        *reading(cells, config["quiet_cores"]),
        "",
        "The mirror's own steps for one one-row copy, in-process (no socket; the fastest of "
        "five passes of 2,000; the canary's answer is real bytes from the running canary):",
        "",
        "| step | µs per copy |",
        "| --- | ---: |",
        *(f"| {f['what']} | {f['us']:.1f} |" for f in raw["copy_work"]),
        f"| **sum** | **{sum(f['us'] for f in raw['copy_work']):.1f}** |",
        "",
        "The rest of what a copy costs the stable (the CPU per request above, healthy minus "
        "off) is the exchange itself: the queue, the sender task, the asyncio stream's "
        "writes and reads and their system calls, httptools parsing the answer.",
        "",
        "What the numbers mean: latency is wrk's, from sending a request to its full answer "
        "on a kept-alive connection (a paced connection's pause is not in it). In a closed "
        "loop a slower answer delays the next request, so the full-load tails understate "
        "what an open-loop client would see; the paced load is the one to read for latency, "
        "full load for capacity. Copies still in flight when a run ends are counted in the "
        "next switch's loads, so the shares may miss a few copies.",
    ]
    return "\n".join(lines).rstrip() + "\n"
