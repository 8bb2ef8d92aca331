"""The local cluster's gateway configuration: Traefik listens only on the bridge's address,
and the Gateway's listener matches one of its entry points (Traefik refuses a listener whose
port no entry point has)."""

from __future__ import annotations

from modeldeploy_dev.cluster.gateway import (
    ENTRY_POINT,
    GATEWAY_NAME,
    GATEWAY_NAMESPACE,
    gateway_objects,
    gateway_programmed,
    traefik_config,
)
from modeldeploy_dev.cluster.network import GATEWAY, GATEWAY_PORT


def test_traefik_listens_on_the_bridge_and_loopback_only() -> None:
    config = traefik_config(ping_port=9000)
    addresses = {name: ep["address"] for name, ep in config["entryPoints"].items()}
    assert addresses == {ENTRY_POINT: f"{GATEWAY}:{GATEWAY_PORT}", "traefik": "127.0.0.1:9000"}
    assert list(config["providers"]) == ["kubernetesGateway"]
    assert config["providers"]["kubernetesGateway"]["statusAddress"] == {"ip": GATEWAY}


def test_the_gateway_listener_matches_an_entry_point_and_admits_every_namespace() -> None:
    kinds = {o["kind"]: o for o in gateway_objects()}
    gateway = kinds["Gateway"]
    assert (gateway["metadata"]["namespace"], gateway["metadata"]["name"]) == (
        GATEWAY_NAMESPACE,
        GATEWAY_NAME,
    )
    (listener,) = gateway["spec"]["listeners"]
    entry_ports = {
        int(ep["address"].rsplit(":", 1)[1])
        for name, ep in traefik_config(9000)["entryPoints"].items()
        if name == ENTRY_POINT
    }
    assert listener["port"] in entry_ports
    assert listener["allowedRoutes"] == {"namespaces": {"from": "All"}}
    assert gateway["spec"]["gatewayClassName"] == kinds["GatewayClass"]["metadata"]["name"]


def test_programmed_reads_the_gateway_condition() -> None:
    programmed = {"status": {"conditions": [{"type": "Programmed", "status": "True"}]}}
    pending = {"status": {"conditions": [{"type": "Programmed", "status": "Unknown"}]}}
    assert gateway_programmed(programmed)
    assert not gateway_programmed(pending)
    assert not gateway_programmed({})
