"""The real node's components: containerd (Debian's, with runc and the CNI plugins), the
kubelet and kube-proxy from the multi-call binary. A mixin of LocalCluster, like
``components.ComponentArgs``: each method writes a config under ``root/node`` and returns the
command line.

Two settings are required on machines like this one, where root lacks CAP_SYS_RESOURCE and
the cgroup hierarchy is v1: containerd's ``restrict_oom_score_adj`` (otherwise every sandbox
fails with "can't get final child's PID from pipe: EOF") and the kubelet's
``failCgroupV1: false``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeploy_dev.cluster.network import (
    BRIDGE,
    DNS_SERVICE_IP,
    GATEWAY,
    NODE_NAME,
    NODE_POD_CIDR,
    POD_CIDR,
)

if TYPE_CHECKING:
    from modeldeploy_dev.cluster.pki import Pki

CNI_BIN_DIR = "/usr/lib/cni"
CNI_NETWORK = "modeldeploy"
CNI_LEASES = f"/var/lib/cni/networks/{CNI_NETWORK}"
NETNS_DIR = "/run/netns"
CGROUP_ROOT = "/sys/fs/cgroup"
KUBELET_PORT = 10250
# Labels that let a test or a user tell the real node from the KWOK ones.
NODE_LABELS = {"type": "real", "serving.modeldeploy.io/node": "real"}


class NodeArgs:
    """Configs and flags of containerd, the kubelet and kube-proxy."""

    root: Path
    ports: dict[str, int]

    if TYPE_CHECKING:

        @property
        def pki(self) -> Pki: ...

        @property
        def sandbox_image(self) -> str: ...

    @property
    def node_dir(self) -> Path:
        return self.root / "node"

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd" / "containerd.sock"

    # containerd ------------------------------------------------------------------------
    def _containerd_args(self) -> list[str]:
        base = self.node_dir / "containerd"
        conf_dir = self.node_dir / "cni"
        for sub in ("root", "state"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "10-modeldeploy.conflist").write_text(json.dumps(cni_config(), indent=2))
        config = f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
oom_score = 0

[grpc]
  address = "{self.containerd_socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.sandbox_image}"
  restrict_oom_score_adj = true
  enable_selinux = false
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{conf_dir}"
"""
        path = base / "config.toml"
        path.write_text(config)
        return ["--config", str(path), "--log-level", "warn"]

    # kubelet ---------------------------------------------------------------------------
    def _kubelet_args(self) -> list[str]:
        p = self.pki
        directory = self.node_dir / "kubelet"
        directory.mkdir(parents=True, exist_ok=True)
        # Pods resolve cluster names only: no upstream resolver, so no query leaves the node.
        resolv = directory / "resolv.conf"
        resolv.write_text("# modeldeploy local node: cluster DNS only\n")
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine's hierarchy is cgroup v1; 1.35+ refuses it unless told (KEP-5573).
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "failSwapOn": False,
            "address": GATEWAY,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.ports["kubelet-healthz"],
            "tlsCertFile": str(p.cert("kubelet-serving")),
            "tlsPrivateKeyFile": str(p.key("kubelet-serving")),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(p.cert("ca"))},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local",
            "clusterDNS": [DNS_SERVICE_IP],
            "resolvConf": str(resolv),
            "podCIDR": NODE_POD_CIDR,
            "maxPods": 110,
            "serializeImagePulls": False,
            # Small test machines: evict only when really out of room.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusReportFrequency": "10s",
            "nodeStatusUpdateFrequency": "10s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "shutdownGracePeriod": "0s",
            "logging": {"format": "text"},
        }
        path = directory / "config.json"
        path.write_text(json.dumps(config, indent=2))
        labels = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
        return [
            f"--config={path}",
            f"--kubeconfig={self.root / 'config' / 'kubelet.kubeconfig'}",
            f"--root-dir={directory / 'root'}",
            f"--cert-dir={directory / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={GATEWAY}",
            f"--node-labels={labels}",
            "--v=1",
        ]

    # kube-proxy ------------------------------------------------------------------------
    def _kube_proxy_args(self) -> list[str]:
        directory = self.node_dir / "kube-proxy"
        directory.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.root / "config" / "kube-proxy.kubeconfig")},
            "hostnameOverride": NODE_NAME,
            "bindAddress": GATEWAY,
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": f"127.0.0.1:{self.ports['kube-proxy-healthz']}",
            "metricsBindAddress": f"127.0.0.1:{self.ports['kube-proxy-metrics']}",
            # NodePorts answer on the node's bridge address only, never on the machine's own.
            "nodePortAddresses": [f"{GATEWAY}/32"],
            # Leave the machine's conntrack sysctls alone (not writable here, and not ours).
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
        }
        path = directory / "config.json"
        path.write_text(json.dumps(config, indent=2))
        return [f"--config={path}", "--v=1"]


def _kill_tree_of(predicate: Callable[[list[str]], bool]) -> None:
    """SIGKILL every process whose command line satisfies ``predicate``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if predicate([a.decode(errors="replace") for a in argv]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)


def _pod_cgroups() -> list[Path]:
    """The kubelet's pod cgroups in every v1 hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in Path(CGROUP_ROOT).iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir():
            found.extend(p for p in top.rglob("*") if p.is_dir())
            found.append(top)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_container(pod_uid: str, container_id: str) -> int:
    """SIGKILL every process of one running container of the real node, as a crash or the
    kernel's OOM killer would: no signal the server can handle, no drain. ``container_id`` as
    the pod's status gives it (``containerd://<id>``). Returns how many processes it killed."""
    cid = container_id.rpartition("//")[2]
    killed = 0
    for procs in Path(CGROUP_ROOT, "memory", "kubepods").glob(
        f"**/pod{pod_uid}/{cid}/cgroup.procs"
    ):
        for pid in procs.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
    return killed


def pods_on_node(pod_uids: list[str]) -> list[str]:
    """The pods of ``pod_uids`` that still have a cgroup on the node (a container, or the
    kubelet not yet done with it)."""
    root = Path(CGROUP_ROOT, "memory", "kubepods")
    return [uid for uid in pod_uids if any(root.glob(f"**/pod{uid}"))]


def remove_node_state(node_dir: Path) -> None:
    """Stop every container the node ran and remove what the kubelet, containerd and the CNI
    plugins left on the host: processes, cgroups, mounts, network namespaces, IP leases.

    The container processes and containerd's shims outlive containerd and the kubelet (the
    shims daemonise), so they are found by cgroup and by the containerd socket they serve."""
    socket = str(node_dir / "containerd" / "containerd.sock")
    for cgroup in _pod_cgroups():
        with contextlib.suppress(OSError):
            for pid in (cgroup / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    _kill_tree_of(lambda argv: "containerd-shim" in argv[0] and socket in argv)
    time.sleep(0.5)
    for cgroup in _pod_cgroups():
        with contextlib.suppress(OSError):
            cgroup.rmdir()
    mounts = []
    with open("/proc/self/mounts") as handle:
        for line in handle:
            target = line.split()[1].replace("\\040", " ")
            if target.startswith(str(node_dir)) or target.startswith(f"{NETNS_DIR}/cni-"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    for netns in Path(NETNS_DIR).glob("cni-*"):
        with contextlib.suppress(OSError):
            netns.unlink()
    shutil.rmtree(CNI_LEASES, ignore_errors=True)
    shutil.rmtree(node_dir, ignore_errors=True)


def cni_config() -> dict[str, Any]:
    """A bridge network on the node's pod range, with hairpin traffic for Services that
    send a pod back to itself, and host ports."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": NODE_POD_CIDR, "gateway": GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }
