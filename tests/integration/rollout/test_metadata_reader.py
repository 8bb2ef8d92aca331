"""The operator's reader of a serving pod's contract, against real ``modeldeploy-server``
processes on loopback: Open Inference Protocol metadata, and the class labels the server
exports from its training profile before any request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeldeploy.rollout.contract import (
    ContractError,
    ModelContract,
    ServerMetadata,
    TensorContract,
    differences,
)
from tests.support.onnx_models import make_classifier
from tests.support.profiles import build_profile, classifier_training_rows
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.integration


def serve(model: Path, log: Path, *args: str) -> ServerProcess:
    return ServerProcess(model, log, *args, name="iris")


def reader(server: ServerProcess) -> ServerMetadata:
    return ServerMetadata(server.http_port, server.metrics_port)


def test_a_classifier_with_a_profile_reads_as_inputs_outputs_and_classes(
    models: dict[str, Path], tmp_path: Path
) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(build_profile(classifier_training_rows(), models["classifier"])))
    server = serve(
        models["classifier"], tmp_path / "server.log", "--profile-uri", f"file://{profile}"
    )
    try:
        server.wait_ready()
        contract = reader(server).read("127.0.0.1", "iris")
    finally:
        server.stop()
    assert contract == ModelContract(
        inputs=(TensorContract("X", "FP32", (-1, 4)),),
        outputs=(
            TensorContract("label", "INT64", (-1,)),
            TensorContract("probabilities", "FP32", (-1, 3)),
        ),
        classes=frozenset({"0", "1", "2"}),
    )


def test_two_real_servers_compare_as_the_operator_compares_the_tracks(
    models: dict[str, Path], tmp_path: Path
) -> None:
    five = make_classifier(tmp_path / "five.onnx", n_features=5)
    stable = serve(models["classifier"], tmp_path / "stable.log")
    canary = serve(five, tmp_path / "canary.log")
    try:
        stable.wait_ready()
        canary.wait_ready()
        found = differences(
            reader(stable).read("127.0.0.1", "iris"), reader(canary).read("127.0.0.1", "iris")
        )
    finally:
        stable.stop()
        canary.stop()
    assert found == ["input X: shape [-1,4] -> [-1,5]"]


def test_an_unreadable_server_is_a_contract_error_that_says_why(
    models: dict[str, Path], tmp_path: Path
) -> None:
    server = serve(models["classifier"], tmp_path / "server.log")
    try:
        server.wait_ready()
        with pytest.raises(ContractError, match=r"/v2/models/other answered 404"):
            reader(server).read("127.0.0.1", "other")
    finally:
        server.stop()
    with pytest.raises(ContractError, match="failed"):
        reader(server).read("127.0.0.1", "iris")  # nobody listens any more
