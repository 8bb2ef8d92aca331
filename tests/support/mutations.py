"""Hypothesis strategies for fuzzing inference servers: valid requests, then one mutation.

Purely random documents rarely get past the first checks; starting from a request the
model accepts and breaking one thing reaches the deeper code (shape checks, decoding,
the runtime, batching).
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)

VALID_REQUESTS: dict[str, dict[str, Any]] = {
    "classifier": {
        "inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": [0.1] * 8}],
        "outputs": [{"name": "label"}, {"name": "probabilities"}],
    },
    "mixed": {
        "inputs": [
            {"name": "age", "shape": [1, 1], "datatype": "FP32", "data": [30.0]},
            {"name": "income", "shape": [1, 1], "datatype": "FP32", "data": [40.0]},
            {"name": "city", "shape": [1, 1], "datatype": "BYTES", "data": ["nice"]},
        ]
    },
    "identity": {
        "inputs": [
            {"name": "in_int8", "shape": [1, 2], "datatype": "INT8", "data": [1, -2]},
            {"name": "in_bytes", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]},
            {"name": "in_bool", "shape": [1, 1], "datatype": "BOOL", "data": [True]},
            {"name": "in_fp16", "shape": [2, 1], "datatype": "FP16", "data": [0.5, 1.5]},
        ]
    },
}
"""A request each test model accepts (identity: a subset of its inputs is refused, on purpose
not always: the mutations may drop the refusal too)."""

FIELDS = ["name", "shape", "datatype", "data", "parameters"]


@st.composite
def mutated_request(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    """``valid`` with one random change (or none: the valid request must pass too)."""
    doc = copy.deepcopy(valid)
    kind = draw(st.sampled_from(["none", "field", "drop", "dim", "element", "top", "outputs"]))
    tensor = draw(st.sampled_from(doc["inputs"]))
    if kind == "field":
        tensor[draw(st.sampled_from(FIELDS))] = draw(JSON_VALUES)
    elif kind == "drop":
        tensor.pop(draw(st.sampled_from(FIELDS)), None)
    elif kind == "dim":
        shape = tensor["shape"]
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(-3, 2**40))
    elif kind == "element" and tensor["data"]:
        tensor["data"][draw(st.integers(0, len(tensor["data"]) - 1))] = draw(JSON_VALUES)
    elif kind == "top":
        doc[draw(st.sampled_from(["inputs", "outputs", "id", "parameters"]))] = draw(JSON_VALUES)
    elif kind == "outputs":
        doc["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["label", "probabilities", "out_int8", "nope"])},
                    optional={"parameters": st.fixed_dictionaries(
                        {}, optional={"binary_data": st.booleans() | JSON_VALUES})},
                ),
                max_size=3,
            )
        )  # fmt: skip
    return doc


NUMPY_TYPES = {"FP32": "<f4", "FP16": "<f2", "INT8": "<i1", "BOOL": "?", "INT64": "<i8"}


def to_binary(doc: dict[str, Any]) -> tuple[bytes, int]:
    """The same request with its numeric inputs sent as binary tensors (body, header length)."""
    import numpy as np
    import orjson

    doc = copy.deepcopy(doc)
    blobs = []
    for tensor in doc["inputs"]:
        dtype = NUMPY_TYPES.get(tensor.get("datatype"))
        if dtype is None or not isinstance(tensor.get("data"), list):
            continue
        raw = np.asarray(tensor.pop("data"), dtype=dtype).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        blobs.append(raw)
    header = orjson.dumps(doc)
    return header + b"".join(blobs), len(header)


@st.composite
def mutated_binary_request(draw: st.DrawFn, valid: dict[str, Any]) -> tuple[bytes, str]:
    """A valid binary request, then one change to its sizes, tail or header length."""
    body, header_length = to_binary(valid)
    kind = draw(st.sampled_from(["none", "truncate", "extend", "header", "size"]))
    length = str(header_length)
    if kind == "truncate":
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif kind == "extend":
        body += draw(st.binary(min_size=1, max_size=16))
    elif kind == "header":
        length = str(draw(st.integers(-1, len(body) + 5)))
    elif kind == "size":
        header = body[:header_length].replace(
            b'"binary_data_size":',
            b'"binary_data_size":' + str(draw(st.integers(0, 99))).encode(),
            1,
        )
        body = header + body[header_length:]
        length = str(len(header))
    return body, length
