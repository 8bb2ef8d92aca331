"""The model's contract with its clients, read from a serving pod and compared between tracks.

A canary must accept every request the stable model accepts and answer in the same terms:
the same inputs (names, datatypes, shapes at least as wide), the same outputs (names,
datatypes) and, for a classifier whose training profile lists them, the same class labels.
``differences`` says, in a client's words, where a canary falls short; it is pure.
``ServerMetadata`` is the port that reads one pod (Open Inference Protocol metadata,
``GET /v2/models/NAME``, and the class labels the server exports from its profile).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ContractError",
    "ContractReading",
    "MetadataSource",
    "ModelContract",
    "ServerMetadata",
    "TensorContract",
    "differences",
]

CLASS_METRIC = "modeldeploy_predictions_total"
"""The server lists its profile's classes here from the start, each at 0 predictions."""
OTHER_CLASS = "__other__"
"""The server's bucket for labels beyond its limit: not a class."""


class ContractError(Exception):
    """A pod's metadata could not be read (unreachable, not ready, not a model server)."""


@dataclass(frozen=True)
class TensorContract:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def shape_text(self) -> str:
        return "[" + ",".join(str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class ModelContract:
    """What a client of the model relies on."""

    inputs: tuple[TensorContract, ...]
    outputs: tuple[TensorContract, ...]
    classes: frozenset[str] | None = None
    """Class labels from the training profile; None when the model has no profile classes."""

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, Any], classes: frozenset[str] | None = None
    ) -> ModelContract:
        """From an Open Inference Protocol model metadata response."""

        def tensors(key: str) -> tuple[TensorContract, ...]:
            items = metadata.get(key)
            if not isinstance(items, list):
                raise ContractError(f"the model metadata has no {key} list")
            try:
                return tuple(
                    TensorContract(
                        str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"])
                    )
                    for t in items
                )
            except (KeyError, TypeError, ValueError) as error:
                raise ContractError(f"the model metadata's {key} are malformed: {error}") from error

        return cls(tensors("inputs"), tensors("outputs"), classes or None)


def _accepts(stable: tuple[int, ...], canary: tuple[int, ...]) -> bool:
    """A canary dimension accepts what the stable one does: dynamic (-1), or the same size."""
    return len(stable) == len(canary) and all(
        c in (-1, s) for s, c in zip(stable, canary, strict=True)
    )


def _labels(labels: frozenset[str]) -> str:
    return ", ".join(sorted(labels))


def differences(stable: ModelContract, canary: ModelContract) -> list[str]:
    """Where ``canary`` breaks what clients of ``stable`` rely on, one line per difference
    (e.g. ``input X: shape [-1,4] -> [-1,5]``); empty when it is compatible. Additions that
    no client of stable can notice (a new output, a wider shape) are not differences."""
    found: list[str] = []
    old_inputs = {t.name: t for t in stable.inputs}
    new_inputs = {t.name: t for t in canary.inputs}
    for name, old in old_inputs.items():
        new = new_inputs.get(name)
        if new is None:
            found.append(f"input {name}: removed (clients send it)")
            continue
        if new.datatype != old.datatype:
            found.append(f"input {name}: datatype {old.datatype} -> {new.datatype}")
        if not _accepts(old.shape, new.shape):
            found.append(f"input {name}: shape {old.shape_text()} -> {new.shape_text()}")
    for name, new in new_inputs.items():
        if name not in old_inputs:
            found.append(f"input {name}: new {new.datatype} {new.shape_text()} (clients omit it)")
    new_outputs = {t.name: t for t in canary.outputs}
    for old in stable.outputs:
        new = new_outputs.get(old.name)
        if new is None:
            found.append(f"output {old.name}: removed")
        elif new.datatype != old.datatype:
            found.append(f"output {old.name}: datatype {old.datatype} -> {new.datatype}")
    if stable.classes and canary.classes:  # empty: the model has no profile classes
        removed, added = stable.classes - canary.classes, canary.classes - stable.classes
        if removed:
            found.append(f"classes: {_labels(removed)} no longer predicted")
        if added:
            found.append(f"classes: {_labels(added)} new")
    return found


@dataclass(frozen=True)
class ContractReading:
    """This tick's reading of both tracks (for the step function), or why there is none."""

    stable: ModelContract | None = None
    canary: ModelContract | None = None
    error: str | None = None


class MetadataSource(Protocol):
    def read(self, host: str, model: str) -> ModelContract: ...


def _get(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        raise ContractError(f"GET {url} answered {error.code}") from error
    except (OSError, ValueError) as error:
        raise ContractError(f"GET {url} failed: {error}") from error


def _classes(text: str) -> frozenset[str]:
    from prometheus_client.parser import text_string_to_metric_families

    found = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == CLASS_METRIC and "class" in sample.labels:
                found.add(sample.labels["class"])
    found.discard(OTHER_CLASS)
    return frozenset(found)


@dataclass(frozen=True)
class ServerMetadata:
    """Reads a ``modeldeploy-server`` pod: metadata on its http port, classes on its metrics
    port. Short timeouts: a reconcile must not hang on one unreachable pod."""

    http_port: int = 8080
    metrics_port: int = 8082
    timeout: float = 2.0

    def read(self, host: str, model: str) -> ModelContract:
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{self.http_port}/v2/models/{model}"
        try:
            metadata = json.loads(_get(url, self.timeout))
        except ValueError as error:
            raise ContractError(f"GET {url} did not answer JSON: {error}") from error
        if not isinstance(metadata, dict):
            raise ContractError(f"GET {url} did not answer a metadata object")
        try:
            text = _get(f"http://{host}:{self.metrics_port}/metrics", self.timeout).decode()
            classes: frozenset[str] | None = _classes(text)
        except (ContractError, ValueError):
            classes = None  # the classes are a bonus: the inputs and outputs are the contract
        return ModelContract.from_metadata(metadata, classes)
