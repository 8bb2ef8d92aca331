"""Encoders and decoders between the wire (JSON, binary tensors, KServe v1) and tensors.

The decoders validate by hand, so that a bad request costs little and its error names the
input and the problem; pydantic models in ``types`` describe the same messages.
"""
