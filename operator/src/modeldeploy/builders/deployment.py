"""The serving Deployment of one track: fetch the model in an init container, then serve it."""

from __future__ import annotations

import math
from typing import Any

from modeldeploy.api import ModelDeployment, parse_quantity
from modeldeploy.api.workload import Shutdown, reserved_env_name
from modeldeploy.builders.names import (
    STABLE,
    Track,
    child_metadata,
    deployment_name,
    name_of,
    namespace_of,
    selector_labels,
    standard_labels,
)
from modeldeploy.builders.shadow import (
    SHADOW_CONFIG,
    SHADOW_DIR,
    SHADOW_VOLUME,
    shadow_config_name,
)
from modeldeploy.config import OperatorConfig

MODEL_DIR = "/models"
MODEL_FILE = "model.onnx"
PROFILE_FILE = "model.profile.json"
PVC_ROOT = "/mnt/pvc"
RUN_AS = 10001
DEFAULT_REQUESTS = {"cpu": "500m", "memory": "512Mi"}
GRACE_MARGIN = 5
"""Seconds of the grace period beyond drain and in-flight timeout (process exit, logs)."""
MODEL_VOLUME_MARGIN = 16 * 2**20
"""Bytes of the model volume beyond the files themselves (filesystem blocks, directory)."""

_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _cpu_cores(md: ModelDeployment) -> int:
    """The CPU the container may use: its limit, else its request, rounded up (at least 1)."""
    runtime = md.spec.runtime
    resources = runtime.resources if runtime else None
    for bucket in (
        resources.limits if resources else None,
        resources.requests if resources else None,
    ):
        if bucket and "cpu" in bucket:
            return max(1, math.ceil(float(parse_quantity(str(bucket["cpu"])))))
    return 1


