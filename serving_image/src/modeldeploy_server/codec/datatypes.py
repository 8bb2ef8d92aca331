"""Open Inference Protocol datatypes, their numpy dtypes and ONNX tensor types."""

from __future__ import annotations

import numpy as np

# Explicit little-endian dtypes: the binary extension is little-endian on every host.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype("object"),
}
"""OIP datatype -> numpy dtype (BYTES tensors are object arrays of ``bytes``)."""

DATATYPES: frozenset[str] = frozenset(NUMPY_DTYPES)

INTEGER_DATATYPES: frozenset[str] = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
)
FLOAT_DATATYPES: frozenset[str] = frozenset({"FP16", "FP32", "FP64"})

ONNX_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
"""onnxruntime's type strings -> OIP datatype."""

_KIND_TO_DATATYPE: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in NUMPY_DTYPES.items() if name != "BYTES"
}


def datatype_of(array: np.ndarray) -> str:
    """OIP datatype of a numpy array (object and string arrays are BYTES)."""
    kind = array.dtype.kind
    if kind in "OUS":
        return "BYTES"
    try:
        return _KIND_TO_DATATYPE[(kind, array.dtype.itemsize)]
    except KeyError:
        raise ValueError(f"no Open Inference Protocol datatype for numpy {array.dtype}") from None
