"""``modeldeploy predict`` against a real ``modeldeploy-server`` serving an exported model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modeldeploy.cli import main
from tests.integration.cli.conftest import MODEL_NAME, WIDTH, cli, write_rows
from tests.support.servers import ServerProcess, free_port

pytestmark = pytest.mark.integration


def predict(*argv: str) -> int:
    return main(["predict", *argv])


def test_rows_from_json_get_the_model_s_answer(
    server: ServerProcess, trained: dict[str, Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    rows = trained["X"][:5]
    data = write_rows(tmp_path / "rows.json", rows.tolist())
    assert predict(MODEL_NAME, "--url", server.url, "--data", str(data)) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["model_name"] == MODEL_NAME
    outputs = {output["name"]: output for output in response["outputs"]}
    assert outputs["label"]["shape"] == [5]
    expected = trained["model"].predict(rows.astype(np.float32).astype(np.float64))
    assert outputs["label"]["data"] == expected.tolist()
    assert outputs["probabilities"]["shape"] == [5, 3]


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_rows_from_npy_and_csv(
    suffix: str, server: ServerProcess, trained: dict[str, Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    rows = trained["X"][:3]
    path = tmp_path / f"rows{suffix}"
    if suffix == ".npy":
        np.save(path, rows)
    else:
        header = ",".join(f"f{i}" for i in range(WIDTH))
        path.write_text(header + "\n" + "\n".join(",".join(map(repr, r)) for r in rows.tolist()))
    assert predict(MODEL_NAME, "--url", server.url, "--data", str(path)) == 0
    response = json.loads(capsys.readouterr().out)
    labels = next(o for o in response["outputs"] if o["name"] == "label")
    assert labels["data"] == trained["model"].predict(rows.astype(np.float32)).tolist()


def test_a_bad_request_prints_the_server_s_error_and_fails(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(tmp_path / "rows.json", [[1.0, 2.0]])  # 2 features, the model takes 4
    assert predict(MODEL_NAME, "--url", server.url, "--data", str(data)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(
        f"modeldeploy predict: error: POST {server.url}/v2/models/{MODEL_NAME}/infer answered 400: "
    )
    # The server's own message (its JSON "error"), naming the input and the shape it expects.
    direct = server.post(
        f"/v2/models/{MODEL_NAME}/infer",
        json={"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]},
    )
    assert direct.status_code == 400
    assert direct.json()["error"] in captured.err
    assert "Traceback" not in captured.err


def test_an_unknown_model_is_the_server_s_404(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(tmp_path / "rows.json", [[1.0, 2.0, 3.0, 4.0]])
    assert predict("absent", "--url", server.url, "--data", str(data)) == 1
    err = capsys.readouterr().err
    assert f"GET {server.url}/v2/models/absent answered 404" in err


def test_a_server_that_is_not_there_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    data = write_rows(tmp_path / "rows.json", [[1.0, 2.0, 3.0, 4.0]])
    assert predict(MODEL_NAME, "--url", url, "--data", str(data)) == 1
    assert f"cannot reach {url}/v2/models/{MODEL_NAME}" in capsys.readouterr().err


def test_without_url_the_model_is_found_through_the_deployment_s_status(
    cluster: Any, modeldeployment_crd: str, namespace: str, kube: Any, server: ServerProcess,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # Pods are simulated here, so status.url points at the local server standing in for them.
    manifest = {
        "apiVersion": "serving.modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "scorer", "namespace": namespace},
        "spec": {"model": {"uri": "https://models.example.com/iris.onnx", "name": MODEL_NAME}},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    data = write_rows(tmp_path / "rows.json", [[0.1, 0.2, 0.3, 0.4]])
    assert cli(cluster, "predict", "scorer", "-n", namespace, "--data", str(data)) == 1
    assert "has no status.url yet" in capsys.readouterr().err

    kube.patch_status(
        "serving.modeldeploy.io/v1alpha1", "ModelDeployment", namespace, "scorer",
        {"url": server.url},
    )  # fmt: skip
    assert cli(cluster, "predict", "scorer", "-n", namespace, "--data", str(data)) == 0
    assert json.loads(capsys.readouterr().out)["model_name"] == MODEL_NAME  # spec.model.name


def test_the_exported_profile_guards_the_server_and_predict_shows_its_refusal(
    trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export -> modeldeploy-server --profile-uri (reject) -> predict: the whole user path."""
    import hashlib

    profile = trained["onnx"].with_name("model.profile.json")
    guarded = ServerProcess(
        trained["onnx"], tmp_path / "guarded.log",
        "--profile-uri", str(profile),
        "--profile-sha256", hashlib.sha256(profile.read_bytes()).hexdigest(),
        "--quality-policy", "reject",
        name=MODEL_NAME,
    )  # fmt: skip
    try:
        guarded.wait_ready()
        inside = write_rows(tmp_path / "inside.json", trained["X"][:2].tolist())
        assert predict(MODEL_NAME, "--url", guarded.url, "--data", str(inside)) == 0
        assert json.loads(capsys.readouterr().out)["model_name"] == MODEL_NAME
        row = trained["X"][0].tolist()
        row[2] = 1e6  # far outside the sample's range for feature f2
        outside = write_rows(tmp_path / "outside.json", [row])
        assert predict(MODEL_NAME, "--url", guarded.url, "--data", str(outside)) == 1
        err = capsys.readouterr().err
        assert "answered 4" in err and "f2" in err, err
    finally:
        assert guarded.stop() == 0, guarded.log()
