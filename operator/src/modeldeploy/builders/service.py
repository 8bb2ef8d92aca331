"""The Service in front of the serving pods (all tracks, or one track for Gateway API)."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.builders.names import (
    STABLE,
    Track,
    child_metadata,
    selector_labels,
    service_name,
)
from modeldeploy.settings import OperatorSettings


def build_service(
    md: ModelDeployment, track: Track | None = None, settings: OperatorSettings | None = None
) -> dict[str, Any]:
    """The Service selecting the serving pods of ``md`` (of one ``track`` when given).

    With Gateway API routing the main Service selects the stable track only: the HTTPRoute
    alone decides how much traffic the canary gets."""
    settings = settings or OperatorSettings()
    selected = track
    if track is None and md.spec.rollout.traffic_routing is not None:
        selected = STABLE
    extra: dict[str, Any] = {}
    if md.spec.service.annotations:
        extra["annotations"] = dict(md.spec.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(md, service_name(md, track), track, **extra),
        "spec": {
            "type": md.spec.service.type,
            "selector": selector_labels(md, selected),
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
