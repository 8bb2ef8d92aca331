"""The user's commands around kubectl: export a model, read a deployment's status, steer a
canary, send a prediction.

Each module holds one command (or a pair) as ``add_arguments(parser)`` and ``run(args) -> int``;
`modeldeploy.cli` wires them. Top-level imports stay light (standard library and the API
models) so that ``modeldeploy operator`` never pays for scikit-learn, and ``modeldeploy
export`` never needs the Kubernetes client: heavy imports happen inside the command.
"""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit code 1, no traceback."""
