"""Server settings: command-line options over ``MODELDEPLOY_SERVER_<NAME>`` variables over defaults.

Also the pod identity the operator passes in the environment (deployment, track, pod,
namespace), and the CPU budget read from the cgroup so that workers x threads never
exceed the pod's CPU limit.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .fetch import SHA256_PATTERN

ENV_PREFIX = "MODELDEPLOY_SERVER_"
MAX_DEFAULT_WORKERS = 8


class SettingsError(ValueError):
    """A setting has a value the server cannot use; the message names it."""


class ServerSettings(BaseModel):
    """Everything ``modeldeploy-server serve`` can be told."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_name: str | None = Field(None, min_length=1, description="Served as /v2/models/NAME.")
    model_uri: str | None = Field(
        None, description="file://, plain path, pvc://, http(s)://, s3://"
    )
    model_version: str | None = Field(None, min_length=1, description="Informative version.")
    sha256: str | None = Field(None, pattern=SHA256_PATTERN)
    profile_uri: str | None = Field(
        None, min_length=1, description="The model's training profile (model.profile.json)."
    )
    profile_sha256: str | None = Field(None, pattern=SHA256_PATTERN)
    quality_policy: Literal["observe", "reject"] = "observe"
    drift_window: int = Field(1000, ge=10, le=1_000_000, description="values per feature")
    host: str = "0.0.0.0"
    http_port: int = Field(8080, ge=0, le=65535)
    metrics_port: int = Field(8082, ge=0, le=65535)
    threads: int | None = Field(None, ge=1, le=256, description="onnxruntime intra-op threads")
    workers: int | None = Field(None, ge=1, le=64)
    max_batch_size: int = Field(32, ge=1, le=65536, description="rows per batch; 1: off")
    max_batch_delay_ms: float = Field(2.0, ge=0, le=1000)
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    inline_inference_ms: float = Field(1.0, ge=0, le=1000)
    graceful_timeout: float = Field(30.0, ge=0, le=3600)
    drain_delay: float = Field(0.0, ge=0, le=600)
    keep_alive_timeout: float = Field(75.0, gt=0, le=3600)
    max_connections: int = Field(2048, ge=1, le=1_000_000, description="per worker")
    header_timeout: float = Field(10.0, gt=0, le=3600, description="seconds for a request head")
    min_body_rate: int = Field(1024, ge=0, description="bytes/s a request body must keep up")
    max_inflight_body_bytes: int | None = Field(
        None, ge=1024, description="request body bytes held at once per worker"
    )
    worker_heartbeat_timeout: float = Field(10.0, ge=0.5, le=3600)
    max_worker_restarts: int = Field(5, ge=0, le=10_000)
    shadow_config: str | None = Field(
        None, min_length=1, description="JSON file naming the shadow target, polled each second"
    )
    shadow_queue_size: int = Field(256, ge=1, le=1_000_000, description="copies per worker")
    shadow_timeout: float = Field(1.0, gt=0, le=60, description="seconds per mirrored copy")
    shadow_concurrency: int = Field(4, ge=1, le=256, description="copies in flight per worker")
    shadow_tolerance: float = Field(0.01, ge=0, le=2, description="regressors' relative error")
    model_cache_dir: str = str(Path(tempfile.gettempdir()) / "modeldeploy-models")
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False

    @field_validator("sha256", "profile_sha256")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @model_validator(mode="after")
    def _profile_options_need_a_profile(self) -> ServerSettings:
        if self.profile_uri is None:
            if self.profile_sha256 is not None:
                raise ValueError("--profile-sha256 is given without --profile-uri")
            if self.quality_policy == "reject":
                raise ValueError("--quality-policy reject needs a training profile (--profile-uri)")
        return self

    @model_validator(mode="after")
    def _a_whole_request_fits_in_flight(self) -> ServerSettings:
        if (
            self.max_inflight_body_bytes is not None
            and self.max_inflight_body_bytes < self.max_request_bytes
        ):
            raise ValueError(
                "--max-inflight-body-bytes is below --max-request-bytes: a request of the "
                "largest allowed size could never be read"
            )
        return self

    def inflight_body_bytes(self) -> int:
        """The bound on request body bytes a worker holds at once (default: four of the
        largest allowed bodies)."""
        return self.max_inflight_body_bytes or 4 * self.max_request_bytes

    def served_name(self) -> str:
        """The model name, defaulting to the model file's stem."""
        if self.model_name:
            return self.model_name
        stem = PurePosixPath(urlparse(self.model_uri or "").path).stem
        return stem or "model"


def load_settings(
    options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ServerSettings:
    """Merge options given on the command line (None: not given) over the environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in ServerSettings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = raw
    for name, value in options.items():
        if value is not None and name in ServerSettings.model_fields:
            values[name] = value
    try:
        return ServerSettings.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings: its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            field = ".".join(str(part) for part in error["loc"])
            flag = "--" + field.replace("_", "-")
            given = error.get("input")
            problems.append(
                f"{flag} (or {ENV_PREFIX}{field.upper()}): {error['msg']}, got {given!r}"
            )
        raise SettingsError("; ".join(problems)) from None


@dataclass(frozen=True)
class PodIdentity:
    """What the operator tells a pod about itself; used in metric labels and logs."""

    deployment: str
    track: str
    pod: str
    namespace: str

    @classmethod
    def from_env(cls, model_name: str, environ: Mapping[str, str] | None = None) -> PodIdentity:
        """Read ``MODELDEPLOY_DEPLOYMENT_NAME`` / ``_TRACK`` / ``_POD_NAME`` / ``_NAMESPACE``."""
        env = os.environ if environ is None else environ
        return cls(
            deployment=env.get("MODELDEPLOY_DEPLOYMENT_NAME") or model_name,
            track=env.get("MODELDEPLOY_TRACK") or "stable",
            pod=env.get("MODELDEPLOY_POD_NAME", ""),
            namespace=env.get("MODELDEPLOY_NAMESPACE", ""),
        )


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs this process may use: the cgroup quota (v2 or v1) and the affinity mask."""
    limits = [float(len(os.sched_getaffinity(0)))]
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            limits.append(int(quota) / int(period))
    except (OSError, ValueError):
        for directory in ("cpu", "cpu,cpuacct"):
            try:
                quota_us = int((cgroup_root / directory / "cpu.cfs_quota_us").read_text())
                period_us = int((cgroup_root / directory / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota_us > 0 and period_us > 0:
                limits.append(quota_us / period_us)
            break
    return min(limits)


def plan_processes(
    workers: int | None, threads: int | None, cpus: float
) -> tuple[int, int, str | None]:
    """Workers and intra-op threads per worker, so that workers x threads <= CPUs.

    Returns a warning when explicit settings oversubscribe the CPU budget.
    """
    cores = max(1, math.floor(cpus))
    if workers is None:
        # Each worker holds its own copy of the model: on a big node without a CPU limit,
        # a few workers with more threads each beat one worker per core.
        workers = max(1, cores // threads) if threads else min(cores, MAX_DEFAULT_WORKERS)
    if threads is None:
        threads = max(1, cores // workers)
    warning = None
    if workers * threads > max(cores, 1):
        warning = (
            f"{workers} workers x {threads} threads exceed the CPU budget of {cpus:g}: "
            "expect contention; lower --workers or --threads"
        )
    return workers, threads, warning
