"""Command lines of the control-plane components (a mixin of LocalCluster)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from modeldeploy_dev.cluster.network import GATEWAY, SERVICE_CIDR
from modeldeploy_dev.cluster.objects import AUDIT_POLICY, KWOK_NODE_ANNOTATION
from modeldeploy_dev.cluster.pki import Pki


class ComponentArgs:
    """Flags of each component, from the cluster's ports and paths."""

    root: Path
    ports: dict[str, int]
    bin_dir: Path | None
    node: bool

    if TYPE_CHECKING:

        @property
        def pki(self) -> Pki: ...

        @property
        def audit_log(self) -> Path: ...

    def _etcd_args(self) -> list[str]:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        return [
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        p = self.pki
        return [
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            *self._apiserver_address_args(),
            # logs, exec and port-forward reach the real kubelet on its node IP.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={p.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={p.key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={p.cert('ca')}",
            # A namespace can pin its pods to the KWOK nodes (tests, the scale benchmark).
            "--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
            f"--secure-port={self.ports['kube-apiserver']}",
            f"--cert-dir={p.dir}",
            f"--tls-cert-file={p.cert('apiserver')}",
            f"--tls-private-key-file={p.key('apiserver')}",
            f"--client-ca-file={p.cert('ca')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.service_account_pub}",
            f"--service-account-signing-key-file={p.service_account_key}",
            # The aggregation layer (metrics.k8s.io for the HPA).
            f"--requestheader-client-ca-file={p.cert('front-proxy-ca')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--proxy-client-cert-file={p.cert('front-proxy-client')}",
            f"--proxy-client-key-file={p.key('front-proxy-client')}",
            "--enable-aggregator-routing=false",
            "--profiling=false",
            f"--audit-policy-file={self._write_audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ]

    def _apiserver_address_args(self) -> list[str]:
        if not self.node:
            return [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ]
        # Every address, so that pods reach it on the bridge; the host network's guard lets
        # only loopback and the bridge connect. Pods find it through the `kubernetes`
        # Service, whose endpoint is the advertised bridge address.
        return [
            "--bind-address=0.0.0.0",
            f"--advertise-address={GATEWAY}",
            "--endpoint-reconciler-type=lease",
        ]

    def _write_audit_policy(self) -> Path:
        path = self.root / "config" / "audit-policy.json"
        path.write_text(json.dumps(AUDIT_POLICY))
        return path

    def _component_common(self, name: str, kubeconfig: Path) -> list[str]:
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports[name]}",
            f"--cert-dir={self.root / 'config' / name}",
        ]

    def _controller_manager_args(self) -> list[str]:
        p = self.pki
        return [
            *self._component_common(
                "kube-controller-manager", self.root / "config" / "controller-manager.kubeconfig"
            ),
            f"--service-account-private-key-file={p.service_account_key}",
            f"--root-ca-file={p.cert('ca')}",
            f"--cluster-signing-cert-file={p.cert('ca')}",
            f"--cluster-signing-key-file={p.key('ca')}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Tests want the HPA to react in seconds, not the default 15 s / 5 min.
            "--horizontal-pod-autoscaler-sync-period=2s",
            "--horizontal-pod-autoscaler-downscale-stabilization=10s",
            "--horizontal-pod-autoscaler-cpu-initialization-period=10s",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=20",
        ]

    def _scheduler_args(self) -> list[str]:
        return self._component_common(
            "kube-scheduler", self.root / "config" / "scheduler.kubeconfig"
        )

    def _kwok_args(self) -> list[str]:
        assert self.bin_dir is not None
        stages = sorted((self.bin_dir / "kwok-stages").glob("*.yaml"))
        return [
            f"--kubeconfig={self.root / 'config' / 'kwok.kubeconfig'}",
            # Only the fake nodes: the real node's pods are the kubelet's.
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
            "--node-ip=127.0.0.1",
            # The nodes' kubelet port: where metrics-server scrapes KWOK's emulated metrics.
            f"--node-port={self.ports['kwok']}",
            # The kwok binary's default is 0: no Leases, and nodes turn NotReady after ~50 s.
            "--node-lease-duration-seconds=40",
            *(f"--config={s}" for s in stages),
        ]

    def _metrics_server_args(self) -> list[str]:
        kubeconfig = self.root / "config" / "metrics-server.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['metrics-server']}",
            f"--cert-dir={self.root / 'config' / 'metrics-server'}",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "--kubelet-use-node-status-port",
            "--kubelet-insecure-tls",  # KWOK serves a self-signed test certificate
            "--metric-resolution=10s",
            "--kubelet-request-timeout=5s",
        ]
