"""The Service in front of the serving pods (all tracks, or one track for Gateway API)."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.builders.names import (
    Track,
    child_metadata,
    selector_labels,
    service_name,
)
from modeldeploy.config import OperatorConfig


def build_service(
    md: ModelDeployment,
    track: Track | None = None,
    settings: OperatorConfig | None = None,
    *,
    only: Track | None = None,
) -> dict[str, Any]:
    """The Service selecting the serving pods of ``md`` (of one ``track`` when given).

    The main Service selects every track: it is what in-cluster clients (status.url) and the
    ServiceMonitor use. With Gateway API routing, traffic through the Gateway is split exactly
    by the HTTPRoute over the per-track Services. ``only`` keeps the main Service to one
    track's pods: the rollout keeps it to the stable track unless the canary has traffic."""
    settings = settings or OperatorConfig()
    extra: dict[str, Any] = {}
    if md.spec.service.annotations:
        extra["annotations"] = dict(md.spec.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(md, service_name(md, track), track, **extra),
        "spec": {
            "type": md.spec.service.type,
            "selector": selector_labels(md, track or only),
            "ports": [
                {
                    "name": "http",
                    "port": md.spec.service.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                },
                {
                    "name": "metrics",
                    "port": settings.server_metrics_port,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }
