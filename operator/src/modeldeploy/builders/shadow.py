"""The shadow configuration: where the stable pods mirror a copy of their requests to.

A ConfigMap ``<name>-shadow`` (key ``config.json``) mounted into the stable track's server,
which reads it about every second: turning mirroring on or off rewrites the ConfigMap and
restarts no pod. The canary never mounts it, so it never mirrors onward.
"""

from __future__ import annotations

import json
from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.builders.names import CANARY, child_metadata, name_of, namespace_of, service_name

SHADOW_DIR = "/etc/modeldeploy/shadow"
SHADOW_KEY = "config.json"
SHADOW_CONFIG = f"{SHADOW_DIR}/{SHADOW_KEY}"
"""The file the stable server reads (``--shadow-config``)."""
SHADOW_VOLUME = "shadow"


def shadow_config_name(md: ModelDeployment) -> str:
    return f"{name_of(md)}-shadow"


def canary_url(md: ModelDeployment) -> str:
    """The canary Service's in-cluster address, as the stable pods reach it (namespace-
    qualified, without the cluster domain, which the pods' DNS search path adds)."""
    return f"http://{service_name(md, CANARY)}.{namespace_of(md)}.svc:{md.spec.service.port}"


def shadow_config(target: str | None, percent: int) -> str:
    """The ``config.json`` the stable server reads: an empty target means no mirroring."""
    on = bool(target) and percent > 0
    return json.dumps(
        {"target": target if on else "", "percent": percent if on else 0}, sort_keys=True
    )


def build_shadow_config(md: ModelDeployment, percent: int = 0) -> dict[str, Any]:
    """The ConfigMap of ``md``'s shadow configuration: mirroring ``percent`` % of the stable
    track's requests to the canary Service, or none (0)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(md, shadow_config_name(md)),
        "data": {SHADOW_KEY: shadow_config(canary_url(md) if percent else None, percent)},
    }
