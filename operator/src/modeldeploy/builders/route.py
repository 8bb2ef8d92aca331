"""The Gateway API HTTPRoute that splits traffic between the stable and the canary track."""

from __future__ import annotations

from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.builders.names import CANARY, STABLE, child_metadata, name_of, service_name

ROUTE_API_VERSION = "gateway.networking.k8s.io/v1"


def build_route(md: ModelDeployment, canary_weight: int) -> dict[str, Any] | None:
    """The HTTPRoute of ``md`` sending ``canary_weight`` percent to the canary track's
    Service and the rest to the stable track's; None without Gateway API routing."""
    routing = md.spec.rollout.traffic_routing
    if routing is None:
        return None
    gateway = routing.gateway_api
    port = md.spec.service.port
    spec: dict[str, Any] = {
        "parentRefs": [dict(ref) for ref in gateway.parent_refs],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": service_name(md, STABLE), "port": port, "weight": 100 - canary_weight},
                    {"name": service_name(md, CANARY), "port": port, "weight": canary_weight},
                ],
            }
        ],
    }
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": ROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": child_metadata(md, name_of(md)),
        "spec": spec,
    }
