"""Tensors in JSON: shapes, ``data`` arrays (flat or nested) and their validation.

Every check happens before numpy allocates anything sized by the request, so an absurd
shape costs nothing but an error message.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

import numpy as np

from ..errors import BadRequest
from .datatypes import FLOAT_DATATYPES, INTEGER_DATATYPES, NUMPY_DTYPES

MAX_RANK = 32
"""More dimensions than any real tensor has; deeper shapes are refused."""


def _overflow_threshold(dtype: type[np.floating]) -> float:
    # Halfway between the largest finite value and the next step: from there on, a cast
    # rounds to infinity.
    largest = np.finfo(dtype).max
    return float(largest) + float(largest - np.nextafter(largest, dtype(0))) / 2


_FLOAT_LIMITS = {"FP16": _overflow_threshold(np.float16), "FP32": _overflow_threshold(np.float32)}
"""JSON numbers at or beyond these would silently become infinities."""
_FLOAT_OK = frozenset({int, float})
_INT_OK = frozenset({int})
_BOOL_OK = frozenset({bool})
_BYTES_OK = frozenset({str})


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def validate_shape(shape: object, what: str, max_elements: int) -> tuple[list[int], int]:
    """Check a shape from a request; return it and its element count.

    ``max_elements`` bounds the count (the body could not carry more), so the product is
    refused before any allocation. ``what`` names the tensor in messages.
    """
    if type(shape) is not list:
        raise BadRequest(f"{what}: 'shape' must be an array of integers, got {json_type(shape)}")
    if len(shape) > MAX_RANK:
        raise BadRequest(f"{what}: 'shape' has {len(shape)} dimensions; at most {MAX_RANK}")
    count = 1
    for dim in shape:
        if type(dim) is not int:
            raise BadRequest(f"{what}: 'shape' must hold integers, found {json_type(dim)}")
        if dim < 0:
            raise BadRequest(f"{what}: 'shape' {shape} has a negative dimension")
        count *= dim
        if count > max_elements or dim > max_elements:
            raise BadRequest(
                f"{what}: 'shape' {shape} has more elements than the request could carry"
            )
    return shape, count


def _flatten(data: list[Any], shape: list[int], what: str) -> list[Any]:
    """Flatten nested ``data`` whose nesting mirrors the leading dimensions of ``shape``."""
    if not data or type(data[0]) is not list:
        return data
    level: list[Any] = [data]
    depth = 0
    while level and type(level[0]) is list:
        if depth >= len(shape):
            raise BadRequest(f"{what}: 'data' is nested deeper than 'shape' {shape}")
        want = shape[depth]
        for item in level:
            if type(item) is not list or len(item) != want:
                got = f"{len(item)} elements" if type(item) is list else json_type(item)
                raise BadRequest(
                    f"{what}: nested 'data' does not match 'shape' {shape}: "
                    f"expected arrays of {want} elements at depth {depth + 1}, found {got}"
                )
        level = list(chain.from_iterable(level))
        depth += 1
    return level


def _bad_element(flat: list[Any], allowed: frozenset[type], datatype: str, what: str) -> BadRequest:
    index, value = next((i, v) for i, v in enumerate(flat) if type(v) not in allowed)
    expected = {
        "BOOL": "true or false",
        "BYTES": "strings",
    }.get(datatype, "integers" if datatype in INTEGER_DATATYPES else "numbers")
    return BadRequest(
        f"{what}: element {index} of 'data' is {json_type(value)}; {datatype} data must be "
        f"{expected}"
    )


def decode_json_data(
    data: object, shape: list[int], count: int, datatype: str, what: str
) -> np.ndarray:
    """Turn a validated input's JSON ``data`` into an array of ``shape`` and ``datatype``."""
    if type(data) is not list:
        raise BadRequest(f"{what}: 'data' must be an array, got {json_type(data)}")
    flat = _flatten(data, shape, what)
    if len(flat) != count:
        raise BadRequest(
            f"{what}: 'shape' {shape} needs {count} elements but 'data' has {len(flat)}"
        )
    types: set[type] = set()
    for part in _slices(flat):
        types.update(map(type, part))
    if datatype in FLOAT_DATATYPES:
        allowed = _FLOAT_OK
    elif datatype in INTEGER_DATATYPES:
        allowed = _INT_OK
    elif datatype == "BOOL":
        allowed = _BOOL_OK
    else:
        allowed = _BYTES_OK
    if not types <= allowed:
        raise _bad_element(flat, allowed, datatype, what)
    limit = _FLOAT_LIMITS.get(datatype)
    if limit is not None and flat:
        high = max(map(max, _slices(flat)))
        low = min(map(min, _slices(flat)))
        if high >= limit or low <= -limit:
            raise BadRequest(f"{what}: a value in 'data' is out of range for {datatype}")
    if len(flat) <= _SLICE and datatype != "BYTES":
        try:
            return np.array(flat, dtype=NUMPY_DTYPES[datatype]).reshape(shape)
        except OverflowError:
            raise BadRequest(f"{what}: a value in 'data' is out of range for {datatype}") from None
    array = np.empty(count, dtype=NUMPY_DTYPES[datatype])
    start = 0
    try:
        for part in _slices(flat):
            array[start : start + len(part)] = part
            start += len(part)
    except OverflowError:
        raise BadRequest(f"{what}: a value in 'data' is out of range for {datatype}") from None
    return array.reshape(shape)


_SLICE = 1 << 16
"""Big ``data`` is checked and converted this many elements at a time: each slice is one C
call holding the interpreter lock, and between two of them the event loop gets its turn
(big requests are decoded in a thread, see ``rest``)."""


def _slices(flat: list[Any]) -> Iterator[list[Any]]:
    if len(flat) <= _SLICE:
        yield flat
        return
    for start in range(0, len(flat), _SLICE):
        yield flat[start : start + _SLICE]


def json_data(array: np.ndarray) -> Any:
    """The flat, row-major ``data`` of an output (orjson serializes numeric arrays itself)."""
    if array.dtype.kind in "OSU":
        return [
            item.decode("utf-8") if isinstance(item, bytes) else str(item)
            for item in array.reshape(-1)
        ]
    flat = array.reshape(-1)
    if not flat.flags.c_contiguous or not flat.dtype.isnative:
        flat = np.ascontiguousarray(flat, dtype=flat.dtype.newbyteorder("="))
    return flat
