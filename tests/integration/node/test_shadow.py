"""Shadow rollouts on the real node: the stable pods mirror copies of live requests to the
canary's pods and compare the two models' answers row by row, per slice of the training
profile.

Everything is real: scikit-learn models exported by ``modeldeploy export`` (model and
profile), the server image in pods, the object store, CoreDNS and the canary Service (the
stable pods reach the canary by name), the kubelet refreshing the mounted shadow ConfigMap,
Prometheus discovering the pods through the API, and the operator.

- A canary retrained with the labels of one region of one feature swapped (versicolor and
  virginica, where petal_length is in the profile's bin [4.54, 5.13)) keeps the class
  frequencies: prediction-drift passes on it, shadow-slice-agreement fails and names that
  slice; it is rolled back before any client sees an answer from it, and ``kubectl describe``
  says where it is wrong.
- A retrained, equivalent model passes and is promoted, although its server is killed in the
  middle of the shadow step: no client request fails, the copies to the dead canary are dropped
  and counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modeldeploy_dev.cluster.node import kill_container
from tests.integration.node.test_serving import SMALL, routed, service_address
from tests.integration.node.test_traffic import canary, stable_on
from tests.support.exports import export
from tests.support.kubectl import apply_md, get
from tests.support.operator_process import OperatorProcess, wait_for
from tests.support.prometheus import Discovery, Prometheus
from tests.support.traffic import ClosedLoop, pods_of

pytestmark = pytest.mark.integration

NAME = "iris"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
REGION = (4.54, 5.13)
"""The defect's region of petal_length: one bin of the training profile's histogram."""
SLICE = "petal_length in [4.54, 5.13)"
"""How the server and the gate name that bin."""
TRACK = "serving.modeldeploy.io/track"


def _iris() -> tuple[Any, np.ndarray]:
    import pandas as pd
    from sklearn.datasets import load_iris

    iris = load_iris()
    return pd.DataFrame(iris.data.astype(np.float32), columns=FEATURES), iris.target


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """v1; "defect": the same forest trained with the labels 1 and 2 swapped where
    petal_length is in REGION (about one row in five of iris, so the class frequencies barely
    move); "retrained": another seed on the right labels."""
    from sklearn.ensemble import RandomForestClassifier

    rows, labels = _iris()
    root = tmp_path_factory.mktemp("shadow-models")
    length = rows["petal_length"].to_numpy()
    region = (length >= REGION[0]) & (length < REGION[1])
    swapped = labels.copy()
    swapped[region & (labels == 1)] = 2
    swapped[region & (labels == 2)] = 1
    assert 0 < region.sum() < len(labels) // 4

    def forest(seed: int, y: np.ndarray) -> Any:
        return RandomForestClassifier(n_estimators=30, random_state=seed).fit(rows, y)

    models = {
        "v1": export(forest(0, labels), rows, root / "v1"),
        "defect": export(forest(0, swapped), rows, root / "defect"),
        "retrained": export(forest(1, labels), rows, root / "retrained"),
    }
    edges = json.loads(models["v1"][1].read_text())["features"][2]["histogram"]["edges"]
    assert [round(e, 2) for e in edges[6:8]] == list(REGION), edges  # REGION is one bin
    return models


def _traffic() -> dict[str, Any]:
    """One request of all 150 iris rows: every request covers every slice."""
    rows, _ = _iris()
    data = rows.to_numpy()
    return {
        "inputs": [
            {"name": "X", "shape": list(data.shape), "datatype": "FP32",
             "data": data.ravel().tolist()}
        ]
    }  # fmt: skip


@pytest.fixture
def prometheus(cluster: Any, node_namespace: str, tmp_path: Path) -> Iterator[Prometheus]:
    with Prometheus(
        tmp_path / "prometheus",
        binary=cluster.bin_dir / "prometheus",
        kubernetes=Discovery(cluster.kubeconfig, (node_namespace,)),
    ) as running:
        yield running


@pytest.fixture
def versions(store: Any, node_namespace: str, exported: dict[str, tuple[Path, Path]]) -> Any:
    """``versions(which, version)``: the exported model and its profile in the object store,
    as ``spec.model``."""
    secret = store.grant(node_namespace)

    def model(which: str, version: str) -> dict[str, Any]:
        onnx, profile = exported[which]
        uri, digest = store.upload(onnx, f"{node_namespace}/{version}/model.onnx")
        profile_uri, profile_digest = store.upload(
            profile, f"{node_namespace}/{version}/model.profile.json"
        )
        return {
            "uri": uri,
            "sha256": digest,
            "credentialsSecret": secret,
            "version": version,
            "profile": {"uri": profile_uri, "sha256": profile_digest},
        }

    return model


def _spec(model: dict[str, Any], prometheus: Prometheus, shadow: str = "60s") -> dict[str, Any]:
    return {
        "model": model,
        "replicas": 1,
        "runtime": {"resources": SMALL},
        "rollout": {
            "strategy": "Canary",
            "progressDeadline": "4m",
            # The whole rollout is one shadow step: mirror everything, then promote.
            "steps": [{"shadow": {"percent": 100, "duration": shadow}}],
            "analysis": {
                "interval": "5s",
                "failureLimit": 2,
                "prometheus": {"address": prometheus.url},
                "metrics": [
                    {"name": "error-rate", "max": 0.01, "minSamples": 10},
                    # One request's rows: fewer than the slice needs, so that a run judging
                    # the slice has judged the drift as well.
                    {"name": "prediction-drift", "max": 0.1, "minSamples": 150},
                    {"name": "shadow-slice-agreement", "min": 0.95, "minSamples": 50},
                ],
            },
        },
    }


def _serving_v1(cluster: Any, namespace: str, versions: Any, prometheus: Prometheus) -> str:
    """v1 Ready and routed; its Service's address."""
    apply_md(cluster, namespace, NAME, _spec(versions("v1", "v1"), prometheus))
    wait_for(lambda: stable_on(cluster, namespace, "v1"), 240, "v1 Ready")
    service = service_address(cluster, namespace)
    wait_for(lambda: routed(service), 60, "the Service to route")
    return service


