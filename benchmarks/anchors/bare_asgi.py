"""Calibration anchor: the least a Python OIP endpoint can do (not a server anyone should run).

Raw ASGI on uvicorn (httptools, uvloop), orjson and onnxruntime: no routing beyond one path
check, no validation, no metrics, no error handling. It shows what the HTTP stack, the JSON
codec and the model cost on this machine, so the rest of our server's cost is visible.

Usage: MODEL=path/model.onnx uvicorn --app-dir benchmarks/anchors bare_asgi:app ...
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import orjson

_options = ort.SessionOptions()
_options.intra_op_num_threads = 1
_session = ort.InferenceSession(os.environ["MODEL"], _options, providers=["CPUExecutionProvider"])
_input = _session.get_inputs()[0].name
_outputs = [o.name for o in _session.get_outputs()]
_TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
_JSON = [(b"content-type", b"application/json")]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":  # every GET is a health or ready probe here
        await send({"type": "http.response.start", "status": 200, "headers": _JSON})
        await send({"type": "http.response.body", "body": b'{"ready":true}'})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    header_length = None
    for key, value in scope["headers"]:
        if key == b"inference-header-content-length":
            header_length = int(value)
    if header_length is None:
        tensor = orjson.loads(body)["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    else:
        tensor = orjson.loads(body[:header_length])["inputs"][0]
        x = np.frombuffer(body, dtype=np.float32, offset=header_length).reshape(tensor["shape"])
    results = _session.run(None, {_input: x})
    if header_length is None:
        doc = {
            "model_name": "rf",
            "outputs": [
                {"name": n, "shape": list(v.shape), "datatype": _TYPES[v.dtype], "data": v.ravel()}
                for n, v in zip(_outputs, results, strict=True)
            ],
        }
        payload = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = _JSON
    else:
        doc = {
            "model_name": "rf",
            "outputs": [
                {
                    "name": n,
                    "shape": list(v.shape),
                    "datatype": _TYPES[v.dtype],
                    "parameters": {"binary_data_size": v.nbytes},
                }
                for n, v in zip(_outputs, results, strict=True)
            ],
        }
        head = orjson.dumps(doc)
        payload = head + b"".join(v.tobytes() for v in results)
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(len(head)).encode()),
        ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
