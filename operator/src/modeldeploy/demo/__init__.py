"""``make demo``: the whole system on this machine, end to end, with readable progress.

The local control plane (real API server, KWOK nodes), the Helm chart, the operator as a local
process with the chart ServiceAccount's identity, a scikit-learn model exported with
``modeldeploy export``, a ModelDeployment becoming Ready, ``modeldeploy-server`` processes
standing in for the simulated pods, a real prediction, a real Prometheus, and a second model
version rolled out as a canary until it is promoted. Run it with ``python -m modeldeploy.demo``.
"""

from __future__ import annotations

__all__ = ["DemoError"]


class DemoError(Exception):
    """A step that failed: the message says what, the demo prints it with the logs' tails."""
