"""The markdown of benchmarks/RESULTS.md."""

from __future__ import annotations

from typing import Any

from . import load, report
from .report import KSERVE, MLSERVER, NOBATCH, OURS, _f
from .servers import REPO

URL = "http://127.0.0.1:PORT/v2/models/rf/infer"
BODY_TITLES = {
    "json-b1": "single row, JSON",
    "json-b32": "batch 32, JSON",
    "binary-b1": "single row, binary tensor extension",
    "binary-b32": "batch 32, binary tensor extension",
}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(raw: dict[str, Any], config: Any) -> str:
    meta, cells = raw["meta"], report.aggregate(raw["results"])
    limits = report.inprocess_limits(raw["inprocess"]) if raw["inprocess"] else {}
    soak = raw["extra"].get("soak")
    labels = {s["key"]: s["label"] for s in raw["servers"]}
    specs = {s["key"]: s for s in raw["servers"]}
    out: list[str] = [
        "# Serving benchmark: modeldeploy vs MLServer, KServe and onnxruntime in-process",
        "",
        f"Measured {meta['started']} by `{meta['command']}` in one session of "
        f"{meta['elapsed_s'] / 60:.0f} minutes. The machine is shared with other builds and tests: "
        "absolute figures are noisy, so every load is run against every server back to back "
        "(order rotating) and only ratios taken within this run are compared. Figures are the "
        f"median of {config.rounds} round(s).",
        "",
        "## Targets",
        "",
    ]
    out += _table(
        ["target", "measured", "verdict"],
        [list(t) for t in report.targets(cells, limits, soak, raw["results"])],
    )
    text = report.analysis_text()
    if text:
        out += [text.rstrip(), ""]
    out += ["## Machine and load", ""]
    out += _table(
        [
            "nproc",
            "CPU",
            "memory",
            "kernel",
            "python",
            "onnxruntime",
            "numpy",
            "MLServer",
            "KServe",
            "wrk",
        ],
        [
            [
                str(meta["nproc"]),
                meta["cpu"],
                f"{meta['memory_gib']} GiB",
                meta["kernel"],
                meta["python"],
                f"{meta['onnxruntime']} (anchors: {meta['onnxruntime_anchor_venvs']})",
                meta["numpy"],
                meta["mlserver"],
                meta["kserve"],
                meta["wrk"],
            ]
        ],
    )
    rounds = ", ".join(raw["extra"].get("loadavg_rounds", []))
    out += [
        f"Load average (1, 5, 15 min): before `{meta['loadavg_before']}`; at the start of each "
        f"round `{rounds}`; after `{meta['loadavg_after']}`.",
        "",
        "## How it was measured",
        "",
        f"- Command: `{meta['command']}` (the Makefile's `bench` target runs "
        "`bash benchmarks/run.sh`). Settings: "
        f"{config.rounds} round(s), {config.seconds:g} s per load, connections "
        f"{', '.join(map(str, config.connections))}, soak {config.soak_seconds:g} s, profile "
        f"{config.profile_seconds:g} s.",
        "- Load: `BODY_FILE=<body> CONTENT_TYPE=<type> [HEADER_LENGTH=<n>] "
        f"{' '.join(load.wrk_command(URL, 0, config.seconds)).replace('-c0', '-cN')}`"
        " with N = the connections; `post.lua` prints requests, req/s and latency "
        "percentiles in microseconds. wrk runs on the same 2 cores as the servers.",
        "- Bodies (`benchmarks/make_model.py`): OIP v2 requests for input `X` FP32 [n, 20], "
        "n = 1 or 32, as JSON and as the binary tensor extension (JSON header + raw rows, "
        "`Inference-Header-Content-Length`, `binary_data_output: true`). Each server's answer to "
        "each body is checked (labels equal onnxruntime's) before it is measured.",
        "- CPU/req: utime+stime of the server's whole process tree (from /proc) during the run, "
        'divided by the requests wrk completed; the last column of "Every run" splits the '
        "machine's busy cores (from /proc/stat) into this server, wrk and everything else (the "
        "other tenants). RSS after each run: the largest worker process, and the whole tree.",
        f"- Our server's code: {meta.get('server_source', 'not recorded')}.",
        "- In-process: `benchmarks/inprocess.py`, `session.run` on a fresh slice per call, "
        "no HTTP; the batch-32 limit is the better of intra-op threads 1 and 0 (default).",
        "",
        "Servers (all on 127.0.0.1, model `rf`, the same model.onnx):",
        "",
    ]
    for spec in raw["servers"]:
        note = f" — {spec['note']}" if spec["note"] else ""
        out.append(f"- **{spec['key']}** ({spec['label']}{note}): `{' '.join(spec['argv'])}`")
    out += [""]
    if raw["notes"]:
        out += ["Not measured:", ""] + [f"- {n}" for n in raw["notes"]] + [""]

    out += [f"## Results (median of {config.rounds} round(s))", ""]
    for body in BODY_TITLES:
        rows = []
        for key in labels:
            for conns in config.connections:
                c = cells.get((key, body, conns))
                if c is None:
                    continue
                lo, hi = c["rps_spread"]
                rows.append(
                    [
                        key,
                        str(conns),
                        _f(c["rps"]),
                        f"{lo:,.0f}-{hi:,.0f}",
                        _f(c["rows_per_s"]),
                        f"{c['p50_ms']:.3f}",
                        f"{c['p99_ms']:.3f}",
                        _f(c["cpu_us_per_req"]),
                        f"{c['rss_worker']:.0f}",
                        f"{c['rss_total']:.0f} ({c['procs']})",
                        str(c["errors"]),
                    ]
                )
        if rows:
            out += [f"### {BODY_TITLES[body]}", ""]
            out += _table(
                [
                    "server",
                    "conns",
                    "req/s",
                    "req/s range",
                    "rows/s",
                    "p50 ms",
                    "p99 ms",
                    "CPU µs/req",
                    "RSS MiB per worker",
                    "RSS MiB all (processes)",
                    "errors+non-2xx",
                ],
                rows,
            )
    if limits:
        out += ["### onnxruntime in-process (no HTTP)", ""]
        out += _table(
            [
                "intra-op threads",
                "single-row p50 µs",
                "p99 µs",
                "rows/s batch 1",
                "rows/s batch 32",
            ],
            [
                [
                    t,
                    _f(_m(raw, t, "p50_us"), ".1f"),
                    _f(_m(raw, t, "p99_us"), ".1f"),
                    _f(_m(raw, t, "rows_per_s_b1")),
                    _f(_m(raw, t, "rows_per_s_b32")),
                ]
                for t in ("threads=1", "threads=0")
            ],
        )
    out += _ratios(cells, limits, config)
    out += _batching(cells, config)
    out += _soak(soak)
    out += _profile(raw["extra"].get("profile"), raw["extra"].get("profile_floor"))
    out += ["## Every run", ""]
    out += _table(
        [
            "round",
            "server",
            "body",
            "conns",
            "req/s",
            "p50 ms",
            "p99 ms",
            "CPU µs/req",
            "cores: server / wrk / others",
        ],
        [
            [
                str(r["round"]),
                r["server"],
                r["body"],
                str(r["conns"]),
                _f(r["rps"]),
                f"{r['p50_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                _f(r["cpu_us_per_req"]),
                _cores(r),
            ]
            for r in raw["results"]
        ],
    )
    _ = specs
    # Paths relative to the repository: the commands read as a reader would type them.
    return "\n".join(out).replace(f"{REPO}/", "")


