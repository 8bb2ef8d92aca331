"""Decoded, validated infer requests and results: what the data plane works with.

Plain slotted classes rather than pydantic models: they are built once per request on the
hot path, after the codec has validated everything by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Tensor:
    """A named tensor; BYTES tensors are object arrays of ``str`` or ``bytes`` items."""

    name: str
    datatype: str
    array: np.ndarray


@dataclass(slots=True, frozen=True)
class TensorSpec:
    """A model input or output as the model declares it; ``-1`` is a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(slots=True)
class RequestedOutput:
    """An output the client named; ``binary`` is None when it did not say."""

    name: str
    binary: bool | None = None


@dataclass(slots=True)
class InferRequest:
    """A protocol-valid infer request (not yet checked against a model)."""

    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestedOutput] | None = None
    binary_output: bool = False


@dataclass(slots=True)
class InferResult:
    """The outputs of one request, in the order they are to be returned."""

    model_name: str
    model_version: str | None
    outputs: list[Tensor]
    binary: list[bool] = field(default_factory=list)
    id: str | None = None
