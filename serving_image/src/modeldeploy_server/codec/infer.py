"""Open Inference Protocol v2 infer requests and responses, JSON and binary.

``decode_infer_request`` checks everything the protocol alone can check (structure,
names, datatypes, shapes against data, binary sizes) and, given the model's ``Signature``,
each input's name, datatype and shape and the number of inputs and outputs, before any
tensor data is decoded: 400 k inputs, 2 M outputs or 16 M BYTES elements for an FP32 input
are refused for the price of reading their names. The data plane checks the rest.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..errors import BadRequest
from ..tensors import InferRequest, InferResult, RequestedOutput, Signature, Tensor
from .binary import binary_data, decode_binary_data
from .datatypes import DATATYPES
from .json_tensors import decode_json_data, json_data, json_type, validate_shape

_EMPTY = memoryview(b"")


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """Validate ``Inference-Header-Content-Length`` against the body."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):  # str.isdigit() also takes "²" or "٣"
        raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {value!r}")
    length = int(value)
    if length == 0 or length > body_length:
        raise BadRequest(
            f"Inference-Header-Content-Length is {length} but the body has {body_length} bytes"
        )
    return length


def load_json_object(raw: bytes | memoryview, what: str = "request body") -> dict[str, Any]:
    """Parse JSON that must be an object; errors name the problem and never leak internals."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    if type(doc) is not dict:
        raise BadRequest(f"{what} must be a JSON object, got {json_type(doc)}")
    return doc


def _parameters(value: object, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise BadRequest(f"{what}: 'parameters' must be an object, got {json_type(value)}")
    return value


def _flag(parameters: dict[str, Any] | None, key: str, what: str) -> bool | None:
    if not parameters or key not in parameters:
        return None
    value = parameters[key]
    if type(value) is not bool:
        raise BadRequest(f"{what}: parameter '{key}' must be true or false")
    return value


_NAME_KEY = re.compile(rb'"name"\s*:')
NAME_SCAN_BYTES = 64 * 1024
"""JSON this large is scanned for "name" keys before it is parsed (see _check_name_count)."""
_NAME_SLACK = 64
"""Room for "name" keys inside free-form "parameters"."""


def _check_name_count(raw: bytes | memoryview, signature: Signature) -> None:
    """Refuse, before parsing it, JSON that names far more tensors than the model has: the
    parse alone of 2 M outputs takes a second and hundreds of MB. A count of the raw bytes,
    not a proof (a key spelled with escapes is not seen; the checks after parsing remain)."""
    if len(raw) < NAME_SCAN_BYTES:
        return
    data = raw if isinstance(raw, bytes) else bytes(raw)
    limit = len(signature.inputs) + len(signature.outputs) + _NAME_SLACK
    if data.count(b'"name"') <= limit:  # fast, and an upper bound of the keys
        return
    named = sum(1 for _ in _NAME_KEY.finditer(data))
    if named > limit:
        inputs, outputs = len(signature.inputs), len(signature.outputs)
        raise BadRequest(
            f"the request names {named} tensors; model '{signature.model}' has {inputs} "
            f"input{'s' * (inputs != 1)} and {outputs} output{'s' * (outputs != 1)}"
        )


def decode_infer_request(
    body: bytes, header_length: int | None, signature: Signature | None = None
) -> InferRequest:
    """Decode a v2 infer body (JSON, or JSON header plus binary tensors), checked against
    ``signature`` on the way when it is given."""
    if header_length is None:
        if signature is not None:
            _check_name_count(body, signature)
        doc = load_json_object(body)
        tail = _EMPTY
    else:
        view = memoryview(body)
        if signature is not None:
            _check_name_count(view[:header_length], signature)
        doc = load_json_object(view[:header_length], "inference header")
        tail = view[header_length:]
    max_elements = len(body)

    raw_inputs = doc.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty array of input tensors")
    if signature is not None:
        signature.check_input_count(len(raw_inputs))
    outputs = _decode_outputs(doc.get("outputs"), signature)
    inputs: list[Tensor] = []
    seen: set[str] = set()
    offset = 0
    for position, raw in enumerate(raw_inputs):
        if type(raw) is not dict:
            raise BadRequest(f"inputs[{position}] must be an object, got {json_type(raw)}")
        name = raw.get("name")
        if type(name) is not str or not name:
            raise BadRequest(f"inputs[{position}]: 'name' must be a non-empty string")
        what = f"input '{name}'"
        if name in seen:
            raise BadRequest(f"{what} appears more than once")
        seen.add(name)
        if signature is not None and name not in signature.inputs:
            signature.check_input(name, None, None)  # says which inputs the model has
        datatype = raw.get("datatype")
        if type(datatype) is not str or datatype not in DATATYPES:
            raise BadRequest(
                f"{what}: 'datatype' {datatype!r} is not one of {', '.join(sorted(DATATYPES))}"
            )
        shape, count = validate_shape(raw.get("shape"), what, max_elements)
        if signature is not None:
            signature.check_input(name, datatype, tuple(shape))
        parameters = _parameters(raw.get("parameters"), what)
        size = parameters.get("binary_data_size") if parameters else None
        if size is None:
            if "data" not in raw:
                raise BadRequest(f"{what} has neither 'data' nor a 'binary_data_size' parameter")
            array = decode_json_data(raw["data"], shape, count, datatype, what)
        else:
            if type(size) is not int or size < 0:
                raise BadRequest(f"{what}: 'binary_data_size' must be a non-negative integer")
            if "data" in raw:
                raise BadRequest(f"{what} has both 'data' and a 'binary_data_size' parameter")
            if offset + size > len(tail):
                raise BadRequest(
                    f"{what}: 'binary_data_size' {size} runs past the end of the body "
                    f"({len(tail) - offset} binary bytes left)"
                )
            chunk = tail[offset : offset + size]
            offset += size
            array = decode_binary_data(chunk, shape, count, datatype, what)
        inputs.append(Tensor(name, datatype, array))
    if offset != len(tail):
        raise BadRequest(
            f"the body carries {len(tail)} bytes of binary data but the inputs' "
            f"'binary_data_size' add up to {offset}"
        )

    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise BadRequest(f"'id' must be a string, got {json_type(request_id)}")
    parameters = _parameters(doc.get("parameters"), "request")
    binary_output = bool(_flag(parameters, "binary_data_output", "request"))
    return InferRequest(
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        outputs=outputs,
        binary_output=binary_output,
    )


def _decode_outputs(
    raw_outputs: object, signature: Signature | None
) -> list[RequestedOutput] | None:
    if raw_outputs is None or raw_outputs == []:
        return None  # none named: every output, as when "outputs" is absent
    if type(raw_outputs) is not list:
        raise BadRequest(f"'outputs' must be an array, got {json_type(raw_outputs)}")
    if signature is not None:
        signature.check_output_count(len(raw_outputs))
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_outputs):
        if type(raw) is not dict:
            raise BadRequest(f"outputs[{position}] must be an object, got {json_type(raw)}")
        name = raw.get("name")
        if type(name) is not str or not name:
            raise BadRequest(f"outputs[{position}]: 'name' must be a non-empty string")
        if name in seen:
            raise BadRequest(f"output '{name}' is requested more than once")
        seen.add(name)
        if signature is not None:
            signature.check_output(name)
        what = f"output '{name}'"
        parameters = _parameters(raw.get("parameters"), what)
        if parameters and "classification" in parameters:
            raise BadRequest(f"{what}: the classification extension is not supported")
        outputs.append(RequestedOutput(name, _flag(parameters, "binary_data", what)))
    return outputs


def encode_infer_result(result: InferResult) -> tuple[bytes, int | None]:
    """Encode a response; returns the body and the JSON header length when binary follows."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor, binary in zip(result.outputs, result.binary, strict=True):
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.array.shape),
        }
        if binary:
            raw = binary_data(tensor.array, tensor.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = json_data(tensor.array)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": result.model_name}
    if result.model_version is not None:
        doc["model_version"] = result.model_version
    if result.id is not None:
        doc["id"] = result.id
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