def _shadow_count(prometheus: Prometheus, namespace: str, metric: str, by: str = "") -> float:
    query = f'sum({metric}{{namespace="{namespace}",deployment="{NAME}",track="stable"{by}}})'
    return prometheus.value(query) or 0.0


def _pods(cluster: Any, namespace: str, track: str) -> dict[str, int]:
    """uid -> container restarts of every pod of ``track``."""
    found = {}
    for pod in pods_of(cluster, namespace, NAME):
        if pod["metadata"]["labels"].get(TRACK) == track:
            containers = pod["status"].get("containerStatuses", [])
            found[pod["metadata"]["uid"]] = sum(c["restartCount"] for c in containers)
    return found


def _mirroring(cluster: Any, namespace: str) -> dict[str, Any]:
    config = get(cluster, "configmap", namespace, f"{NAME}-shadow")
    assert config is not None
    return dict(json.loads(config["data"]["config.json"]))


def test_a_defect_in_one_slice_is_rolled_back_before_any_client_sees_it(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    versions: Any,
    prometheus: Prometheus,
) -> None:
    service = _serving_v1(cluster, node_namespace, versions, prometheus)
    stable_pods = _pods(cluster, node_namespace, "stable")
    runs: list[dict[str, dict[str, Any]]] = []

    def rolled_back() -> Any:
        md = get(cluster, "mdep", node_namespace, NAME)
        results = canary(md).get("analysis") or []
        if results and (not runs or runs[-1] != {r["name"]: r for r in results}):
            runs.append({r["name"]: r for r in results})
        history = (md or {}).get("status", {}).get("history") or []
        done = history and history[-1]["model"].get("version") == "v2" and not canary(md)
        return md if done else None

    with ClosedLoop(service, NAME, clients=2, body=_traffic()) as load:
        apply_md(cluster, node_namespace, NAME, _spec(versions("defect", "v2"), prometheus))
        wait_for(
            lambda: canary(get(cluster, "mdep", node_namespace, NAME)).get("state") == "Shadowing",
            240,
            "the canary shadowed",
        )
        assert _mirroring(cluster, node_namespace)["percent"] == 100
        md = wait_for(rolled_back, 180, "the defective canary rolled back")

    # No client saw the canary, and none failed.
    assert load.failed == 0, load.summary()
    assert set(load.versions) == {"v1"}, load.versions
    last = md["status"]["history"][-1]
    assert (last["result"], last["reason"]) == ("RolledBack", "AnalysisFailed"), last
    assert SLICE in last["message"], last
    # In the run that rolled it back the distributions agree, the rows do not: the message
    # says what failed, then what passed.
    failed, _, passed = last["message"].partition("; passing: ")
    assert "shadow-slice-agreement" in failed and SLICE in failed, last
    assert "prediction-drift" in passed, last
    failing = [
        run for run in runs if run.get("shadow-slice-agreement", {}).get("result") == "Failed"
    ]
    assert failing, runs
    assert SLICE in failing[-1]["shadow-slice-agreement"]["message"], failing[-1]
    assert failing[-1]["shadow-slice-agreement"]["value"] < 0.5, failing[-1]
    # What a user reads: kubectl describe names the slice.
    described = cluster.kubectl("describe", "mdep", NAME, "-n", node_namespace).stdout
    assert "AnalysisFailed" in described and SLICE in described, described
    told = json.loads(
        cluster.kubectl(
            "get", "events", "-n", node_namespace, "--field-selector",
            f"involvedObject.name={NAME},reason=AnalysisFailed", "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    assert [e["type"] for e in told] == ["Warning"], [(e["type"], e["message"]) for e in told]
    # The stable pods compared rows and were never restarted for it; mirroring is off again.
    assert _shadow_count(prometheus, node_namespace, "modeldeploy_shadow_rows_total") > 0
    assert _pods(cluster, node_namespace, "stable") == stable_pods
    assert _mirroring(cluster, node_namespace) == {"percent": 0, "target": ""}


def test_an_equivalent_model_is_promoted_though_it_crashes_while_shadowed(
    cluster: Any,
    node_namespace: str,
    node_operator: OperatorProcess,
    versions: Any,
    prometheus: Prometheus,
) -> None:
    service = _serving_v1(cluster, node_namespace, versions, prometheus)
    rows = "modeldeploy_shadow_rows_total"

    with ClosedLoop(service, NAME, clients=2, body=_traffic()) as load:
        apply_md(
            cluster, node_namespace, NAME, _spec(versions("retrained", "v2"), prometheus, "90s")
        )
        wait_for(
            lambda: _shadow_count(prometheus, node_namespace, rows) >= 1500,
            240,
            "the stable pod to compare mirrored rows",
        )
        [pod] = [
            p for p in pods_of(cluster, node_namespace, NAME)
            if p["metadata"]["labels"].get(TRACK) == "canary"
        ]  # fmt: skip
        [server] = [c for c in pod["status"]["containerStatuses"] if c["name"] == "server"]
        seen = _shadow_count(prometheus, node_namespace, rows)
        # The canary crashes: every process of its server killed, no drain.
        assert kill_container(pod["metadata"]["uid"], server["containerID"]) > 0
        wait_for(
            lambda: _pods(cluster, node_namespace, "canary").get(pod["metadata"]["uid"]),
            120,
            "the kubelet to restart the canary's server",
        )
        # Mirroring goes on to the restarted server, still before any client sees it.
        wait_for(
            lambda: _shadow_count(prometheus, node_namespace, rows) >= seen + 1500,
            180,
            "mirroring to the restarted canary",
        )
        dropped = _shadow_count(
            prometheus, node_namespace, "modeldeploy_shadow_dropped_total", ',reason!="queue_full"'
        )
        assert dropped > 0, "no copy to the killed canary was dropped: was it ever down?"
        assert set(load.versions) == {"v1"}, load.versions
        md = wait_for(lambda: stable_on(cluster, node_namespace, "v2"), 240, "v2 promoted")

    assert load.failed == 0, load.summary()
    last = md["status"]["history"][-1]
    assert last["result"] == "Promoted", last
