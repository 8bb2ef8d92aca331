"""KServe anchor: KServe's Python ModelServer with an onnxruntime model class.

Usage: python kserve_server.py --model_name rf --model_path model.onnx --http_port P

The model does the same per-request work as our server (decode the input tensor, one
session.run, encode every output, binary when the request asks for binary outputs).
gRPC and the per-request latency log line are switched off, which only helps KServe.
"""

from __future__ import annotations

import argparse

import kserve
import numpy as np
import onnxruntime as ort
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import from_np_dtype

_config_init = uvicorn.Config.__init__


def _loopback_config_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    # KServe's RESTServer hard-codes host 0.0.0.0; the benchmark listens on loopback only.
    kwargs["host"] = "127.0.0.1"
    _config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config_init  # type: ignore[method-assign]


class OnnxRuntimeModel(kserve.Model):
    def __init__(self, name: str, model_path: str) -> None:
        super().__init__(name)
        self.model_path = model_path
        self.ready = False

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.model_path, options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None) -> InferResponse:  # type: ignore[no-untyped-def, override]
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        results = self._session.run(None, {self._input: x})
        outputs = []
        for name, value in zip(self._outputs, results, strict=True):
            output = InferOutput(
                name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype)
            )
            output.set_data_from_numpy(value, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or "", model_name=self.name, infer_outputs=outputs
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = OnnxRuntimeModel(args.model_name, args.model_path)
    model.load()
    kserve.ModelServer(enable_grpc=False, enable_latency_logging=False).start([model])
