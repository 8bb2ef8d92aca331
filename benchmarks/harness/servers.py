"""The servers under test: how each is started, where it listens, what it is asked to do.

Every server listens on 127.0.0.1 only and serves the same ``model.onnx`` as model ``rf``.
The anchors are configured in their favour (no access log, no per-request log line,
inference in the serving process), so a ratio against them is not flattered.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import sys

MODEL_NAME = "rf"
BENCH_DIR = pathlib.Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent


@dataclasses.dataclass
class ServerSpec:
    """One server configuration in the comparison."""

    key: str
    label: str
    argv: list[str]
    port: int
    metrics_port: int | None = None
    cwd: pathlib.Path | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    bodies: tuple[str, ...] | None = None  # None: every body the server answers correctly
    ours: bool = False
    note: str = ""

    @property
    def infer_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/models/{MODEL_NAME}/infer"

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/models/{MODEL_NAME}/ready"

    @property
    def metrics_url(self) -> str | None:
        if self.metrics_port is None:
            return None
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@dataclasses.dataclass
class Settings:
    """What ``run.sh`` passes in through BENCH_* variables."""

    work: pathlib.Path
    port_base: int
    workers: int
    max_batch_size: int
    max_batch_delay_ms: float


def our_server(
    s: Settings, key: str, label: str, offset: int, workers: int, max_batch_size: int
) -> ServerSpec:
    exe = REPO / ".venv" / "bin" / "modeldeploy-server"
    port = s.port_base + offset
    argv = [
        str(exe),
        "--model-name", MODEL_NAME,
        "--model-uri", (s.work / "model" / "model.onnx").as_uri(),
        "--host", "127.0.0.1",
        "--http-port", str(port),
        "--metrics-port", str(port + 1),
        "--workers", str(workers),
        "--max-batch-size", str(max_batch_size),
        "--max-batch-delay-ms", f"{s.max_batch_delay_ms:g}",
    ]  # fmt: skip
    return ServerSpec(key, label, argv, port, metrics_port=port + 1, ours=True)


def mlserver(s: Settings, offset: int) -> ServerSpec:
    folder = s.work / "mlserver-model"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BENCH_DIR / "anchors" / "mlserver_runtime.py", folder)
    shutil.copy(s.work / "model" / "model.onnx", folder)
    port = s.port_base + offset
    (folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": MODEL_NAME,
                "implementation": "mlserver_runtime.OnnxRuntimeModel",
                "parameters": {"uri": "./model.onnx"},
            }
        )
    )
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": port + 1,
                "metrics_port": port + 2,
                # Inference in the serving process, as the kit measured it: the default pool
                # of one worker process adds a hop per request.
                "parallel_workers": 0,
                "debug": False,  # no access log line per request
            }
        )
    )
    exe = s.work / "venv-mlserver" / "bin" / "mlserver"
    return ServerSpec(
        "mlserver",
        "MLServer 1.7.1 + onnxruntime runtime",
        [str(exe), "start", str(folder)],
        port,
        cwd=folder,
        note="1 process (parallel_workers 0), debug off",
    )


def kserve(s: Settings, offset: int) -> ServerSpec:
    port = s.port_base + offset
    argv = [
        str(s.work / "venv-kserve" / "bin" / "python"),
        str(BENCH_DIR / "anchors" / "kserve_server.py"),
        "--model_name", MODEL_NAME,
        "--model_path", str(s.work / "model" / "model.onnx"),
        "--http_port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    return ServerSpec(
        "kserve",
        "KServe 0.21 ModelServer + onnxruntime model",
        argv,
        port,
        note="1 worker, gRPC and latency logging off",
    )


def bare_asgi(s: Settings, offset: int) -> ServerSpec:
    port = s.port_base + offset
    argv = [
        sys.executable, "-m", "uvicorn",
        "--app-dir", str(BENCH_DIR / "anchors"),
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
        "bare_asgi:app",
    ]  # fmt: skip
    return ServerSpec(
        "bare-asgi",
        "bare ASGI calibration (uvicorn + orjson + onnxruntime)",
        argv,
        port,
        env={"MODEL": str(s.work / "model" / "model.onnx")},
        note="1 process; no validation, metrics or errors: a floor, not a product",
    )


def our_server_available() -> str | None:
    """None when our server can be started, else why not."""
    exe = REPO / ".venv" / "bin" / "modeldeploy-server"
    cli = REPO / "serving_image" / "src" / "modeldeploy_server" / "cli.py"
    if not cli.exists():
        return f"{cli.relative_to(REPO)} does not exist yet"
    if not exe.exists():
        return f"{exe.relative_to(REPO)} is not installed (make setup)"
    return None


def all_servers(s: Settings) -> tuple[list[ServerSpec], list[str]]:
    """The configurations to measure, and notes on any that cannot run here."""
    specs: list[ServerSpec] = []
    notes: list[str] = []
    why_not = our_server_available()
    if why_not is None:
        specs.append(
            our_server(
                s,
                "modeldeploy",
                f"modeldeploy ({s.workers} workers, batching on)",
                0,
                s.workers,
                s.max_batch_size,
            )
        )
        nobatch = our_server(
            s,
            "modeldeploy-nobatch",
            f"modeldeploy ({s.workers} workers, batching off)",
            10,
            s.workers,
            1,
        )
        nobatch.bodies = ("json-b1",)
        specs.append(nobatch)
        if s.workers != 1:
            one = our_server(
                s, "modeldeploy-1w", "modeldeploy (1 worker, batching on)", 20, 1, s.max_batch_size
            )
            one.bodies = ("json-b1", "binary-b32")
            specs.append(one)
    else:
        notes.append(f"our server was not measured: {why_not}")
    for key, factory, offset in (("mlserver", mlserver, 30), ("kserve", kserve, 40)):
        if (s.work / f"venv-{key}").exists():
            specs.append(factory(s, offset))
        else:
            notes.append(f"{key} was not measured: benchmarks/.work/venv-{key} is missing")
    specs.append(bare_asgi(s, 50))
    return specs, notes


def server_env(spec: ServerSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.update(spec.env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
