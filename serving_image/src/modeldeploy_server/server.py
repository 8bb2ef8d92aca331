"""The one wiring place: settings in, supervisor and workers out.

``serve`` runs in the supervisor process; ``worker_entry`` is the target of each spawned
worker and builds that worker's metrics, data plane, runtime and HTTP app.
"""

from __future__ import annotations

import asyncio
import logging
import os
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .fetch import redact_uri
from .http_limits import ConnectionLimits
from .logs import LimitWarnings, configure_logging
from .settings import PodIdentity, ServerSettings, cpu_limit, plan_processes
from .supervisor import Supervisor, SupervisorOptions

log = logging.getLogger(__name__)


def _log_context(
    settings: ServerSettings, identity: PodIdentity, worker: int | None
) -> dict[str, Any]:
    return {
        "deployment": identity.deployment,
        "track": identity.track,
        "pod": identity.pod,
        "namespace": identity.namespace,
        "worker": worker,
    }


def serve(settings: ServerSettings) -> int:
    """Run the server until SIGTERM; returns the exit code."""
    name = settings.served_name()
    identity = PodIdentity.from_env(name)
    configure_logging(
        settings.log_format, settings.log_level, _log_context(settings, identity, None)
    )
    cpus = cpu_limit()
    workers, threads, warning = plan_processes(settings.workers, settings.threads, cpus)
    if warning:
        log.warning(warning)
    log.info(
        "starting",
        extra={
            "fields": {
                "model": name,
                "uri": redact_uri(settings.model_uri or ""),
                "cpu_limit": cpus,
                "workers": workers,
                "threads_per_worker": threads,
                "max_batch_size": settings.max_batch_size,
                "max_batch_delay_ms": settings.max_batch_delay_ms,
                "profile_uri": redact_uri(settings.profile_uri) if settings.profile_uri else None,
                "quality_policy": settings.quality_policy if settings.profile_uri else None,
            }
        },
    )
    supervisor = Supervisor(
        SupervisorOptions(
            workers=workers,
            host=settings.host,
            http_port=settings.http_port,
            metrics_port=settings.metrics_port,
            deployment=identity.deployment,
            track=identity.track,
            shutdown_budget=settings.drain_delay + settings.graceful_timeout + 10.0,
            header_timeout=settings.header_timeout,
            keep_alive_timeout=settings.keep_alive_timeout,
            heartbeat_timeout=settings.worker_heartbeat_timeout,
            max_restarts=settings.max_worker_restarts,
        ),
        worker_target=worker_entry,
        # Workers bind the port the supervisor reserved (the real one when 0 was asked).
        worker_args=lambda index, port: (
            settings.model_copy(update={"http_port": port}),
            index,
            threads,
        ),
        resolve_model=lambda: resolve_model(settings),
    )
    return supervisor.run()


def resolve_model(settings: ServerSettings) -> tuple[str, Any]:
    """("load", {"model": path, "profile": path or None}) once the files are local, or
    ("fail", reason). A remote model or profile is downloaded once, here."""
    from .fetch import FetchError, fetch, local_path

    files: dict[str, str | None] = {"model": None, "profile": None}
    for what, uri, sha256, suffix in (
        ("model", settings.model_uri or "", settings.sha256, "onnx"),
        ("profile", settings.profile_uri, settings.profile_sha256, "profile.json"),
    ):
        if not uri:
            continue
        try:
            path = local_path(uri)
            if path is None:
                digest = (sha256 or "unverified")[:16]
                path = fetch(
                    uri,
                    Path(settings.model_cache_dir),
                    sha256=sha256,
                    filename=f"{settings.served_name()}-{digest}.{suffix}",
                    what=what,
                )
        except FetchError as exc:
            name = "model" if what == "model" else "training profile"
            return "fail", f"cannot fetch the {name} ({exc.kind}): {exc}"
        files[what] = str(path)
    return "load", files


def worker_entry(
    settings: ServerSettings,
    index: int,
    threads: int,
    control: Connection,
    heartbeat: Any,
    replacement: bool,
) -> None:
    """Process target of one worker (``replacement``: started in place of a dead one)."""
    from .worker import WorkerOptions, run_worker

    name = settings.served_name()
    identity = PodIdentity.from_env(name)
    configure_logging(
        settings.log_format, settings.log_level, _log_context(settings, identity, index)
    )
    options = WorkerOptions(
        host=settings.host,
        port=settings.http_port,
        drain_delay=settings.drain_delay,
        graceful_timeout=settings.graceful_timeout,
        keep_alive_timeout=settings.keep_alive_timeout,
        access_log=settings.access_log,
        limits=connection_limits(settings),
        heartbeat_interval=min(1.0, settings.worker_heartbeat_timeout / 4),
        listen_once_loaded=replacement,
    )
    code = run_worker(options, control, heartbeat, lambda: build_worker(settings, index, threads))
    logging.shutdown()
    # Exit now: an inference thread still running after the grace period must not hold
    # the process (threads cannot be interrupted; the interpreter would wait for them).
    os._exit(code)


