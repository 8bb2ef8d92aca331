"""How long real pods take on the local cluster's node, as a user meets it (warm images):

- from `kubectl apply` of a ModelDeployment to its first successful prediction through the
  Service;
- from a change of `spec.model` (Canary strategy) to the first canary pod Ready.

Run on a running `make cluster` (``make bench-node``); the operator runs as a local process
with the built server image. Prints one JSON object with the figures, per round.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from modeldeploy_dev.cluster import LocalCluster, project_root
from modeldeploy_dev.cluster.store import ObjectStore
from tests.support import onnx_models
from tests.support.operator_process import OperatorProcess, wait_for

NAME = "timed"
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def log(message: str) -> None:
    print(f"[bench-node] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def predicts(cluster: LocalCluster, namespace: str) -> bool:
    found = cluster.kubectl("get", "service", NAME, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return False
    spec = json.loads(found.stdout)["spec"]
    url = f"http://{spec['clusterIP']}:{spec['ports'][0]['port']}/v2/models/{NAME}/infer"
    request = urllib.request.Request(url, data=json.dumps(BODY).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def canary_ready(cluster: LocalCluster, namespace: str) -> bool:
    out = cluster.kubectl(
        "get", "pods", "-n", namespace, "-o", "json",
        "-l", f"serving.modeldeploy.io/deployment={NAME},serving.modeldeploy.io/track=canary",
    ).stdout  # fmt: skip
    return any(
        c.get("ready")
        for pod in json.loads(out)["items"]
        for c in pod["status"].get("containerStatuses", [])
    )


def one_round(cluster: LocalCluster, store: ObjectStore, models: dict[str, Path]) -> dict[str, Any]:
    namespace = cluster.create_namespace(f"bench-node-{uuid.uuid4().hex[:6]}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-"))
    kubeconfig = cluster.user_kubeconfig("modeldeploy-operator", ["system:masters"])
    assert cluster.images is not None
    server_image = cluster.images.ref("SERVER")
    args = ["--namespace", namespace, "--standalone", "--server-image", server_image]
    operator = OperatorProcess(kubeconfig, args, workdir / "operator.log")
    operator.start()
    try:
        secret = store.grant(namespace)
        uris = {k: store.upload(p, f"{namespace}/{k}.onnx") for k, p in models.items()}
        spec: dict[str, Any] = {
            "model": {"uri": uris["v1"][0], "sha256": uris["v1"][1], "credentialsSecret": secret},
            "replicas": 1,
            "runtime": {"resources": {"requests": {"cpu": "100m", "memory": "160Mi"}}},
            "rollout": {"strategy": "Canary", "steps": [{"setWeight": 50}, {"pause": {}}]},
        }
        manifest = {
            "apiVersion": "serving.modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": NAME, "namespace": namespace},
            "spec": spec,
        }
        start = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        wait_for(lambda: predicts(cluster, namespace), 300, "the first prediction")
        first_prediction = time.monotonic() - start
        log(f"apply -> first prediction: {first_prediction:.1f} s")
        spec["model"] = {"uri": uris["v2"][0], "sha256": uris["v2"][1], "credentialsSecret": secret}
        start = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        wait_for(lambda: canary_ready(cluster, namespace), 300, "a canary pod Ready")
        canary = time.monotonic() - start
        log(f"model change -> first canary pod Ready: {canary:.1f} s")
        return {"apply_to_first_prediction_s": round(first_prediction, 1),
                "model_change_to_canary_ready_s": round(canary, 1)}  # fmt: skip
    finally:
        operator.stop()
        cluster.kubectl("delete", "namespace", namespace, "--timeout=120s", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster = LocalCluster.load(project_root() / ".cluster")
    if cluster is None or cluster.images is None:
        log("no running `make cluster` with its real node: start one first")
        return 1
    crds = project_root() / "crds"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-models-"))
    models = {
        "v1": onnx_models.make_classifier(workdir / "v1.onnx", seed=1),
        "v2": onnx_models.make_classifier(workdir / "v2.onnx", seed=2),
    }
    store = ObjectStore(cluster)
    results = [one_round(cluster, store, models) for _ in range(args.rounds)]
    print(json.dumps({"rounds": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
