"""Load and checks: wrk runs, readiness, a correctness check per body, /metrics scrapes."""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable

import numpy as np

from .servers import BENCH_DIR

LUA = BENCH_DIR / "post.lua"
_RESULT = re.compile(r"RESULT (.*)")


@dataclasses.dataclass(frozen=True)
class Body:
    """One request body the load generator sends (from bodies.json)."""

    key: str
    path: pathlib.Path
    content_type: str
    header_length: int | None
    rows: int
    encoding: str

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type}
        if self.header_length is not None:
            headers["Inference-Header-Content-Length"] = str(self.header_length)
        return headers


def benchmark_model(work: pathlib.Path, progress: Callable[[str], None]) -> pathlib.Path:
    """The directory of ``make_model.py``'s model and bodies under ``work``, built on first use."""
    model_dir = work / "model"
    if not (model_dir / "bodies.json").exists():
        progress("building the benchmark model")
        subprocess.run([sys.executable, str(BENCH_DIR / "make_model.py"), str(model_dir)],
                       check=True)  # fmt: skip
    return model_dir


def load_bodies(model_dir: pathlib.Path) -> dict[str, Body]:
    manifest = json.loads((model_dir / "bodies.json").read_text())
    return {
        key: Body(
            key,
            model_dir / entry["file"],
            entry["content_type"],
            entry["header_length"],
            entry["rows"],
            entry["encoding"],
        )
        for key, entry in manifest.items()
    }


def wrk_command(url: str, connections: int, seconds: float) -> list[str]:
    """wrk takes whole seconds only."""
    return [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(LUA), url,
    ]  # fmt: skip


def run_wrk(
    url: str, body: Body, connections: int, seconds: float, pause_ms: int = 0
) -> dict[str, float]:
    """One wrk run; returns requests, rps, p50/p90/p99/max in ms, errors, non2xx.

    ``pause_ms``: each connection waits that long after an answer before its next request,
    which holds the load below what the server can do (the pause is not in the latencies).
    """
    env = dict(os.environ)
    env["BODY_FILE"] = str(body.path)
    env["CONTENT_TYPE"] = body.content_type
    env["HEADER_LENGTH"] = "" if body.header_length is None else str(body.header_length)
    env["PAUSE_MS"] = str(pause_ms)
    done = subprocess.run(
        wrk_command(url, connections, seconds),
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    match = _RESULT.search(done.stdout)
    if match is None:
        raise RuntimeError(f"wrk printed no RESULT line: {done.stdout}\n{done.stderr}")
    raw = dict(field.split("=", 1) for field in match.group(1).split())
    return {
        "requests": int(raw["requests"]),
        "seconds": int(raw["duration_us"]) / 1e6,
        "rps": float(raw["rps"]),
        "p50_ms": int(raw["p50_us"]) / 1000,
        "p90_ms": int(raw["p90_us"]) / 1000,
        "p99_ms": int(raw["p99_us"]) / 1000,
        "max_ms": int(raw["max_us"]) / 1000,
        "errors": int(raw["errors"]),
        "non2xx": int(raw["non2xx"]),
    }


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, parts.path, body=body, headers=headers or {})
        response = conn.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def wait_ready(url: str, alive: Callable[[], bool], timeout: float) -> float:
    """Poll until ``url`` answers 200; returns seconds taken. ``alive()`` false aborts."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not alive():
            raise RuntimeError("exited before it became ready")
        try:
            if request(url)[0] == 200:
                return time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:.0f} s")


def response_labels(headers: dict[str, str], payload: bytes) -> np.ndarray:
    """The ``label`` output of a v2 response, JSON or binary."""
    header_length = headers.get("inference-header-content-length")
    doc = json.loads(payload if header_length is None else payload[: int(header_length)])
    offset = int(header_length or 0)
    for output in doc["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if output["name"] == "label":
            if size is None:
                return np.asarray(output["data"]).reshape(-1)
            return np.frombuffer(payload, dtype="<i8", count=size // 8, offset=offset)
        offset += size or 0
    raise ValueError("no 'label' output in the response")


def check_body(url: str, body: Body, expected: np.ndarray) -> str | None:
    """None when the server answers this body with the right labels, else what went wrong."""
    try:
        status, headers, payload = request(url, "POST", body.path.read_bytes(), body.headers())
    except OSError as exc:
        return f"request failed: {exc}"
    if status != 200:
        return f"HTTP {status}: {payload[:200].decode(errors='replace')}"
    try:
        labels = response_labels(headers, payload)
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable response ({exc}): {payload[:120]!r}"
    if not np.array_equal(labels.astype(np.int64), expected[: body.rows]):
        return f"wrong labels {labels[:8].tolist()} (expected {expected[:8].tolist()})"
    return None


_BUCKET = re.compile(r'^modeldeploy_batch_size_bucket\{(?:.*,)?le="([^"]+)".*\}\s+(\S+)$')
_SUMCOUNT = re.compile(r"^modeldeploy_batch_size_(sum|count)(?:\{.*\})?\s+(\S+)$")


def scrape_batch_sizes(url: str | None) -> dict[str, float]:
    """The ``modeldeploy_batch_size`` histogram (buckets summed over label sets)."""
    if url is None:
        return {}
    try:
        status, _, payload = request(url)
    except OSError:
        return {}
    if status != 200:
        return {}
    out: dict[str, float] = {}
    for line in payload.decode().splitlines():
        if match := _BUCKET.match(line):
            key = f"le={match.group(1)}"
            out[key] = out.get(key, 0.0) + float(match.group(2))
        elif match := _SUMCOUNT.match(line):
            out[match.group(1)] = out.get(match.group(1), 0.0) + float(match.group(2))
    return out


def histogram_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}
