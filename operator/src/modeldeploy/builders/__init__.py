"""Pure builders: a ModelDeployment (and settings) in, the desired child object out.

Nothing here talks to a cluster; every function is deterministic and table-tested.
"""

from modeldeploy.builders.autoscaler import build_autoscaler
from modeldeploy.builders.deployment import build_deployment, server_concurrency, server_threads
from modeldeploy.builders.disruption import build_disruption_budget
from modeldeploy.builders.names import (
    CANARY,
    STABLE,
    Track,
    deployment_name,
    owner_reference,
    selector_labels,
    service_name,
    standard_labels,
)
from modeldeploy.builders.route import build_route
from modeldeploy.builders.service import build_service
from modeldeploy.builders.shadow import build_shadow_config, canary_url, shadow_config_name

__all__ = [
    "CANARY",
    "STABLE",
    "Track",
    "build_autoscaler",
    "build_deployment",
    "build_disruption_budget",
    "build_route",
    "build_service",
    "build_shadow_config",
    "canary_url",
    "deployment_name",
    "owner_reference",
    "selector_labels",
    "server_concurrency",
    "server_threads",
    "service_name",
    "shadow_config_name",
    "standard_labels",
]
