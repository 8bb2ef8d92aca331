"""What the hardening of issue 16 changed, measured: the server and ``fetch`` under the hostile
loads the issue describes, the current code beside a baseline commit.

Usage: .venv/bin/python benchmarks/hardening.py [--baseline REF] [--rounds 3] [--out FILE]

The baseline's server package is taken from ``git archive REF`` into benchmarks/.work/ and
run with the same interpreter and dependencies (``python -m modeldeploy_server`` with that
package first on PYTHONPATH), so only our code differs. Every server and source listens on
127.0.0.1; every load is bounded in count and time. Prints a Markdown table (and writes it
to ``--out``); the recorded figures are in HARDENING.md. About 5 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import onnx_models  # noqa: E402

ROW = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One server process of one code version; its log as parsed JSON lines."""

    def __init__(self, code: Path | None, model: Path, *args: str, nofile: int | None = None):
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if code is not None:
            env["PYTHONPATH"] = str(code)
        self.log_file = tempfile.NamedTemporaryFile(suffix=".log", delete=False)  # noqa: SIM115
        limit = (
            (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
            if nofile
            else None
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modeldeploy_server", "--model-name", "m",
             "--model-uri", str(model), "--host", "127.0.0.1", "--http-port", str(self.port),
             "--metrics-port", str(self.metrics_port), *args],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=env, preexec_fn=limit,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/v2/health/ready", timeout=1).ok:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return Path(self.log_file.name).read_text(errors="replace")

    def entries(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def workers(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if (
                    int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid
                    and b"spawn_main" in (entry / "cmdline").read_bytes()
                ):
                    pids.append(int(entry.name))
        return sorted(pids)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        Path(self.log_file.name).unlink(missing_ok=True)


@contextlib.contextmanager
def running(code: Path | None, model: Path, *args: str, **kwargs: Any) -> Iterator[Server]:
    server = Server(code, model, *args, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def timed_posts(url: str, count: int, timeout: float = 5) -> str:
    latencies, failed = [], 0
    for _ in range(count):
        started = time.monotonic()
        try:
            ok = requests.post(url + "/v2/models/m/infer", json=ROW, timeout=timeout).ok
        except requests.RequestException:
            ok = False
        latencies.append(time.monotonic() - started)
        failed += not ok
    latencies.sort()
    return (f"{count - failed}/{count} ok, p50 {ms(statistics.median(latencies))}, "
            f"max {ms(latencies[-1])}")  # fmt: skip


def slow_connections(code: Path | None, models: dict[str, Path]) -> dict[str, str]:
    with running(code, models["classifier"], "--workers", "1", nofile=400) as server:
        alone = timed_posts(server.url, 50)
        head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n{"
        kinds = [b"", b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n", head]
        held = []
        try:
            for index in range(500):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(kinds[index % 3])
                held.append(sock)
            crowded = timed_posts(server.url, 50)
        finally:
            for sock in held:
                sock.close()
    return {
        "normal requests, new connection each (400 open files)": alone,
        "the same with 500 slow connections open": crowded,
    }


def probes_during_big_decodes(code: Path | None, models: dict[str, Path]) -> str:
    with running(code, models["classifier"], "--workers", "1") as server:
        rows = 800_000
        body = orjson.dumps({"inputs": [{"name": "X", "shape": [rows, 4], "datatype": "FP32",
                                          "data": [0.5] * (rows * 4)}],
                             "outputs": [{"name": "label"}]})  # fmt: skip

        def big() -> None:
            for _ in range(2):
                requests.post(server.url + "/v2/models/m/infer", data=body, timeout=120)

        senders = [threading.Thread(target=big) for _ in range(3)]
        for sender in senders:
            sender.start()
        latencies: list[float] = []
        while any(s.is_alive() for s in senders) and len(latencies) < 5000:
            started = time.monotonic()
            requests.get(server.url + "/v2/health/live", timeout=60)
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
        for sender in senders:
            sender.join(120)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)]
        return f"p50 {ms(statistics.median(latencies))}, p99 {ms(p99)}, max {ms(latencies[-1])}"


def refusals(code: Path | None, models: dict[str, Path]) -> dict[str, str]:
    count = 4_000_000
    tail = struct.pack("<I", 0) * count
    tensor = {"name": "X", "shape": [count // 4, 4], "datatype": "BYTES",
              "parameters": {"binary_data_size": len(tail)}}  # fmt: skip
    header = orjson.dumps({"inputs": [tensor]})
    cases = {
        "4 M BYTES elements for an FP32 input": (
            header + tail, {"Inference-Header-Content-Length": str(len(header))}),
        "400 k inputs": (orjson.dumps({"inputs": [
            {"name": f"x{i}", "shape": [1], "datatype": "FP32", "data": [0]}
            for i in range(400_000)]}), {}),
        "2 M requested outputs": (orjson.dumps(
            {**ROW, "outputs": [{"name": f"o{i}"} for i in range(2_000_000)]}), {}),
    }  # fmt: skip
    results = {}
    with running(code, models["classifier"], "--workers", "1") as server:
        for name, (body, headers) in cases.items():
            times = []
            for _ in range(3):
                started = time.monotonic()
                response = requests.post(server.url + "/v2/models/m/infer", data=body,
                                         headers=headers, timeout=120)  # fmt: skip
                times.append(time.monotonic() - started)
                assert response.status_code == 400, response.text
            results[f"refuse {name}"] = f"{ms(statistics.median(times))} (400)"
    return results


def worker_loss(code: Path | None, models: dict[str, Path]) -> dict[str, str]:
    return {
        f"{how} one of two workers under load": _lose_a_worker(code, models, how)
        for how in ("SIGKILL", "SIGSTOP")
    }


def _lose_a_worker(code: Path | None, models: dict[str, Path], how: str) -> str:
    with running(code, models["classifier"], "--workers", "2") as server:
        victim = server.workers()[0]
        counts = {"ok": 0, "failed": 0}
        stop = threading.Event()

        def load() -> None:
            for _ in range(20_000):
                if stop.is_set():
                    return
                try:
                    r = requests.post(server.url + "/v2/models/m/infer", json=ROW, timeout=5)
                    counts["ok" if r.ok else "failed"] += 1
                except requests.RequestException:
                    counts["failed"] += 1

        clients = [threading.Thread(target=load) for _ in range(3)]
        for client in clients:
            client.start()
        time.sleep(1)
        started = time.monotonic()
        os.kill(victim, getattr(signal, how))
        back = None
        while time.monotonic() - started < 60 and server.process.poll() is None:
            pids = server.workers()
            ready = sum(e.get("message") == "model ready" for e in server.entries())
            if victim not in pids and len(pids) == 2 and ready >= 3:
                back = time.monotonic() - started
                break
            time.sleep(0.05)
        served_before = counts["ok"]
        time.sleep(2)
        stop.set()
        for client in clients:
            client.join(30)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        ok, failed = counts["ok"], counts["failed"]
        if server.process.poll() is not None:
            return f"server exited ({server.process.returncode}); {failed} requests failed"
        if back is None:
            return f"not replaced within 60 s; {failed} failed, {ok} ok"
        return (f"replaced after {ms(back)}; {failed} failed, {ok} ok "
                f"({ok - served_before} in the 2 s after)")  # fmt: skip


def fetch_drip(code: Path | None) -> str:
    class Drip(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(30):
                    time.sleep(1)
                    self.wfile.write(b"x")
                    self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    source = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    source.daemon_threads = True
    threading.Thread(target=source.serve_forever, daemon=True).start()
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    with tempfile.TemporaryDirectory() as dest:
        started = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "modeldeploy_server", "fetch", "--model-uri",
                 f"http://127.0.0.1:{source.server_address[1]}/m.onnx", "--dest", dest,
                 "--timeout", "3", "--attempts", "1"],
                capture_output=True, env=env, timeout=20,
            )  # fmt: skip
            outcome = f"stopped after {ms(time.monotonic() - started)} (exit {result.returncode})"
        except subprocess.TimeoutExpired:
            outcome = "still downloading after 20 s"
    source.shutdown()
    return outcome


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(code: Path | None, models: dict[str, Path], body_file: Path) -> str:
    """Requests/s and the worker's CPU per request under wrk (16 connections, 8 s)."""
    with running(code, models["classifier"], "--workers", "1") as server:
        worker = server.workers()[0]
        env = {**os.environ, "BODY_FILE": str(body_file)}
        before = _cpu_seconds(worker)
        out = subprocess.run(
            ["wrk", "-t1", "-c16", "-d8s", "-s", str(REPO / "benchmarks" / "post.lua"),
             server.url + "/v2/models/m/infer"],
            capture_output=True, text=True, env=env, timeout=60,
        ).stdout  # fmt: skip
        cpu = _cpu_seconds(worker) - before
        done = next((ln.split()[0] for ln in out.splitlines() if "requests in" in ln), "0")
        rate = next(
            (ln.split()[-1] for ln in out.splitlines() if ln.startswith("Requests/sec")), "?"
        )
        if not int(done):
            return "n/a"
        return f"{float(rate):.0f} req/s, {cpu / int(done) * 1e6:.0f} us CPU/request"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git ref of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the throughput check")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = REPO / "benchmarks" / ".work" / "hardening"
    work.mkdir(parents=True, exist_ok=True)
    models = {
        "classifier": onnx_models.make_classifier(work / "classifier.onnx"),
    }
    codes: dict[str, Path | None] = {"current": None}
    if args.baseline:
        target = work / "baseline"
        subprocess.run(["rm", "-rf", str(target)], check=True)
        target.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.baseline, "serving_image/src"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        codes = {f"baseline ({args.baseline})": target / "serving_image" / "src", **codes}
    body_file = work / "row.json"
    body_file.write_bytes(orjson.dumps(ROW))
    rows: dict[str, dict[str, str]] = {}

    def record(name: str, code_name: str, value: str) -> None:
        rows.setdefault(name, {})[code_name] = value
        print(f"{name} [{code_name}]: {value}", file=sys.stderr, flush=True)

    scenarios: list[tuple[str, Callable[[Path | None], Any]]] = [
        ("slow connections", lambda code: slow_connections(code, models)),
        ("liveness probe during 3x2 decodes of 17 MB JSON",
         lambda code: probes_during_big_decodes(code, models)),
        ("refusals", lambda code: refusals(code, models)),
        ("worker loss", lambda code: worker_loss(code, models)),
        ("fetch of a 1 byte/s drip with --timeout 3", fetch_drip),
    ]  # fmt: skip
    for name, scenario in scenarios:
        for code_name, code in codes.items():
            try:
                value = scenario(code)
            except Exception as exc:  # a baseline may fail where the current code does not
                value = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
            for key, text in value.items() if isinstance(value, dict) else [(name, value)]:
                record(key, code_name, text)
    for round_no in range(args.rounds):
        for code_name, code in codes.items():
            record(f"throughput, round {round_no + 1} (wrk -c16, 1-row JSON, 1 worker)",
                   code_name, throughput(code, models, body_file))  # fmt: skip
    names = list(codes)
    lines = ["| scenario | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(values.get(n, "") for n in names) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