def _cores(r: dict[str, Any]) -> str:
    if "other_cores" not in r:
        return "-"
    return f"{r['server_cores']:.2f} / {r['wrk_cores']:.2f} / {r['other_cores']:.2f}"


def _m(raw: dict[str, Any], threads: str, field: str) -> float:
    return report._median([r[threads][field] for r in raw["inprocess"]])


def _ratios(cells: dict, limits: dict[str, float], config: Any) -> list[str]:
    rows = []
    for body in BODY_TITLES:
        for conns in config.connections:
            ours = cells.get((OURS, body, conns))
            if ours is None:
                continue
            row = [body, str(conns)]
            for anchor in (MLSERVER, KSERVE):
                a = cells.get((anchor, body, conns))
                row += (
                    [f"{ours['rps'] / a['rps']:.1f}x", f"{a['p99_ms'] / ours['p99_ms']:.1f}x"]
                    if a
                    else ["-", "-"]
                )
            limit = limits.get("b32_rows" if body.endswith("b32") else "b1_rows")
            row.append(f"{ours['rows_per_s'] / limit:.0%}" if limit else "-")
            row.append(f"+{ours['p50_ms'] - limits['p50_ms']:.3f}" if limits else "-")
            rows.append(row)
    if not rows:
        return []
    return [
        "## Ratios (modeldeploy, batching on)",
        "",
        "req/s ratio: ours ÷ anchor (higher is better); p99 ratio: anchor's p99 ÷ ours (higher "
        "is better); rows/s share: ours ÷ in-process rows/s at the same batch size (batch 1: "
        "in-process single-row calls/s); p50 gap: ours - in-process single-row p50.",
        "",
        *_table(
            [
                "body",
                "conns",
                "req/s vs MLServer",
                "p99 vs MLServer",
                "req/s vs KServe",
                "p99 vs KServe",
                "rows/s share of in-process",
                "p50 gap ms",
            ],
            rows,
        ),
    ]


