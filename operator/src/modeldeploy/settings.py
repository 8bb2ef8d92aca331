"""Operator configuration: flags and environment (``MODELDEPLOY_*``), read once at startup."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_SERVER_IMAGE = "ghcr.io/modeldeploy/modeldeploy-server:0.1.0"
FIELD_MANAGER = "modeldeploy"
DEFAULT_MODEL_SIZE_LIMIT = "2Gi"
"""The fetch's own default: the largest single-file ONNX model protobuf can parse."""


@dataclass(frozen=True)
class OperatorSettings:
    """What the operator needs to know beyond the ModelDeployments themselves."""

    server_image: str = DEFAULT_SERVER_IMAGE
    """Serving image used when a ModelDeployment does not name one."""
    prometheus_address: str | None = None
    """Prometheus used by canary analysis when a ModelDeployment does not name one."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all namespaces."""
    field_manager: str = FIELD_MANAGER
    """Server-side apply field manager of every object the operator writes."""
    resync_seconds: float = 120
    """Interval of the periodic pass over every ModelDeployment (a safety net for lost events)."""
    metrics_address: str | None = None
    """host:port of the operator's Prometheus metrics (``/metrics``); None to disable."""
    peering: str | None = None
    """Name of the kopf peering object shared by the replicas; None when standalone."""
    identity: str = ""
    """This replica's identity in the peering object."""
    priority: int = 0
    """This replica's peering priority: the live replica with the highest one acts."""
    model_size_limit: str = DEFAULT_MODEL_SIZE_LIMIT
    """Download cap (a Kubernetes quantity) of ModelDeployments without spec.model.sizeLimit."""
    server_http_port: int = 8080
    server_metrics_port: int = 8082
    extra: dict[str, str] = field(default_factory=dict)
