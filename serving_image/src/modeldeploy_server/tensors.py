"""Decoded, validated infer requests and results: what the data plane works with.

Plain slotted classes rather than pydantic models: they are built once per request on the
hot path, after the codec has validated everything by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BadRequest


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


@dataclass(frozen=True)
class Signature:
    """A served model's inputs and outputs. Requests are checked against it while they are
    decoded, before any tensor data is: a request that cannot fit the model costs little."""

    model: str
    inputs: dict[str, TensorSpec]
    outputs: tuple[str, ...]

    @classmethod
    def of(cls, model: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> Signature:
        return cls(model, {s.name: s for s in inputs}, tuple(s.name for s in outputs))

    def check_input_count(self, count: int) -> None:
        if count > len(self.inputs):
            raise BadRequest(
                f"the request has {count} inputs; model '{self.model}' has {len(self.inputs)}: "
                f"{list(self.inputs)}"
            )

    def check_input(self, name: str, datatype: str | None, shape: tuple[int, ...] | None) -> None:
        """Name, then datatype, then shape (each as soon as it is known)."""
        spec = self.inputs.get(name)
        if spec is None:
            raise BadRequest(
                f"unknown input '{name}'; model '{self.model}' has inputs {list(self.inputs)}"
            )
        if datatype is not None and datatype != spec.datatype:
            raise BadRequest(
                f"input '{name}' has datatype {datatype}; model '{self.model}' expects "
                f"{spec.datatype}"
            )
        if shape is not None and not _fits(shape, spec.shape):
            raise BadRequest(
                f"input '{name}' has shape {list(shape)}; model '{self.model}' expects "
                f"{list(spec.shape)} (-1: any size)"
            )

    def check_output_count(self, count: int) -> None:
        if count > len(self.outputs):
            raise BadRequest(
                f"the request asks for {count} outputs; model '{self.model}' has "
                f"{len(self.outputs)}: {list(self.outputs)}"
            )

    def check_output(self, name: str) -> None:
        if name not in self.outputs:
            raise BadRequest(
                f"unknown output '{name}'; model '{self.model}' has outputs {list(self.outputs)}"
            )


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
    kept: dict[str, np.ndarray] | None = None
    """Outputs kept for the shadow mirror (asked for by the data plane, not the client)."""


def _fits(shape: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    if len(shape) != len(wanted):
        return False
    for want, got in zip(wanted, shape, strict=True):  # noqa: SIM110 - per request: no generator
        if want != -1 and want != got:
            return False
    return True
