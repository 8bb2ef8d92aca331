"""Real traffic through the local cluster's gateway (Traefik, a Gateway API implementation) and
through a ModelDeployment's Service, to pods on the real node:

- a ``trafficRouting.gatewayAPI`` canary splits real requests in the proportions its steps
  declare, counted by the servers themselves (``modeldeploy_requests_total`` by track);
- no client request fails (no refused or reset connection, no 5xx) during a whole canary with
  its promotion, a rollback, a rolling update and a scale-down, with clients on pooled
  connections through the gateway and through the Service, and clients opening a connection
  per request through the Service.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modeldeploy_dev.cluster.gateway import GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_URL
from tests.integration.node.test_serving import SMALL, ready_md, routed, service_address
from tests.support.kubectl import apply_md, get
from tests.support.operator_process import OperatorProcess, wait_for
from tests.support.traffic import ClosedLoop, measure_split, pods_of, record

pytestmark = pytest.mark.integration

NAME = "iris"
WEIGHTS = (10, 25, 50, 90)
SPLIT_REQUESTS = 2000
TOLERANCE_POINTS = 3.0


@pytest.fixture
def gateway(cluster: Any, gateway_api: Any) -> str:
    """The local cluster's Gateway, Programmed (re-created if a test removed the Gateway API
    CRDs, which removes it); ``gateway_api`` keeps the CRDs in place for the test."""
    cluster.restore_gateway()
    return GATEWAY_URL


@pytest.fixture
def versions(store: Any, node_namespace: str, models: dict[str, Path]) -> Iterator[Any]:
    """``versions(n)``: the test classifier stored as version ``v<n>`` (its own object)."""
    secret = store.grant(node_namespace)

    def model(n: int) -> dict[str, Any]:
        uri, digest = store.upload(models["classifier"], f"{node_namespace}/v{n}.onnx")
        return {"uri": uri, "sha256": digest, "credentialsSecret": secret, "version": f"v{n}"}

    yield model


def spec(
    model: dict[str, Any], host: str, steps: list[dict[str, Any]], replicas: int
) -> dict[str, Any]:
    return {
        "model": model,
        "replicas": replicas,
        "runtime": {"resources": SMALL},
        "rollout": {
            "strategy": "Canary",
            "steps": steps,
            "trafficRouting": {
                "gatewayAPI": {
                    "parentRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}],
                    "hostnames": [host],
                }
            },
        },
    }


def canary(md: dict[str, Any] | None) -> dict[str, Any]:
    return dict((md or {}).get("status", {}).get("canary") or {})


def stable_on(
    cluster: Any, namespace: str, version: str, *, ready: bool = True
) -> dict[str, Any] | None:
    """The ModelDeployment once on ``version`` with no canary and no pod of another version
    left (the canary's pods and the old stable pods are gone), and Ready when ``ready`` (a
    rolled-back ModelDeployment reports its refused spec and is not)."""
    md = ready_md(cluster, namespace) if ready else get(cluster, "mdep", namespace, NAME)
    if md is None or canary(md) or md["status"].get("stable", {}).get("version") != version:
        return None
    pods = pods_of(cluster, namespace, NAME)
    if any(p["metadata"].get("deletionTimestamp") for p in pods):
        return None
    if {p["metadata"]["labels"].get("serving.modeldeploy.io/track") for p in pods} != {"stable"}:
        return None
    return md if len(pods) == md["spec"]["replicas"] else None


def paused_at(cluster: Any, namespace: str, weight: int | None = None) -> bool:
    """Whether the canary waits at a pause without duration (at ``weight``, when given)."""
    state = canary(get(cluster, "mdep", namespace, NAME))
    return state.get("state") == "Paused" and weight in (None, state.get("weight"))


def answers_through_gateway(host: str, version: str) -> bool:
    """Whether the gateway has sent at least one request to ``version`` (its route applied)."""
    probe = ClosedLoop(GATEWAY_URL, NAME, host=host, clients=1, limit=40)
    with probe:
        probe.wait(30)
    return probe.versions[version] > 0


def test_a_gateway_canary_splits_real_traffic_as_weighted(
    cluster: Any, node_namespace: str, node_operator: OperatorProcess, gateway: str, versions: Any
) -> None:
    host = f"{NAME}.{node_namespace}.example"
    apply_md(cluster, node_namespace, NAME, spec(versions(1), host, [{"setWeight": 0}], 1))
    wait_for(lambda: stable_on(cluster, node_namespace, "v1"), 240, "v1 Ready")
    wait_for(lambda: answers_through_gateway(host, "v1"), 60, "the gateway to route to v1")
    measured: dict[int, float] = {}
    for round_, weight in enumerate(WEIGHTS, start=2):
        version = f"v{round_}"
        steps = [{"setWeight": weight}, {"pause": {}}]
        apply_md(cluster, node_namespace, NAME, spec(versions(round_), host, steps, 1))
        wait_for(
            lambda weight=weight: paused_at(cluster, node_namespace, weight),
            180,
            f"the canary {version} paused at weight {weight}",
        )
        # The canary gets traffic only from the route at this weight: one answer from it means
        # Traefik applies that route.
        wait_for(lambda v=version: answers_through_gateway(host, v), 60, f"traffic to {version}")
        split = measure_split(
            cluster, node_namespace, NAME, gateway, host=host, count=SPLIT_REQUESTS
        )
        assert split.failed == 0, split
        assert sum(split.by_track.values()) == SPLIT_REQUESTS, split
        measured[weight] = split.canary_percent
        record(
            "split", routing="gatewayAPI", weight=weight, sent=split.sent,
            by_track=split.by_track, canary_percent=split.canary_percent,
        )  # fmt: skip
        cluster.kubectl(
            "annotate", "mdep", NAME, "-n", node_namespace, "serving.modeldeploy.io/promote=true"
        )
        wait_for(
            lambda v=version: stable_on(cluster, node_namespace, v), 180, f"{version} promoted"
        )
        wait_for(
            lambda v=version: answers_through_gateway(host, v), 60, f"{version} through the gateway"
        )
    print(f"canary share through the gateway at each weight: {measured}")
    for weight, share in measured.items():
        assert abs(share - weight) <= TOLERANCE_POINTS, measured


def test_no_client_request_fails_through_a_canary_a_rollback_an_update_and_a_scale_down(
    cluster: Any, node_namespace: str, node_operator: OperatorProcess, gateway: str, versions: Any
) -> None:
    host = f"{NAME}.{node_namespace}.example"
    steps = [
        {"setWeight": 25},
        {"pause": {"duration": "5s"}},
        {"setWeight": 75},
        {"pause": {"duration": "5s"}},
    ]
    apply_md(cluster, node_namespace, NAME, spec(versions(1), host, steps, 2))
    wait_for(lambda: stable_on(cluster, node_namespace, "v1"), 240, "v1 Ready")
    service = service_address(cluster, node_namespace)
    wait_for(lambda: routed(service), 60, "the Service to route")
    wait_for(lambda: answers_through_gateway(host, "v1"), 60, "the gateway to route to v1")

    def under_load(phase: str, change: Any, done: Any, timeout: float = 240) -> None:
        loads = {
            "gateway, pooled connections": ClosedLoop(gateway, NAME, host=host, clients=2),
            "Service, pooled connections": ClosedLoop(service, NAME, clients=2),
            "Service, a connection per request": ClosedLoop(
                service, NAME, clients=1, keep_alive=False
            ),
        }
        for load in loads.values():
            load.__enter__()
        try:
            change()
            wait_for(done, timeout, phase)
        finally:
            for load in loads.values():
                load.stop()
        summaries = {what: load.summary() for what, load in loads.items()}
        print(f"{phase}: {summaries}")
        record("rollout", phase=phase, clients=summaries)
        for what, load in loads.items():
            assert load.sent > 0, (phase, what)
            assert load.failed == 0, (phase, what, summaries[what])

    # A whole canary: both weights, both pauses, the promotion, the canary's removal.
    under_load(
        "canary v1 -> v2 promoted",
        lambda: apply_md(cluster, node_namespace, NAME, spec(versions(2), host, steps, 2)),
        lambda: stable_on(cluster, node_namespace, "v2"),
    )
    # A rollback: the canary aborted while it has half of the traffic.
    held = [{"setWeight": 50}, {"pause": {}}]

    def abort() -> None:
        apply_md(cluster, node_namespace, NAME, spec(versions(3), host, held, 2))
        wait_for(lambda: paused_at(cluster, node_namespace, 50), 180, "the canary v3 paused at 50")
        cluster.kubectl(
            "annotate", "mdep", NAME, "-n", node_namespace, "serving.modeldeploy.io/abort=true"
        )

    under_load(
        "canary v3 aborted at 50%",
        abort,
        lambda: stable_on(cluster, node_namespace, "v2", ready=False),
    )
    # A rolling update of the stable pods (a change that is not the model's).
    updated = spec(versions(2), host, steps, 2)
    updated["runtime"]["env"] = [{"name": "ROLLED", "value": "1"}]
    under_load(
        "rolling update",
        lambda: apply_md(cluster, node_namespace, NAME, updated),
        lambda: rolled(cluster, node_namespace, "ROLLED"),
    )
    # A scale-down from two pods to one.
    updated["replicas"] = 1
    under_load(
        "scale-down 2 -> 1",
        lambda: apply_md(cluster, node_namespace, NAME, updated),
        lambda: stable_on(cluster, node_namespace, "v2"),
    )


def rolled(cluster: Any, namespace: str, env_name: str) -> bool:
    """Every pod of the ModelDeployment is a new one carrying ``env_name``, none terminating."""
    pods = pods_of(cluster, namespace, NAME)
    if not pods or any(p["metadata"].get("deletionTimestamp") for p in pods):
        return False
    for pod in pods:
        if not all(c.get("ready") for c in pod["status"].get("containerStatuses", [])):
            return False
        server = pod["spec"]["containers"][0]
        if env_name not in {e["name"] for e in server.get("env", [])}:
            return False
    return len(pods) == 2


REPLICAS = 4


def test_replica_ratio_splits_by_pods_not_by_weight(
    cluster: Any, node_namespace: str, node_operator: OperatorProcess, versions: Any
) -> None:
    """Without a gateway the Service spreads connections over every ready pod of both tracks,
    so the canary's share is its share of the pods: the declared weight rounded to whole pods
    of ``REPLICAS`` (at least one canary pod, at least one stable pod). Measured, the real
    error against the weight is recorded; the test asserts the share follows the pods."""
    steps = lambda weight: [{"setWeight": weight}, {"pause": {}}]  # noqa: E731
    plain = lambda n, weight: {  # noqa: E731
        **spec(versions(n), "unused.example", steps(weight), REPLICAS),
        "rollout": {"strategy": "Canary", "steps": steps(weight)},
    }
    apply_md(cluster, node_namespace, NAME, plain(1, 10))
    wait_for(lambda: stable_on(cluster, node_namespace, "v1"), 240, "v1 Ready")
    service = service_address(cluster, node_namespace)
    wait_for(lambda: routed(service), 60, "the Service to route")
    for round_, weight in enumerate(WEIGHTS, start=2):
        apply_md(cluster, node_namespace, NAME, plain(round_, weight))
        wait_for(
            lambda weight=weight: (
                paused_at(cluster, node_namespace, weight) and pods_settled(cluster, node_namespace)
            ),
            180,
            f"the canary paused at {weight} with its pods ready",
        )
        tracks = Counter(
            p["metadata"]["labels"]["serving.modeldeploy.io/track"]
            for p in pods_of(cluster, node_namespace, NAME)
        )
        pod_share = 100.0 * tracks["canary"] / (tracks["canary"] + tracks["stable"])
        wait_for(lambda t=tracks: routed_to_all(service, t), 60, "the Service to reach every pod")
        split = measure_split(
            cluster, node_namespace, NAME, service, count=SPLIT_REQUESTS, keep_alive=False
        )
        assert split.failed == 0, split
        record(
            "split", routing="replicas", weight=weight, pods=dict(tracks), sent=split.sent,
            by_track=split.by_track, canary_percent=split.canary_percent,
        )  # fmt: skip
        print(f"weight {weight}: pods {dict(tracks)}, canary share {split.canary_percent:.1f}%")
        # Connections spread at random (kube-proxy): 2,000 requests put the share within
        # about 1 point (one standard deviation) of the pods' share.
        assert abs(split.canary_percent - pod_share) <= 5, (weight, dict(tracks), split)
        cluster.kubectl(
            "annotate", "mdep", NAME, "-n", node_namespace, "serving.modeldeploy.io/abort=true"
        )
        wait_for(lambda: stable_on(cluster, node_namespace, "v1", ready=False), 180, "rolled back")


def pods_settled(cluster: Any, namespace: str) -> bool:
    """Every pod of the ModelDeployment ready and none terminating."""
    pods = pods_of(cluster, namespace, NAME)
    return bool(pods) and all(
        not p["metadata"].get("deletionTimestamp")
        and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
        for p in pods
    )


def routed_to_all(service: str, tracks: Counter[str]) -> bool:
    """Whether the Service's answers come from both tracks (kube-proxy has the new pods)."""
    probe = ClosedLoop(service, NAME, clients=1, keep_alive=False, limit=60)
    with probe:
        probe.wait(30)
    return len(probe.versions) == len([t for t in tracks if tracks[t]])
