"""The real node's host network: one bridge, routes that keep cluster addresses on this
machine, and a firewall guard.

Pod and Service addresses exist only here. The bridge carries the node's pod range; a
blackhole route for each whole range (pods, Services) sits under the working routes, so that
when the bridge is gone (or kube-proxy is down and nothing rewrites a Service address) a
packet for those ranges is dropped instead of following the default route off the machine.
Forwarded packets from the pods may only go back to the bridge: the guard chain drops any
that would leave through another interface, and the API server's port answers only loopback
and the bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
from dataclasses import dataclass

NODE_NAME = "modeldeploy-node"
POD_CIDR = "10.244.0.0/16"
NODE_POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
BRIDGE = "mdbr0"
# The bridge's address: the pods' gateway, the node's InternalIP and where the API server is
# advertised to pods.
GATEWAY = "10.244.0.1"
API_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
# The Gateway API data plane (Traefik, a host process) listens on the bridge's address.
GATEWAY_PORT = 80
GUARD_CHAIN = "MODELDEPLOY-GUARD"
GUARD_METRIC = 4096

# Chains the kubelet creates and never removes.
KUBELET_CHAINS = (
    ("filter", "KUBE-FIREWALL"),
    ("filter", "KUBE-KUBELET-CANARY"),
    ("nat", "KUBE-KUBELET-CANARY"),
    ("mangle", "KUBE-KUBELET-CANARY"),
)


class NetworkError(RuntimeError):
    """The host network for the real node could not be set up."""


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"`{' '.join(args)}` failed: {result.stderr.strip() or result.stdout}")
    return result


def host_addresses() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The IPv4 networks of this machine's interfaces other than our bridge."""
    out = _run("ip", "-o", "-4", "addr", "show").stdout
    networks = []
    for line in out.splitlines():
        fields = line.split()
        if fields[1] == BRIDGE:
            continue
        networks.append(ipaddress.ip_interface(fields[3]).network)
    return networks


def check_ranges() -> None:
    """Refuse to start when a cluster range overlaps an address this machine already uses."""
    for cidr in (POD_CIDR, SERVICE_CIDR):
        ours = ipaddress.ip_network(cidr)
        for network in host_addresses():
            if network.overlaps(ours) and not network.is_loopback:
                raise NetworkError(
                    f"the cluster range {cidr} overlaps {network} on this machine: "
                    "pods and Services must use addresses that exist nowhere else"
                )


def is_local_address(address: str) -> bool:
    """Whether an interface of this machine holds `address` (bindable), found without sending
    a packet anywhere."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as candidate:
        try:
            candidate.bind((address, 0))
        except OSError:
            return False
    return True


def node_running(port: int = 10250) -> bool:
    """Whether a kubelet already answers on the node's address: the addresses are fixed, so
    one machine holds one local cluster's real node at a time.

    Only probed when the bridge holds the address: without it (and before our blackhole
    routes exist) a connection to it would follow the default route off the machine, and
    some networks accept any connection there, which would look like a running node."""
    if not is_local_address(GATEWAY):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((GATEWAY, port)) == 0


@dataclass(frozen=True)
class HostNetwork:
    """Set up and tear down the bridge, routes, sysctls and guard for one API server port."""

    apiserver_port: int

    def up(self) -> None:
        check_ranges()
        self._sysctl("net.ipv4.ip_forward", "1")
        # Bridged pod-to-Service-to-pod traffic must pass iptables for kube-proxy's rewrite.
        self._sysctl("net.bridge.bridge-nf-call-iptables", "1")
        if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Service addresses go to the bridge (kube-proxy rewrites them on the way); if the
        # bridge disappears, the blackhole routes below are all that is left.
        _run("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", GATEWAY)
        for cidr in (POD_CIDR, SERVICE_CIDR):
            _run("ip", "route", "replace", "blackhole", cidr, "metric", str(GUARD_METRIC))
        self._guard()

    def _guard(self) -> None:
        self._iptables_down()
        _run("iptables", "-w", "-N", GUARD_CHAIN)
        rules = [
            # Pods may reach each other and the host, never anything beyond.
            ["-s", POD_CIDR, "!", "-o", BRIDGE, "-j", "DROP"],
            ["-d", POD_CIDR, "!", "-i", BRIDGE, "-j", "DROP"],
        ]
        for rule in rules:
            _run("iptables", "-w", "-A", GUARD_CHAIN, *rule)
        _run("iptables", "-w", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)
        # The API server listens on every address (pods reach it on the bridge), the gateway
        # on the bridge's: only loopback and the bridge may connect to either.
        api_chain = f"{GUARD_CHAIN}-API"
        _run("iptables", "-w", "-N", api_chain)
        for rule in (["-i", "lo", "-j", "RETURN"], ["-i", BRIDGE, "-j", "RETURN"], ["-j", "DROP"]):
            _run("iptables", "-w", "-A", api_chain, *rule)
        for port in (self.apiserver_port, GATEWAY_PORT):
            _run(
                "iptables", "-w", "-I", "INPUT", "1", "-p", "tcp", "--dport", str(port),
                "-j", api_chain,
            )  # fmt: skip

    @staticmethod
    def _sysctl(key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as handle:
                handle.write(value)
        except OSError as error:
            raise NetworkError(f"cannot set {key}={value}: {error}") from error

    @staticmethod
    def _iptables_down() -> None:
        for chain in (GUARD_CHAIN, f"{GUARD_CHAIN}-API"):
            _remove_chain("filter", chain)

    def down(self) -> None:
        """Remove what ``up`` and the node's components left: bridge, routes, chains.

        The blackhole routes stay: they cost nothing and keep guarding the ranges."""
        self._iptables_down()
        _run("ip", "link", "del", BRIDGE, check=False)
        _run("ip", "route", "del", SERVICE_CIDR, "dev", BRIDGE, check=False)
        for table, chain in KUBELET_CHAINS:
            with contextlib.suppress(NetworkError):
                _remove_chain(table, chain)


def _remove_chain(table: str, chain: str) -> None:
    """Delete every jump to ``chain`` in ``table``, then the chain itself."""
    rules = _run("iptables", "-w", "-t", table, "-S", check=False).stdout.splitlines()
    for rule in rules:
        if rule.startswith("-A ") and f"-j {chain}" in rule:
            _run("iptables", "-w", "-t", table, "-D", *rule.split()[1:], check=False)
    _run("iptables", "-w", "-t", table, "-F", chain, check=False)
    _run("iptables", "-w", "-t", table, "-X", chain, check=False)
