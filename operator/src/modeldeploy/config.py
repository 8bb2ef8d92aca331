"""Operator configuration: flags and environment (``MODELDEPLOY_*``), read once at startup
(not to be confused with ``kopf.OperatorSettings``, kopf's own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DEFAULT_SERVER_IMAGE = "ghcr.io/modeldeploy/modeldeploy-server:0.1.0"
FIELD_MANAGER = "modeldeploy"
DEFAULT_MODEL_SIZE_LIMIT = "2Gi"
"""The fetch's own default: the largest single-file ONNX model protobuf can parse."""


TolerationRule = Literal["Any", "Keyed", "None"]


@dataclass(frozen=True)
class Policy:
    """What a ModelDeployment may ask for beyond the API's own rules: the platform team's
    limits on what an author gets through the operator's identity (``modeldeploy.policy``).

    Empty lists allow anything; the defaults keep every earlier spec valid but two that no
    serving pod needs: the built-in ``system-*`` PriorityClasses and a toleration of every
    taint.
    """

    allowed_images: tuple[str, ...] = ()
    """Registries, repositories or images spec.runtime.image must be under."""
    allowed_service_accounts: tuple[str, ...] = ()
    """ServiceAccounts spec.podTemplate.serviceAccountName may name."""
    allowed_priority_classes: tuple[str, ...] = ()
    """PriorityClasses the pods may use; empty: any but the built-in system-* ones."""
    allow_env_value_from: bool = True
    """Whether runtime.env may read Secrets and ConfigMaps (valueFrom)."""
    allow_load_balancer: bool = True
    """Whether spec.service.type may be LoadBalancer."""
    tolerations: TolerationRule = "Keyed"
    """Any: every toleration; Keyed: each names the taint it tolerates; None: no toleration."""
    max_model_size: str | None = None
    """Largest spec.model.sizeLimit (a Kubernetes quantity); None: no cap."""


@dataclass(frozen=True)
class OperatorConfig:
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
    identity: str = ""
    """This replica's identity: the Lease holder's name and the Events' reporting instance."""
    due_workers: int = 4
    """Due reconciles (a rollout's next step or analysis, a retry) run side by side on at most
    this many threads: a slow Prometheus holds one of them, not every rollout."""
    model_size_limit: str = DEFAULT_MODEL_SIZE_LIMIT
    """Download cap (a Kubernetes quantity) of ModelDeployments without spec.model.sizeLimit."""
    policy: Policy = field(default_factory=Policy)
    """The platform team's limits on what a ModelDeployment may ask for."""
    server_http_port: int = 8080
    server_metrics_port: int = 8082
    extra: dict[str, str] = field(default_factory=dict)