def server_concurrency(md: ModelDeployment) -> tuple[int, int]:
    """(worker processes, onnxruntime intra-op threads per worker), workers x threads = CPUs.

    Never onnxruntime's own default, which counts the host's cores and oversubscribes a
    container limited to fewer. Small models serve more requests with one thread per worker;
    ``runtime.threads`` trades workers for threads when a model needs them.
    """
    cores = _cpu_cores(md)
    runtime = md.spec.runtime
    if runtime and runtime.threads:
        return max(1, cores // runtime.threads), runtime.threads
    return cores, 1


def server_threads(md: ModelDeployment) -> int:
    """onnxruntime intra-op threads of each worker (see :func:`server_concurrency`)."""
    return server_concurrency(md)[1]


def _resources(md: ModelDeployment) -> dict[str, Any]:
    runtime = md.spec.runtime
    given = runtime.resources if runtime else None
    requests = dict(given.requests) if given and given.requests else dict(DEFAULT_REQUESTS)
    out: dict[str, Any] = {"requests": {k: str(v) for k, v in requests.items()}}
    if given and given.limits:
        out["limits"] = {k: str(v) for k, v in given.limits.items()}
    return out


def _pvc_claim(uri: str) -> str | None:
    if not uri.startswith("pvc://"):
        return None
    return uri.removeprefix("pvc://").split("/", 1)[0]


def _env(md: ModelDeployment, track: Track) -> list[dict[str, Any]]:
    """The server's environment: the operator's variables, then the author's.

    Author entries with a reserved name are dropped, so the operator's values win even for
    an object admitted before the CEL rule existed (server-side apply refuses duplicate
    names outright, and a container would take the last of them). The operator's come
    first so that an author's value may refer to them, e.g. ``$(MODELDEPLOY_TRACK)``:
    Kubernetes expands only variables defined earlier in the list.
    """
    field = [
        ("MODELDEPLOY_POD_NAME", "metadata.name"),
        ("MODELDEPLOY_NAMESPACE", "metadata.namespace"),
    ]
    env: list[dict[str, Any]] = [
        {"name": "MODELDEPLOY_DEPLOYMENT_NAME", "value": name_of(md)},
        {"name": "MODELDEPLOY_TRACK", "value": track},
        *({"name": n, "valueFrom": {"fieldRef": {"fieldPath": p}}} for n, p in field),
    ]
    runtime = md.spec.runtime
    if runtime and runtime.env:
        env += [
            e.model_dump(by_alias=True, exclude_none=True)
            for e in runtime.env
            if not reserved_env_name(e.name)
        ]
    return env


def shutdown_of(md: ModelDeployment) -> Shutdown:
    """The pod's drain and in-flight timeout (the API's defaults when the spec has none)."""
    runtime = md.spec.runtime
    return (runtime.shutdown if runtime else None) or Shutdown()


def grace_period(md: ModelDeployment) -> int:
    """terminationGracePeriodSeconds: longer than the drain plus the in-flight timeout, so
    that the kubelet's SIGKILL never cuts a request the server is still finishing."""
    shutdown = shutdown_of(md)
    return shutdown.drain_seconds + shutdown.timeout_seconds + GRACE_MARGIN


def _server_args(md: ModelDeployment, track: Track, settings: OperatorConfig) -> list[str]:
    model = md.spec.model
    shutdown = shutdown_of(md)
    args = [
        "serve",
        f"--model-name={md.served_model_name}",
        f"--model-uri=file://{MODEL_DIR}/{MODEL_FILE}",
        f"--http-port={settings.server_http_port}",
        f"--metrics-port={settings.server_metrics_port}",
        f"--drain-delay={shutdown.drain_seconds}",
        f"--graceful-timeout={shutdown.timeout_seconds}",
    ]
    workers, threads = server_concurrency(md)
    args += [f"--workers={workers}", f"--threads={threads}"]
    if model.sha256:
        args.append(f"--sha256={model.sha256}")
    if model.version:
        args.append(f"--model-version={model.version}")
    if model.profile is not None:
        # Fetched and verified by the init container beside the model.
        args += [
            f"--profile-uri=file://{MODEL_DIR}/{PROFILE_FILE}",
            f"--quality-policy={model.profile.policy}",
        ]
    batching = md.spec.runtime.batching if md.spec.runtime else None
    if batching:
        args += [
            f"--max-batch-size={batching.max_batch_size}",
            f"--max-batch-delay-ms={batching.max_delay_ms}",
        ]
    if track == STABLE:
        # Only the stable track mirrors (during shadow steps), never the canary.
        args.append(f"--shadow-config={SHADOW_CONFIG}")
    return args


def _source_claims(md: ModelDeployment) -> list[tuple[str, str]]:
    """(volume name, claim) of the PersistentVolumeClaims the model and its profile come from."""
    model = md.spec.model
    claims = [("model-source", _pvc_claim(model.uri))]
    if model.profile is not None:
        claims.append(("profile-source", _pvc_claim(model.profile.uri)))
    found: list[tuple[str, str]] = []
    for volume, claim in claims:
        if claim and claim not in (c for _, c in found):
            found.append((volume, claim))
    return found


def model_size_limit(md: ModelDeployment, settings: OperatorConfig) -> int:
    """Bytes the fetch may download per file: spec.model.sizeLimit or the operator's default."""
    return int(parse_quantity(md.spec.model.size_limit or settings.model_size_limit))


def model_volume_size(md: ModelDeployment, settings: OperatorConfig) -> str:
    """``emptyDir.sizeLimit`` of the model volume: the download cap for each file it holds
    (the model, and the profile when there is one) plus a margin.

    The fetch writes a file beside its final name and renames it, so a file never needs
    twice its space, and a file above the cap fails the fetch (exit 9, a message naming the
    cap) before the kubelet would evict the pod for the volume. The limit bounds what a pod
    may write to the node's disk; it reserves nothing.
    """
    files = 2 if md.spec.model.profile is not None else 1
    size = files * model_size_limit(md, settings) + MODEL_VOLUME_MARGIN
    return f"{size // 2**20}Mi" if size % 2**20 == 0 else str(size)


def _fetch_container(
    md: ModelDeployment, image: str, pull: dict[str, Any], settings: OperatorConfig
) -> dict[str, Any]:
    model = md.spec.model
    args = [
        "fetch",
        f"--model-uri={model.uri}",
        f"--dest={MODEL_DIR}",
        f"--max-bytes={model_size_limit(md, settings)}",
    ]
    if model.sha256:
        args.append(f"--sha256={model.sha256}")
    if model.profile is not None:
        args.append(f"--profile-uri={model.profile.uri}")
        if model.profile.sha256:
            args.append(f"--profile-sha256={model.profile.sha256}")
    mounts: list[dict[str, Any]] = [
        {"name": "model", "mountPath": MODEL_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    for volume, claim in _source_claims(md):
        mounts.append({"name": volume, "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True})
    container: dict[str, Any] = {
        "name": "fetch-model",
        "image": image,
        **pull,
        "args": args,
        "env": [{"name": "MODELDEPLOY_PVC_ROOT", "value": PVC_ROOT}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": _CONTAINER_SECURITY,
        # The fetch's last words (wrong digest, missing object) become the container's
        # termination message, which the ModelDeployment's status quotes.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if model.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": model.credentials_secret}}]
    return container


def _server_container(
    md: ModelDeployment, track: Track, image: str, pull: dict[str, Any], settings: OperatorConfig
) -> dict[str, Any]:
    def probe(path: str, **timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, **timing}

    return {
        "name": "server",
        "image": image,
        **pull,
        "args": _server_args(md, track, settings),
        "env": _env(md, track),
        "ports": [
            {"name": "http", "containerPort": settings.server_http_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": settings.server_metrics_port, "protocol": "TCP"},
        ],
        "resources": _resources(md),
        "startupProbe": probe("/v2/health/ready", periodSeconds=2, failureThreshold=150),
        "readinessProbe": probe("/v2/health/ready", periodSeconds=5, failureThreshold=2),
        "livenessProbe": probe("/v2/health/live", periodSeconds=10, failureThreshold=3),
        "securityContext": _CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "model", "mountPath": MODEL_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *(
                [{"name": SHADOW_VOLUME, "mountPath": SHADOW_DIR, "readOnly": True}]
                if track == STABLE
                else []
            ),
        ],
    }


def _pod_spec(md: ModelDeployment, track: Track, settings: OperatorConfig) -> dict[str, Any]:
    runtime = md.spec.runtime
    image = (runtime.image if runtime else None) or settings.server_image
    pull = (
        {"imagePullPolicy": runtime.image_pull_policy}
        if runtime and runtime.image_pull_policy
        else {}
    )
    volumes: list[dict[str, Any]] = [
        {"name": "model", "emptyDir": {"sizeLimit": model_volume_size(md, settings)}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    for volume, claim in _source_claims(md):
        volumes.append(
            {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
    if track == STABLE:
        # Mounted whether or not a rollout shadows: mirroring on and off then only rewrites
        # the ConfigMap (the kubelet refreshes the file) instead of restarting the stable
        # pods. Optional, so a pod never waits for it: without the file nothing is mirrored.
        volumes.append(
            {
                "name": SHADOW_VOLUME,
                "configMap": {"name": shadow_config_name(md), "optional": True},
            }
        )
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _POD_SECURITY,
        "terminationGracePeriodSeconds": grace_period(md),
        "initContainers": [_fetch_container(md, image, pull, settings)],
        "containers": [_server_container(md, track, image, pull, settings)],
        "volumes": volumes,
    }
    template = md.spec.pod_template
    if template:
        dumped = template.model_dump(by_alias=True, exclude_none=True)
        for key in (
            "nodeSelector",
            "tolerations",
            "affinity",
            "topologySpreadConstraints",
            "serviceAccountName",
            "imagePullSecrets",
            "priorityClassName",
        ):
            if key in dumped:
                spec[key] = dumped[key]
    return spec


def build_deployment(
    md: ModelDeployment,
    track: Track = STABLE,
    settings: OperatorConfig | None = None,
    *,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The Deployment serving ``md`` on ``track``.

    ``replicas`` is left out when an autoscaler owns the pod count (pass None); the rollout
    passes an explicit count for each track during a canary.
    """
    settings = settings or OperatorConfig()
    template = md.spec.pod_template
    pod_labels = {
        **(template.labels if template and template.labels else {}),
        **standard_labels(md, track),
    }
    pod_annotations = {
        **(template.annotations if template and template.annotations else {}),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(settings.server_metrics_port),
        "prometheus.io/path": "/metrics",
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(md, track)},
        "strategy": {
            # Never drop below ready capacity while pods are replaced.
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": pod_annotations},
            "spec": _pod_spec(md, track, settings),
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(md, deployment_name(md, track), track),
        "spec": spec,
    }


def desired_replicas(md: ModelDeployment) -> int | None:
    """The stable Deployment's replicas, or None when the autoscaler owns them."""
    return None if md.spec.autoscaling else md.spec.replicas


__all__ = ["build_deployment", "desired_replicas", "namespace_of", "server_threads"]
