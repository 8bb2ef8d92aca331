"""``make demo``: the whole system on this machine, end to end, with readable progress.

The local cluster with its real node, the Helm chart whose operator runs as a pod there, a
scikit-learn model exported with ``modeldeploy export`` and uploaded to the cluster's object
store, a ModelDeployment whose pods fetch it and become Ready, a real prediction through its
Service, a real Prometheus discovering the pods, and a second model version rolled out as a
canary until it is promoted. Run it with ``python -m modeldeploy_dev.demo``.
"""

from __future__ import annotations

__all__ = ["DemoError"]


class DemoError(Exception):
    """A step that failed: the message says what, the demo prints it with the logs' tails."""
