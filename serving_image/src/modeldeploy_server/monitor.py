"""The monitor of the served model: its profiled input and its predictions.

Built once the model is loaded (its signature and digest are known then), so that every
mismatch between the profile and the model is a load failure naming both sides; the data
plane calls ``check`` before queueing a request and ``observe`` with its outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ModelLoadError
from .predictions import ClassCounter, Recorder, ValueHistogram, describe, prediction_recorder
from .profile import Profile
from .quality import InputMonitor, QualityOptions
from .runtime import Model


class ModelMonitor:
    """What the data plane records per request, beyond requests and latency."""

    def __init__(
        self, model: str, inputs: InputMonitor | None, predictions: Recorder | None
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.predictions = predictions
        self.prediction_output = predictions.output if predictions is not None else None
        """The output the predictions are read from; the data plane asks for it always."""

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        """Count the request's values (may refuse it under the reject policy)."""
        if self.inputs is not None:
            self.inputs.check(inputs)

    def observe(self, names: list[str], arrays: list[np.ndarray]) -> None:
        """Record the predictions among a request's outputs."""
        if self.predictions is not None:
            self.predictions.observe(arrays[names.index(self.predictions.output)])

    def snapshot(self) -> dict[str, Any]:
        """Plain data for the supervisor (see ``quality_metrics``)."""
        predictions = self.predictions
        return {
            "model": self.model,
            "inputs": self.inputs.snapshot() if self.inputs is not None else None,
            "classes": predictions.snapshot() if isinstance(predictions, ClassCounter) else None,
            "values": predictions.snapshot() if isinstance(predictions, ValueHistogram) else None,
        }

    def describe(self) -> dict[str, Any]:
        """For the "model ready" log line."""
        inputs = self.inputs
        return {
            "profiled_input": inputs.input if inputs is not None else None,
            "features": len(inputs.names) if inputs is not None else 0,
            "quality_policy": ("reject" if inputs.reject else "observe") if inputs else None,
            "drift_window": inputs.window if inputs is not None else None,
            "predictions": describe(self.predictions),
        }


def build_monitor(
    name: str, model: Model, profile: Profile | None, options: QualityOptions
) -> ModelMonitor | None:
    """The monitor of a loaded model; ``ModelLoadError`` when the profile does not fit it."""
    inputs = _input_monitor(model, profile, options) if profile is not None else None
    predictions = prediction_recorder(
        model.outputs, profile.prediction if profile is not None else None
    )
    if inputs is None and predictions is None:
        return None
    return ModelMonitor(name, inputs, predictions)


def _input_monitor(model: Model, profile: Profile, options: QualityOptions) -> InputMonitor:
    served = getattr(model, "sha256", None)
    if profile.sha256 and served and profile.sha256 != served:
        raise ModelLoadError(
            "the training profile does not describe this model: the profile is for model "
            f"sha256 {profile.sha256}, the served model has sha256 {served}"
        )
    specs = {spec.name: spec for spec in model.inputs}
    spec = specs.get(profile.input)
    if spec is None:
        raise ModelLoadError(
            f"profile model.input '{profile.input}' is not an input of the model; its inputs "
            f"are {list(specs)}"
        )
    if len(spec.shape) != 2:
        raise ModelLoadError(
            f"the profile's features are columns of input '{spec.name}', which has shape "
            f"{list(spec.shape)}: only inputs shaped [rows, columns] can be profiled"
        )
    width = spec.shape[1]
    for feature in profile.features:
        if 0 <= width <= feature.column:
            raise ModelLoadError(
                f"profile feature '{feature.name}' is column {feature.column}, but input "
                f"'{spec.name}' has {width} columns"
            )
    return InputMonitor(profile, spec, options)
