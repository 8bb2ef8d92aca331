"""Objects the local control plane creates: fake nodes, the metrics API, the audit policy."""

from __future__ import annotations

import json
from typing import Any

NODE_COUNT = 2
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# The KWOK nodes carry a taint, so that ordinary workloads land on the real node; what should
# run on KWOK (tests of what the API server decides, the scale benchmark) goes to a namespace
# with these annotations (admission plugins PodNodeSelector and PodTolerationRestriction).
KWOK_TAINT = {"key": KWOK_NODE_ANNOTATION, "value": "fake", "effect": "NoSchedule"}
KWOK_NAMESPACE_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/node-selector": "type=kwok",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"operator": "Equal", **KWOK_TAINT}]
    ),
}
NODE_CPU = "8"
NODE_MEMORY = "32Gi"

# Metadata only, once per request: every write, and every request of the users we measure
# (the operator under test and the benchmark's bare client), reads included.
MEASURED_USERS = ["modeldeploy-operator", "modeldeploy-bench"]
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted", "Panic"],
    "rules": [
        {"level": "Metadata", "users": MEASURED_USERS},
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

# metrics.k8s.io served by metrics-server on loopback: the aggregator resolves an ExternalName
# Service to externalName:port (a ClusterIP would need a kube-proxy we do not have).
METRICS_API = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "metrics-server", "namespace": "kube-system"},
        "spec": {"type": "ExternalName", "externalName": "127.0.0.1"},
    },
    {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io"},
        "spec": {
            "service": {"name": "metrics-server", "namespace": "kube-system", "port": 0},
            "group": "metrics.k8s.io",
            "version": "v1beta1",
            "insecureSkipTLSVerify": True,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    },
]


def fake_node(name: str) -> dict[str, Any]:
    """A Node that KWOK manages: realistic allocatable CPU and memory, no taints."""
    resources = {
        "cpu": NODE_CPU,
        "memory": NODE_MEMORY,
        "pods": "110",
        "ephemeral-storage": "100Gi",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                # metrics-server asks for /metrics/resource unless told KWOK's per-node path.
                "metrics.k8s.io/resource-metrics-path": f"/metrics/nodes/{name}/metrics/resource",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {"taints": [KWOK_TAINT]},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            # Both address types: KWOK's node-initialize stage wipes addresses lacking a Hostname.
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
        },
    }
