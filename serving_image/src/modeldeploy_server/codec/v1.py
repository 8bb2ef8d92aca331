"""KServe v1 (``:predict``): ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out.

v1 carries no datatypes: values take the model's input datatype. A single-input model
takes one instance per row; a model with several inputs takes one object per row,
keyed by input name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ..errors import BadRequest
from ..tensors import InferRequest, InferResult, Tensor, TensorSpec
from .infer import load_json_object
from .json_tensors import MAX_RANK, decode_json_data, json_data, json_type


def _nested_shape(value: list[Any]) -> list[int]:
    shape = []
    current: Any = value
    while type(current) is list:
        shape.append(len(current))
        if len(shape) > MAX_RANK:
            raise BadRequest(f"'instances' are nested deeper than {MAX_RANK} levels")
        if not current:
            break
        current = current[0]
    return shape


def _decode_rows(rows: list[Any], spec: TensorSpec, what: str) -> Tensor:
    shape = _nested_shape(rows)
    count = 1
    for dim in shape:
        count *= dim
    array = decode_json_data(rows, shape, count, spec.datatype, what)
    return Tensor(spec.name, spec.datatype, array)


def decode_v1_request(body: bytes, inputs: list[TensorSpec]) -> InferRequest:
    """Turn a v1 predict body into an infer request for a model with ``inputs``."""
    doc = load_json_object(body)
    instances = doc.get("instances")
    if type(instances) is not list or not instances:
        raise BadRequest("'instances' must be a non-empty array")
    if len(inputs) == 1:
        return InferRequest(inputs=[_decode_rows(instances, inputs[0], "'instances'")])
    names = [spec.name for spec in inputs]
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, instance in enumerate(instances):
        if type(instance) is not dict:
            raise BadRequest(
                f"instances[{index}] is {json_type(instance)}; this model has several inputs "
                f"{names}, so each instance must be an object keyed by input name"
            )
        unknown = sorted(set(instance) - set(names))
        if unknown:
            raise BadRequest(f"instances[{index}] has unknown inputs {unknown}; inputs: {names}")
        for name in names:
            if name not in instance:
                raise BadRequest(f"instances[{index}] is missing input '{name}'")
            columns[name].append(instance[name])
    return InferRequest(
        inputs=[
            _decode_rows(columns[spec.name], spec, f"'instances' of input '{spec.name}'")
            for spec in inputs
        ]
    )


def encode_v1_result(result: InferResult, rows: int) -> bytes:
    """One prediction per instance: the row itself, or an object per row for several outputs."""
    outputs = result.outputs
    if len(outputs) == 1:
        return orjson.dumps({"predictions": _rows(outputs[0].array)})
    if all(t.array.ndim >= 1 and t.array.shape[0] == rows for t in outputs):
        columns = [(t.name, _rows(t.array)) for t in outputs]
        predictions = [{name: column[i] for name, column in columns} for i in range(rows)]
    else:
        predictions = [{t.name: _rows(t.array) for t in outputs}]
    return orjson.dumps({"predictions": predictions})


def _rows(array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        flat = json_data(array)
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()