def _batching(cells: dict, config: Any) -> list[str]:
    rows, hist_rows = [], []
    for key, title in ((OURS, "on"), (NOBATCH, "off (max batch size 1)")):
        figures = {c: cells.get((key, "json-b1", c)) for c in config.connections}
        if not any(figures.values()):
            continue
        row = [title]
        for conns in config.connections:
            c = figures[conns]
            row += (
                [
                    _f(c["rps"]),
                    f"{c['p50_ms']:.3f}",
                    f"{c['p99_ms']:.3f}",
                    _f(report.mean_batch(c.get("batch_hist")), ".2f"),
                ]
                if c
                else ["-"] * 4
            )
        rows.append(row)
        if key == OURS:
            for conns in config.connections:
                hist = (figures[conns] or {}).get("batch_hist") or {}
                buckets = sorted(
                    ((float(k[3:]), v) for k, v in hist.items() if k.startswith("le=")),
                )
                counts, previous = [], 0.0
                for bound, cumulative in buckets:
                    if cumulative == previous and cumulative == buckets[-1][1]:
                        break  # nothing in this bucket or above it
                    label = "+Inf" if bound == float("inf") else f"≤{bound:g}"
                    counts.append(f"{label}: {cumulative - previous:,.0f}")
                    previous = cumulative
                if counts:
                    hist_rows.append([str(conns), "; ".join(counts)])
    if not rows:
        return []
    header = ["batching"]
    for conns in config.connections:
        header += [f"c={conns} req/s", "p50 ms", "p99 ms", "mean batch"]
    out = ["## Dynamic batching (single-row JSON)", "", *_table(header, rows)]
    if hist_rows:
        out += [
            "`modeldeploy_batch_size` histogram from the metrics port, batches counted during "
            "the measured runs (all rounds):",
            "",
            *_table(["conns", "batches per size bucket"], hist_rows),
        ]
    return out


def _soak(soak: dict | None) -> list[str]:
    if not soak:
        return []
    samples = soak["samples"]
    names = report.soak_processes(soak)
    step = max(1, len(samples) // 12)
    picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    rows = [[f"{t:.0f}", *(_f(rss.get(n), ".1f") for n in names)] for t, rss in picked]
    runs = soak["runs"]
    measured, verdict = report.soak_verdict(soak)
    total = sum(r["requests"] for r in runs)
    return [
        "## Memory soak (modeldeploy, 64 connections, bodies cycled)",
        "",
        f"{soak['seconds']:.0f} s, {total:,} requests, "
        f"{sum(r['errors'] + r['non2xx'] for r in runs)} errors+non-2xx. {measured}: {verdict}.",
        "",
        "RSS MiB per process over time:",
        "",
        *_table(["t s", *names], rows),
    ]


def _components(profile: dict, floor: dict | None) -> list[str]:
    total = max(profile["samples"], 1)
    per_req = profile["cpu_us_per_req"]
    floor_us: dict[str, float] = {}
    if floor and "skipped" not in floor:
        floor_total = max(floor["samples"], 1)
        floor_us = {
            c: n / floor_total * floor["cpu_us_per_req"] for c, n in floor.get("components", [])
        }
    names = [c for c, _ in profile.get("components", [])]
    names += [c for c in floor_us if c not in names]
    ours = dict(profile.get("components", []))
    rows = [
        [c, f"{ours.get(c, 0) / total:.1%}", f"{ours.get(c, 0) / total * per_req:.1f}",
         _f(floor_us.get(c), ".1f") if floor_us else "-"]
        for c in names
    ]  # fmt: skip
    rows.append(
        ["**total (CPU per request)**", "100%", f"**{per_req:.1f}**",
         f"**{floor['cpu_us_per_req']:.1f}**" if floor_us and floor else "-"]
    )  # fmt: skip
    return _table(["component", "share (ours)", "ours µs/req", "calibration floor µs/req"], rows)


def _profile(profile: dict | None, floor: dict | None = None) -> list[str]:
    if not profile:
        return []
    if "skipped" in profile:
        return ["## Profile", "", f"Skipped: {profile['skipped']}", ""]
    total = max(profile["samples"], 1)
    per_req = profile["cpu_us_per_req"]
    floor_text = (
        f" The same was done to the bare ASGI calibration app ({floor['rps']:,.0f} req/s under "
        f"the profiler, {floor['cpu_us_per_req']:.0f} CPU µs/req), for the last column."
        if floor and "skipped" not in floor
        else ""
    )

    def rows(pairs: list) -> list[list[str]]:
        return [
            [f"`{frame}`", f"{n / total:.1%}", f"{n / total * per_req:.1f}"] for frame, n in pairs
        ]

    return [
        "## Profile (modeldeploy under load, py-spy)",
        "",
        f"`{profile['command']}` while wrk drove {profile['body']} at c={profile['conns']} for "
        f"{profile['seconds']:g} s ({profile['rps']:,.0f} req/s under the profiler, "
        f"{per_req:.0f} CPU µs/req; {profile['samples']:,} samples of active stacks). "
        f"µs/req = the frame's share of samples x CPU per request.{floor_text}",
        "",
        "Self time by component (a frame's self time includes the C code it calls, e.g. "
        "orjson inside the codec; `Runner.run` self time is uvloop's own C code: socket reads, "
        "writes and scheduling):",
        "",
        *_components(profile, floor),
        "Top frames by self time (the code that is running):",
        "",
        *_table(["frame", "self share", "µs/req"], rows(profile["self"][:15])),
        "Top frames by inclusive time (process start-up frames left out):",
        "",
        *_table(["frame", "inclusive share", "µs/req"], rows(profile["inclusive"][:25])),
    ]
