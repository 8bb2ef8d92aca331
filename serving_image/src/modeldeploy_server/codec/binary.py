"""The binary tensor data extension: raw little-endian tensors after the JSON header.

Numeric inputs are decoded with ``numpy.frombuffer`` over the request body: no copy.
BYTES elements are each a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import BadRequest
from .datatypes import NUMPY_DTYPES

_LENGTH = struct.Struct("<I")


def decode_binary_data(
    view: memoryview, shape: list[int], count: int, datatype: str, what: str
) -> np.ndarray:
    """Decode one input's raw bytes (exactly its ``binary_data_size``)."""
    if datatype == "BYTES":
        return deserialize_bytes(view, count, what).reshape(shape)
    dtype = NUMPY_DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(view) != expected:
        raise BadRequest(
            f"{what}: 'binary_data_size' is {len(view)} bytes but 'shape' {shape} of "
            f"{datatype} needs {expected}"
        )
    array = np.frombuffer(view, dtype=dtype, count=count)
    if datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise BadRequest(f"{what}: BOOL binary data must hold only bytes 0 and 1")
    if not array.flags.aligned:
        # The JSON header's length puts tensors at any offset; kernels expect alignment.
        array = array.copy()
    return array.reshape(shape)


def deserialize_bytes(view: memoryview, count: int, what: str) -> np.ndarray:
    """Parse ``count`` length-prefixed BYTES elements that fill ``view`` exactly."""
    size = len(view)
    if count * 4 > size:
        raise BadRequest(
            f"{what}: 'binary_data_size' {size} is too small for {count} BYTES elements"
        )
    items = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > size:
            raise BadRequest(f"{what}: BYTES element {index} is cut off (no length prefix)")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise BadRequest(
                f"{what}: BYTES element {index} declares {length} bytes but only "
                f"{size - offset} remain"
            )
        items[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != size:
        raise BadRequest(
            f"{what}: 'binary_data_size' is {size} but {count} BYTES elements use {offset}"
        )
    return items


def serialize_bytes(array: np.ndarray) -> bytes:
    """Length-prefix each element of a BYTES array (``str`` items are UTF-8 encoded)."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def binary_data(array: np.ndarray, datatype: str) -> bytes:
    """The raw bytes of an output in the binary extension's layout."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    dtype = NUMPY_DTYPES[datatype]
    return np.ascontiguousarray(array, dtype=dtype).tobytes()
