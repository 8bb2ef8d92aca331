"""The local Kubernetes control plane for tests and the demo (``make cluster``)."""

from modeldeploy.devcluster.binaries import ControlPlaneError, binary_dir, project_root
from modeldeploy.devcluster.cluster import LocalCluster, running_cluster
from modeldeploy.devcluster.objects import fake_node
from modeldeploy.devcluster.processes import free_port

__all__ = [
    "ControlPlaneError",
    "LocalCluster",
    "binary_dir",
    "fake_node",
    "free_port",
    "project_root",
    "running_cluster",
]
