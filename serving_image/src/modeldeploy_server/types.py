"""Open Inference Protocol (KServe v2) and KServe v1 message types.

These pydantic models describe the protocol: they document it, serve the metadata
responses and let clients and tests build messages. They import nothing else of ours.
The infer hot path does not run pydantic validation per request (see ``codec``): the
hand-written decoder there accepts exactly the shapes these models describe.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
"""Tensor element types of the Open Inference Protocol."""

Parameters = dict[str, Any]
"""Free-form parameters; values are strings, numbers or booleans."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ErrorResponse(_Message):
    """Body of every non-2xx answer."""

    error: str


class HealthLiveResponse(_Message):
    """``GET /v2/health/live``."""

    live: bool


class HealthReadyResponse(_Message):
    """``GET /v2/health/ready``; also the body of model ready."""

    ready: bool


class ServerMetadataResponse(_Message):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(_Message):
    """One input or output of a model; ``-1`` marks a dynamic dimension."""

    name: str
    datatype: Datatype
    shape: list[int]
    parameters: Parameters | None = None


class ModelMetadataResponse(_Message):
    """``GET /v2/models/{name}[/versions/{version}]``."""

    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: Parameters | None = None


class RequestInput(_Message):
    """One input tensor of an infer request; ``data`` is absent when sent as binary."""

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | None = None
    data: Any = None


class RequestOutput(_Message):
    """An output the client asks for (``binary_data`` picks the binary encoding)."""

    name: str
    parameters: Parameters | None = None


class InferenceRequest(_Message):
    """``POST /v2/models/{name}[/versions/{version}]/infer`` (the JSON part)."""

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Message):
    """One output tensor of an infer response; ``data`` is absent when sent as binary."""

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(_Message):
    """The JSON part of an infer response."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class RepositoryIndexRequest(_Message):
    """``POST /v2/repository/index``; ``ready`` limits the answer to ready models."""

    ready: bool | None = None


class RepositoryIndexItem(_Message):
    """One model of the repository index."""

    name: str
    version: str | None = None
    state: Literal["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]
    reason: str = ""


class V1ModelResponse(_Message):
    """KServe v1 ``GET /v1/models/{name}``."""

    name: str
    ready: bool


class V1PredictRequest(_Message):
    """KServe v1 ``POST /v1/models/{name}:predict``."""

    instances: list[Any]


class V1PredictResponse(_Message):
    """KServe v1 predict answer: one prediction per instance."""

    predictions: list[Any]
