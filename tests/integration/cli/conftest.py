"""The CLI against the real control plane and a real server serving a model it exported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modeldeploy.cli import main
from modeldeploy.kube import Kube, api_client_from_environment
from tests.support.servers import ServerProcess

MODEL_NAME = "iris"
WIDTH = 4


@pytest.fixture
def kube(cluster: Any) -> Iterator[Kube]:
    """The kubernetes client as the tests' own port to the API (the admin identity)."""
    api_client = api_client_from_environment(str(cluster.kubeconfig))
    yield Kube(api_client, field_manager="cli-tests")
    api_client.close()


def cli(cluster: Any, *argv: str) -> int:
    """``modeldeploy ARGV --kubeconfig`` of the local control plane."""
    return main([*argv, "--kubeconfig", str(cluster.kubeconfig)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A scikit-learn pipeline exported by ``modeldeploy export``: its files and sample."""
    directory = tmp_path_factory.mktemp("exported")
    X, y = make_classification(
        n_samples=150, n_features=WIDTH, n_informative=3, n_redundant=0, n_classes=3,
        random_state=0,
    )  # fmt: skip
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    joblib.dump(model, directory / "model.joblib")
    np.save(directory / "X.npy", X)
    output = directory / "model.onnx"
    code = main(["export", str(directory / "model.joblib"), "--sample", str(directory / "X.npy"),
                 "--output", str(output), "--name", MODEL_NAME])  # fmt: skip
    assert code == 0
    return {"model": model, "X": X, "onnx": output, "directory": directory}


@pytest.fixture(scope="module")
def server(
    trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """``modeldeploy-server`` serving the exported model as ``iris`` on a free port."""
    logs = tmp_path_factory.mktemp("server-log")
    running = ServerProcess(trained["onnx"], logs / "server.log", name=MODEL_NAME)
    try:
        running.wait_ready()
        yield running
    finally:
        assert running.stop() == 0, running.log()


def write_rows(path: Path, rows: Any) -> Path:
    path.write_text(json.dumps(rows))
    return path
