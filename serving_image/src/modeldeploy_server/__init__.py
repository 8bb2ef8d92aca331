"""modeldeploy-server: an ONNX Runtime server that speaks the Open Inference Protocol."""

__version__ = "0.1.0"