def connection_limits(settings: ServerSettings) -> ConnectionLimits:
    """The connection limits of the inference port."""
    return ConnectionLimits(
        max_connections=settings.max_connections,
        header_timeout=settings.header_timeout,
        min_body_rate=float(settings.min_body_rate),
    )


def build_worker(settings: ServerSettings, index: int, threads: int) -> Any:
    """Metrics, data plane, runtime and HTTP app of one worker, with its callbacks."""
    from .dataplane import BatchingOptions, DataPlane, ModelIdentity, ModelSlot
    from .metrics import WorkerMetrics
    from .profile import ProfileError, read_profile
    from .quality import QualityOptions
    from .rest import RestApp
    from .runtime.onnx import OnnxModel
    from .worker import WorkerCallbacks

    name = settings.served_name()
    warnings = LimitWarnings(logging.getLogger("modeldeploy_server.limits"))
    metrics = WorkerMetrics(index, warnings.counts)
    dataplane = DataPlane(
        ModelSlot(name, settings.model_version),
        metrics,
        BatchingOptions(
            max_batch_size=settings.max_batch_size,
            max_delay=settings.max_batch_delay_ms / 1000.0,
            inline_threshold=settings.inline_inference_ms / 1000.0,
        ),
        QualityOptions(policy=settings.quality_policy, window=settings.drift_window),
    )
    dataplane.peers_ready = False  # until the supervisor says every worker has the model
    mirror = build_mirror(settings, name, metrics)
    dataplane.mirror = mirror
    app = RestApp(
        dataplane,
        metrics,
        max_request_bytes=settings.max_request_bytes,
        max_inflight_body_bytes=settings.inflight_body_bytes(),
        warnings=warnings,
    )
    identity = ModelIdentity(
        uri=redact_uri(settings.model_uri or ""),
        sha256=settings.sha256 or "",
        version=settings.model_version or "",
    )
    tasks: set[asyncio.Task[None]] = set()

    def control(message: Any) -> Any:
        kind, value = message
        if kind == "snapshot":
            return value, metrics.snapshot()
        if kind == "state":
            return value, dataplane.slot.state.value
        if kind == "peers-ready":
            dataplane.peers_ready = True
        if kind == "load":
            profile = None
            if value["profile"] is not None:
                try:
                    profile = read_profile(Path(value["profile"]), sha256=settings.profile_sha256)
                except ProfileError as exc:
                    where = redact_uri(settings.profile_uri or "")
                    dataplane.fail(f"training profile {where}: {exc}")
                    return None
            model = OnnxModel(
                name,
                Path(value["model"]),
                version=settings.model_version,
                sha256=settings.sha256,
                threads=threads,
            )
            task = asyncio.get_running_loop().create_task(dataplane.load(model, identity, profile))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif kind == "fail":
            dataplane.fail(value)
        return None

    def close() -> None:
        if mirror is not None:
            mirror.stop()
        dataplane.close()

    return WorkerCallbacks(
        app=app,
        start=mirror.start if mirror is not None else lambda: None,
        control=control,
        drain=dataplane.start_draining,
        close=close,
        warnings=warnings,
        loaded=dataplane.settled,
    )


def build_mirror(settings: ServerSettings, name: str, metrics: Any) -> Any:
    """The shadow mirror of one worker, when ``--shadow-config`` is given on the stable track.

    A canary never mirrors: a copy it receives carries the shadow header, and its own client
    traffic (after a shadow step) must not be sent to itself.
    """
    if not settings.shadow_config:
        return None
    from .shadow import ShadowMirror, ShadowOptions
    from .shadow_metrics import ShadowTally

    if PodIdentity.from_env(name).track == "canary":
        log.warning("--shadow-config is ignored on the canary track: a canary never mirrors")
        return None
    metrics.shadow = ShadowTally(name)
    options = ShadowOptions(
        config_path=settings.shadow_config,
        queue_size=settings.shadow_queue_size,
        timeout=settings.shadow_timeout,
        concurrency=settings.shadow_concurrency,
        tolerance=settings.shadow_tolerance,
    )
    return ShadowMirror(options, metrics.shadow)
