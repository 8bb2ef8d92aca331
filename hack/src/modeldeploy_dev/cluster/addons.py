"""What the real node runs for the cluster itself, as ordinary pods: cluster DNS (CoreDNS) and
an S3-compatible object store for models (rclone's ``serve s3``).

Both are pure builders of Kubernetes objects; ``LocalCluster`` applies them.
"""

from __future__ import annotations

from typing import Any

from modeldeploy_dev.cluster.network import DNS_SERVICE_IP

DNS_NAMESPACE = "kube-system"
STORE_NAMESPACE = "modeldeploy-store"
STORE_SERVICE = "s3"
STORE_PORT = 9000
STORE_URL = f"http://{STORE_SERVICE}.{STORE_NAMESPACE}.svc.cluster.local:{STORE_PORT}"
# Credentials of the local store only: it lives on this machine's bridge and holds test models.
STORE_ACCESS_KEY = "modeldeploy"
STORE_SECRET_KEY = "modeldeploy-local-store"
STORE_SECRET = "store-credentials"

COREFILE = """.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    cache 30
    loop
    reload
    loadbalance
}
"""
# No `forward`: pods resolve cluster names only, and no query leaves this machine.

_RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _labels(app: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "modeldeploy-local"}


def _deployment(name: str, namespace: str, container: dict[str, Any], **pod: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _labels(name)},
            "template": {
                "metadata": {"labels": _labels(name)},
                "spec": {
                    "nodeSelector": {"type": "real"},
                    "automountServiceAccountToken": pod.pop("automount", False),
                    "containers": [
                        {
                            "imagePullPolicy": "IfNotPresent",
                            "securityContext": _RESTRICTED,
                            **container,
                        }
                    ],
                    **pod,
                },
            },
        },
    }


def cluster_dns(image: str) -> list[dict[str, Any]]:
    """CoreDNS answering for cluster.local at the kubelet's clusterDNS address."""
    name = "coredns"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": DNS_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "modeldeploy-local:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "modeldeploy-local:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "modeldeploy-local:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": DNS_NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": DNS_NAMESPACE},
            "data": {"Corefile": COREFILE},
        },
        _deployment(
            name,
            DNS_NAMESPACE,
            {
                "name": name,
                "image": image,
                "args": ["-conf", "/etc/coredns/Corefile"],
                "ports": [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                ],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}},
                "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}},
                "resources": {
                    "requests": {"cpu": "20m", "memory": "32Mi"},
                    "limits": {"memory": "128Mi"},
                },
            },
            automount=True,
            serviceAccountName=name,
            dnsPolicy="Default",
            priorityClassName="system-cluster-critical",
            # Port 53 without root or capabilities.
            securityContext={
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}]
            },
            volumes=[{"name": "config", "configMap": {"name": name}}],
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": DNS_NAMESPACE, "labels": _labels(name)},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": _labels(name),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ],
            },
        },
    ]


def store_credentials(namespace: str) -> dict[str, Any]:
    """The Secret a ModelDeployment names in ``spec.model.credentialsSecret`` to read from
    the local store: the standard AWS variables the fetch init container reads."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": STORE_SECRET, "namespace": namespace},
        "stringData": {
            "AWS_ACCESS_KEY_ID": STORE_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": STORE_SECRET_KEY,
            "AWS_ENDPOINT_URL_S3": STORE_URL,
            "AWS_REGION": "us-east-1",
        },
    }


def object_store(image: str) -> list[dict[str, Any]]:
    """rclone's S3 server over an emptyDir, behind Service ``s3.modeldeploy-store``."""
    name = "s3"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STORE_NAMESPACE}},
        store_credentials(STORE_NAMESPACE),
        _deployment(
            name,
            STORE_NAMESPACE,
            {
                "name": "rclone",
                "image": image,
                "args": [
                    "serve",
                    "s3",
                    f"--addr=:{STORE_PORT}",
                    "--auth-key=$(AWS_ACCESS_KEY_ID),$(AWS_SECRET_ACCESS_KEY)",
                    "--config=/dev/null",
                    "--cache-dir=/tmp/rclone",
                    "--log-level=INFO",
                    "/data",
                ],
                "envFrom": [{"secretRef": {"name": STORE_SECRET}}],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "ports": [{"name": "s3", "containerPort": STORE_PORT}],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
                "readinessProbe": {"tcpSocket": {"port": STORE_PORT}},
                "resources": {
                    "requests": {"cpu": "20m", "memory": "64Mi"},
                    "limits": {"memory": "512Mi"},
                },
            },
            volumes=[{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": STORE_NAMESPACE, "labels": _labels(name)},
            "spec": {"selector": _labels(name), "ports": [{"name": "s3", "port": STORE_PORT}]},
        },
    ]
