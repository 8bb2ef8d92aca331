"""The wire codecs: JSON tensors, binary tensors, v2 infer messages and KServe v1."""

from __future__ import annotations

import re
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modeldeploy_server.codec.binary import (
    binary_data,
    decode_binary_data,
    deserialize_bytes,
    serialize_bytes,
)
from modeldeploy_server.codec.datatypes import NUMPY_DTYPES, datatype_of
from modeldeploy_server.codec.infer import (
    decode_infer_request,
    encode_infer_result,
    parse_header_length,
)
from modeldeploy_server.codec.json_tensors import decode_json_data, json_data, validate_shape
from modeldeploy_server.codec.v1 import decode_v1_request, encode_v1_result
from modeldeploy_server.errors import BadRequest
from modeldeploy_server.tensors import InferResult, Signature, Tensor, TensorSpec

NUMERIC = [d for d in NUMPY_DTYPES if d not in ("BYTES",)]


def _request(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


# -- shapes ---------------------------------------------------------------------------


def test_validate_shape_counts_elements() -> None:
    assert validate_shape([2, 3], "x", 100) == ([2, 3], 6)
    assert validate_shape([], "x", 100) == ([], 1)
    assert validate_shape([0, 5], "x", 100) == ([0, 5], 0)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("3", "must be an array of integers"),
        ([1, "2"], "must hold integers"),
        ([1, 2.0], "must hold integers"),
        ([1, True], "must hold integers"),
        ([1, -1], "negative dimension"),
        ([10**6, 10**6], "more elements than the request could carry"),
        ([0, 10**30], "more elements than the request could carry"),
        ([1] * 33, "at most 32"),
    ],
)
def test_validate_shape_refuses(shape: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        validate_shape(shape, "input 'x'", 10_000)


# -- JSON data ------------------------------------------------------------------------


def test_flat_and_nested_data_decode_to_the_same_array() -> None:
    flat = decode_json_data([1, 2, 3, 4, 5, 6], [2, 3], 6, "FP32", "x")
    nested = decode_json_data([[1, 2, 3], [4, 5, 6]], [2, 3], 6, "FP32", "x")
    assert flat.dtype == np.float32
    np.testing.assert_array_equal(flat, nested)
    np.testing.assert_array_equal(flat, np.arange(1, 7, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize(
    ("data", "shape", "datatype", "message"),
    [
        ({"a": 1}, [1], "FP32", "'data' must be an array, got an object"),
        ([1, 2, 3], [2, 2], "FP32", r"needs 4 elements but 'data' has 3"),
        ([[1, 2], [3]], [2, 2], "FP32", "expected arrays of 2 elements at depth 2, found 1"),
        ([[1, 2], 3], [2, 2], "FP32", "found a number"),
        ([[[1]], [[2]]], [2], "FP32", "nested deeper than 'shape'"),
        ([1, "2"], [2], "FP32", "element 1 of 'data' is a string; FP32 data must be numbers"),
        ([1, None], [2], "FP64", "element 1 of 'data' is null"),
        ([True, 1.0], [2], "FP32", "element 0 of 'data' is a boolean"),
        ([1.5, 2], [2], "INT64", "element 0 of 'data' is a number; INT64 data must be integers"),
        ([1, 0], [2], "BOOL", "must be true or false"),
        ([1, "a"], [2], "BYTES", "element 0 of 'data' is a number; BYTES data must be strings"),
        ([300], [1], "INT8", "out of range for INT8"),
        ([-1], [1], "UINT32", "out of range for UINT32"),
        ([2**64], [1], "INT64", "out of range for INT64"),
        ([1.0, 70000.0], [2], "FP16", "out of range for FP16"),
        ([-1e39], [1], "FP32", "out of range for FP32"),
        ([[1], [2]], [1, 2], "FP32", "expected arrays of 1 elements at depth 1"),
    ],
)
def test_json_data_refused_with_a_precise_message(
    data: object, shape: list[int], datatype: str, message: str
) -> None:
    count = int(np.prod(shape))
    with pytest.raises(BadRequest, match=message):
        decode_json_data(data, shape, count, datatype, "input 'x'")


@pytest.mark.parametrize("datatype", NUMERIC)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_json_round_trip_for_every_numeric_datatype(datatype: str, data: st.DataObject) -> None:
    dtype = NUMPY_DTYPES[datatype]
    elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
    array = data.draw(
        hnp.arrays(dtype, hnp.array_shapes(max_dims=3, max_side=4), elements=elements)
    )
    encoded = orjson.loads(orjson.dumps(json_data(array), option=orjson.OPT_SERIALIZE_NUMPY))
    decoded = decode_json_data(encoded, list(array.shape), array.size, datatype, "x")
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, array)


def test_bytes_json_data_stays_text() -> None:
    array = decode_json_data(["a", "é", ""], [3], 3, "BYTES", "x")
    assert array.dtype == object
    assert json_data(array) == ["a", "é", ""]


# -- binary ---------------------------------------------------------------------------


def test_binary_decode_is_zero_copy_when_aligned() -> None:
    body = np.arange(6, dtype="<f4").tobytes()
    array = decode_binary_data(memoryview(body), [2, 3], 6, "FP32", "x")
    assert np.shares_memory(array, np.frombuffer(body, dtype=np.uint8))
    np.testing.assert_array_equal(array, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_binary_decode_copies_unaligned_data() -> None:
    body = b"\0" + np.arange(3, dtype="<f8").tobytes()
    array = decode_binary_data(memoryview(body)[1:], [3], 3, "FP64", "x")
    assert array.flags.aligned
    np.testing.assert_array_equal(array, [0.0, 1.0, 2.0])


@pytest.mark.parametrize(
    ("raw", "shape", "datatype", "message"),
    [
        (
            b"\0" * 7,
            [2],
            "FP32",
            "'binary_data_size' is 7 bytes but 'shape' \\[2\\] of FP32 needs 8",
        ),
        (b"\x00\x02", [2], "BOOL", "only bytes 0 and 1"),
        (b"\x01\x00\x00", [1], "BYTES", "too small for 1 BYTES elements"),
        (struct.pack("<I", 10) + b"abc", [1], "BYTES", "declares 10 bytes but only 3 remain"),
        (struct.pack("<I", 1) + b"ab", [1], "BYTES", "is 6 but 1 BYTES elements use 5"),
        (struct.pack("<I", 1) + b"a" + b"\0\0\0", [2], "BYTES", "cut off"),
    ],
)
def test_binary_data_refused(raw: bytes, shape: list[int], datatype: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_binary_data(memoryview(raw), shape, int(np.prod(shape)), datatype, "x")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=20), max_size=10))
def test_bytes_serialization_round_trips(items: list[bytes]) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    raw = serialize_bytes(array)
    assert len(raw) == sum(4 + len(i) for i in items)
    assert list(deserialize_bytes(memoryview(raw), len(items), "x")) == items


def test_binary_data_of_outputs() -> None:
    assert binary_data(np.array([1, 2], dtype=np.int32), "INT32") == b"\x01\0\0\0\x02\0\0\0"
    assert binary_data(np.array(["ab"], dtype=object), "BYTES") == b"\x02\0\0\0ab"
    assert datatype_of(np.zeros(1, np.float16)) == "FP16"
    assert datatype_of(np.array(["x"])) == "BYTES"


# -- v2 infer messages ----------------------------------------------------------------


def test_decode_json_request_with_everything() -> None:
    body = _request(
        [{"name": "X", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
        id="abc",
        parameters={"binary_data_output": True, "custom": "x"},
        outputs=[{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
        model_name="ignored",  # clients add fields; unknown top-level fields are ignored
    )
    request = decode_infer_request(body, None)
    assert request.id == "abc"
    assert request.binary_output is True
    assert [(o.name, o.binary) for o in request.outputs or []] == [("a", None), ("b", False)]
    assert request.parameters == {"binary_data_output": True, "custom": "x"}


def test_decode_binary_request_mixes_json_and_binary_inputs() -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "a",
                    "shape": [2],
                    "datatype": "INT32",
                    "parameters": {"binary_data_size": 8},
                },
                {"name": "b", "shape": [1], "datatype": "FP32", "data": [0.5]},
                {
                    "name": "c",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 6},
                },
            ]
        }
    )
    body = header + np.array([7, 8], dtype="<i4").tobytes() + struct.pack("<I", 2) + b"hi"
    request = decode_infer_request(body, len(header))
    a, b, c = request.inputs
    np.testing.assert_array_equal(a.array, [7, 8])
    np.testing.assert_array_equal(b.array, [0.5])
    assert list(c.array) == [b"hi"]


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{", None, "request body is not valid JSON"),
        (b"[]", None, "must be a JSON object, got an array"),
        (b"[" * 2000 + b"]" * 2000, None, "not valid JSON"),
        (b"{}", None, "'inputs' must be a non-empty array"),
        (b'{"inputs": [1]}', None, r"inputs\[0\] must be an object"),
        (b'{"inputs": [{"shape": [1]}]}', None, r"inputs\[0\]: 'name' must be a non-empty string"),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FLOAT", "data": [1]}]}',
            None,
            "'datatype' 'FLOAT' is not one of",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}',
            None,
            "neither 'data' nor a 'binary_data_size'",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},'
            b' {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            None,
            "appears more than once",
        ),
        (
            b'{"id": 5, "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}',
            None,
            "'id' must be a string",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "o", "parameters": {"binary_data": "yes"}}]}',
            None,
            "parameter 'binary_data' must be true or false",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "outputs": [{"name": "o", "parameters": {"classification": 2}}]}',
            None,
            "classification extension is not supported",
        ),
        (
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],'
            b' "parameters": []}',
            None,
            "'parameters' must be an object",
        ),
    ],
)
def test_decode_request_refused(body: bytes, header_length: int | None, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_infer_request(body, header_length)


def _binary_body(size: object, tail: bytes, data: bool = False) -> tuple[bytes, int]:
    entry: dict[str, object] = {"name": "a", "shape": [2], "datatype": "FP32"}
    entry["parameters"] = {"binary_data_size": size}
    if data:
        entry["data"] = [1, 2]
    header = orjson.dumps({"inputs": [entry]})
    return header + tail, len(header)


@pytest.mark.parametrize(
    ("size", "tail", "data", "message"),
    [
        (16, b"\0" * 8, False, "runs past the end of the body"),
        (8, b"\0" * 12, False, "carries 12 bytes of binary data but .* add up to 8"),
        (-1, b"", False, "must be a non-negative integer"),
        ("8", b"\0" * 8, False, "must be a non-negative integer"),
        (8, b"\0" * 8, True, "has both 'data' and a 'binary_data_size'"),
    ],
)
def test_inconsistent_binary_headers_refused(
    size: object, tail: bytes, data: bool, message: str
) -> None:
    body, length = _binary_body(size, tail, data)
    with pytest.raises(BadRequest, match=message):
        decode_infer_request(body, length)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "must be an integer"),
        ("0", "is 0 but the body"),
        ("999", "is 999 but the body has 10"),
    ],
)
def test_header_length_checked_against_body(value: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_header_length(value, 10)
    assert parse_header_length(None, 10) is None
    assert parse_header_length("10", 10) == 10


def test_encode_result_json_and_binary() -> None:
    result = InferResult(
        model_name="m",
        model_version="1",
        outputs=[
            Tensor("p", "FP32", np.array([[0.5, 0.25]], dtype=np.float32)),
            Tensor("l", "INT64", np.array([3], dtype=np.int64)),
            Tensor("t", "BYTES", np.array(["hé"], dtype=object)),
        ],
        binary=[False, True, True],
        id="r1",
    )
    body, header_length = encode_infer_result(result)
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert header["id"] == "r1" and header["model_version"] == "1"
    p, label, text = header["outputs"]
    assert p == {"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.25]}
    assert label["parameters"] == {"binary_data_size": 8} and "data" not in label
    assert text["parameters"] == {"binary_data_size": 4 + len("hé".encode())}
    tail = body[header_length:]
    assert np.frombuffer(tail[:8], "<i8")[0] == 3
    assert tail[8:] == struct.pack("<I", 3) + "hé".encode()

    result.binary = [False, False, False]
    body, header_length = encode_infer_result(result)
    assert header_length is None
    assert orjson.loads(body)["outputs"][2]["data"] == ["hé"]


# -- KServe v1 ------------------------------------------------------------------------


def test_v1_single_input_rows_take_the_model_datatype() -> None:
    spec = TensorSpec("X", "FP32", (-1, 2))
    request = decode_v1_request(b'{"instances": [[1, 2], [3, 4]]}', [spec])
    (tensor,) = request.inputs
    assert tensor.datatype == "FP32" and tensor.array.dtype == np.float32
    assert tensor.array.shape == (2, 2)


def test_v1_several_inputs_take_objects() -> None:
    specs = [TensorSpec("a", "FP32", (-1, 1)), TensorSpec("b", "BYTES", (-1, 1))]
    request = decode_v1_request(
        b'{"instances": [{"a": [1], "b": ["x"]}, {"a": [2], "b": ["y"]}]}', specs
    )
    a, b = request.inputs
    assert a.array.shape == (2, 1) and list(b.array.reshape(-1)) == ["x", "y"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": []}', "'instances' must be a non-empty array"),
        (b'{"instances": [[1, 2], [3]]}', "does not match 'shape'"),
        (b'{"instances": [["a", "b"]]}', "is a string"),
        (b'{"instances": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}", "nested deeper than 32"),
    ],
)
def test_v1_refused(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        decode_v1_request(body, [TensorSpec("X", "FP32", (-1, 2))])


def test_v1_several_inputs_need_objects() -> None:
    specs = [TensorSpec("a", "FP32", (-1, 1)), TensorSpec("b", "FP32", (-1, 1))]
    with pytest.raises(BadRequest, match="each instance must be an object"):
        decode_v1_request(b'{"instances": [[1, 2]]}', specs)
    with pytest.raises(BadRequest, match="missing input 'b'"):
        decode_v1_request(b'{"instances": [{"a": [1]}]}', specs)
    with pytest.raises(BadRequest, match=r"unknown inputs \['c'\]"):
        decode_v1_request(b'{"instances": [{"a": [1], "b": [1], "c": 1}]}', specs)


def test_v1_predictions_per_row() -> None:
    one = InferResult("m", None, [Tensor("y", "FP32", np.array([[1.0], [2.0]], np.float32))])
    assert orjson.loads(encode_v1_result(one, 2)) == {"predictions": [[1.0], [2.0]]}
    two = InferResult(
        "m",
        None,
        [
            Tensor("label", "INT64", np.array([1, 0])),
            Tensor("p", "FP32", np.array([[0.25], [0.5]])),
        ],
    )
    assert orjson.loads(encode_v1_result(two, 2)) == {
        "predictions": [{"label": 1, "p": [0.25]}, {"label": 0, "p": [0.5]}]
    }


# -- big data and the model's signature ----------------------------------------------------


@pytest.mark.parametrize("datatype", ["FP32", "INT8", "BOOL", "BYTES"])
def test_big_data_is_converted_slice_by_slice_to_the_same_array(datatype: str) -> None:
    count = 200_003  # more than three slices, the last one short
    values: list[object] = {
        "FP32": [i / 7 for i in range(count)],
        "INT8": [i % 256 - 128 for i in range(count)],
        "BOOL": [i % 3 == 0 for i in range(count)],
        "BYTES": [str(i) for i in range(count)],
    }[datatype]
    array = decode_json_data(values, [count], count, datatype, "x")
    expected = np.array(values, dtype=NUMPY_DTYPES[datatype])
    assert array.dtype == expected.dtype and np.array_equal(array, expected)


def test_big_data_out_of_range_in_its_last_slice_is_refused() -> None:
    values = [1] * 200_000 + [300]
    with pytest.raises(BadRequest, match="out of range for INT8"):
        decode_json_data(values, [len(values)], len(values), "INT8", "x")
    floats = [0.5] * 200_000 + [1e39]
    with pytest.raises(BadRequest, match="out of range for FP32"):
        decode_json_data(floats, [len(floats)], len(floats), "FP32", "x")


SIGNATURE = Signature.of(
    "m",
    [TensorSpec("X", "FP32", (-1, 4))],
    [TensorSpec("label", "INT64", (-1,)), TensorSpec("p", "FP32", (-1, 3))],
)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"inputs": [{"name": f"x{i}"} for i in range(3)]},
         "the request has 3 inputs; model 'm' has 1: ['X']"),
        ({"inputs": [{"name": "Z", "datatype": "?"}]}, "unknown input 'Z'; model 'm' has"),
        # The datatype is refused before the data, which is not even valid here.
        ({"inputs": [{"name": "X", "datatype": "BYTES", "shape": [1, 4], "data": 7}]},
         "input 'X' has datatype BYTES; model 'm' expects FP32"),
        ({"inputs": [{"name": "X", "datatype": "FP32", "shape": [4, 1], "data": 7}]},
         "input 'X' has shape [4, 1]; model 'm' expects [-1, 4]"),
        ({"inputs": [{"name": "X"}], "outputs": [{"name": f"o{i}"} for i in range(3)]},
         "the request asks for 3 outputs; model 'm' has 2"),
        ({"inputs": [{"name": "X"}], "outputs": [{"name": "q"}]}, "unknown output 'q'"),
    ],
)  # fmt: skip
def test_the_signature_is_checked_before_any_data(doc: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        decode_infer_request(orjson.dumps(doc), None, SIGNATURE)


def test_header_length_takes_ascii_digits_only() -> None:
    for value in ("\u00b2", "\u0663", "1\u00b2"):
        with pytest.raises(BadRequest, match="must be an integer"):
            parse_header_length(value, 100)


def test_big_json_naming_far_more_tensors_than_the_model_is_refused_before_parsing() -> None:
    names = [{"name": f"x{i}"} for i in range(100)]
    body = orjson.dumps({"inputs": names}) + b" " * (64 * 1024)  # past the scan threshold
    with pytest.raises(BadRequest, match="names 100 tensors; model 'm' has 1 input and 2"):
        decode_infer_request(body, None, SIGNATURE)
    # "name" as a BYTES value is data, not a key: such a request is decoded as usual.
    text = Signature.of("t", [TensorSpec("s", "BYTES", (-1,))], [TensorSpec("y", "FP32", (-1,))])
    values = ["name"] * 20_000
    doc = {"inputs": [{"name": "s", "shape": [len(values)], "datatype": "BYTES", "data": values}]}
    request = decode_infer_request(orjson.dumps(doc), None, text)
    assert request.inputs[0].array.shape == (20_000,)
