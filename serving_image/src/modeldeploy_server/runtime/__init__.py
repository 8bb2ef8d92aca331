"""The model contract: what the data plane needs from a framework adapter.

A model is constructed cheaply, then ``load()`` (slow: reads and verifies the file, builds
the session), then ``predict()`` many times, then ``unload()``. Adapters are the only
code that imports a framework; ``runtime.onnx`` is the one we ship.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..tensors import TensorSpec


class Model(Protocol):
    """A loaded-on-demand model with a fixed signature."""

    name: str
    version: str | None
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batchable: bool
    """True when every input and output has a dynamic first (batch) dimension."""

    def load(self) -> None:
        """Read, verify and prepare the model; raises ``ModelLoadError`` with the reason."""

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """Run on validated inputs; return the named outputs in order.

        Raises ``InferenceFailed`` (or another ``ServerError``) when the inputs are refused.
        """

    def unload(self) -> None:
        """Release the model's memory."""
