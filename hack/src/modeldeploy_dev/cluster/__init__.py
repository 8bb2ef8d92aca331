"""The local Kubernetes control plane for tests and the demo (``make cluster``)."""

from modeldeploy_dev.cluster.binaries import ControlPlaneError, binary_dir, project_root
from modeldeploy_dev.cluster.local import LocalCluster, running_cluster
from modeldeploy_dev.cluster.objects import fake_node
from modeldeploy_dev.cluster.processes import free_port

__all__ = [
    "ControlPlaneError",
    "LocalCluster",
    "binary_dir",
    "fake_node",
    "free_port",
    "project_root",
    "running_cluster",
]
