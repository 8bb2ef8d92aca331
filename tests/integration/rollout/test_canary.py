"""Canary rollouts end to end: steps, analysis from a real Prometheus, promotion, rollback,
manual control, Gateway API weights, and an operator killed mid-rollout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rollout.conftest import (
    NEW,
    OLD,
    finished,
    set_model,
    spec,
    status_of,
    steady,
    wait_stable,
)
from tests.support.kubectl import apply_md, condition, get
from tests.support.operator_process import wait_for
from tests.support.prometheus import Prometheus

pytestmark = pytest.mark.integration


def analysis(prometheus: Prometheus, **metric_bounds: float) -> dict[str, Any]:
    return {
        "interval": "4s",
        "failureLimit": 2,
        "prometheus": {"address": prometheus.url},
        "metrics": [
            {"name": name.replace("_", "-"), "max": bound} for name, bound in metric_bounds.items()
        ],
    }


def canary(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(status_of(cluster, namespace, name).get("canary") or {})


def events(cluster: Any, namespace: str, name: str) -> list[str]:
    result = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=ModelDeployment", "-o", "json",
    )  # fmt: skip
    return [e["reason"] for e in json.loads(result.stdout)["items"]]


def test_a_healthy_canary_walks_its_steps_and_is_promoted(
    cluster: Any,
    namespace: str,
    analysed: Any,
    prometheus: Prometheus,
    models: dict[str, Path],
) -> None:
    checks = analysis(prometheus, error_rate=0.05, latency_p99=2.0)
    servers = analysed(
        {"stable": models["classifier"], "canary": models["classifier"]},
        spec([{"setWeight": 50}, {"pause": {"duration": "3s"}}], analysis=checks),
    )

    with steady(servers) as load:
        set_model(cluster, namespace, "iris", NEW)
        # Traffic moves once the canary's pod is ready: `kubectl get mdep` shows the weight.
        wait_for(lambda: canary(cluster, namespace, "iris").get("weight") == 50, 60, "weight 50")
        row = cluster.kubectl("get", "mdep", "iris", "-n", namespace).stdout
        assert " 50 " in row and "Progressing" in row, row
        stable = get(cluster, "deployment", namespace, "iris")
        assert stable is not None and OLD in json.dumps(stable["spec"]["template"])
        md = wait_stable(cluster, namespace, "iris", NEW, timeout=120)
    assert load.answers[("canary", 200)] > 0 and load.answers[("stable", 200)] > 0

    entry = md["status"]["history"][0]
    assert (entry["result"], entry["model"]["uri"]) == ("Promoted", NEW)
    assert "passing analysis run" in entry["message"]
    assert get(cluster, "deployment", namespace, "iris-canary") is None
    promoted = get(cluster, "deployment", namespace, "iris")
    assert promoted is not None and NEW in json.dumps(promoted["spec"]["template"])
    assert {"RolloutStarted", "Promoting", "Promoted"} <= set(events(cluster, namespace, "iris"))


def test_a_canary_that_errors_is_rolled_back_with_the_values_that_failed_it(
    cluster: Any,
    namespace: str,
    analysed: Any,
    prometheus: Prometheus,
    models: dict[str, Path],
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an ONNX model")  # loads never: every request is a 503
    servers = analysed(
        {"stable": models["classifier"], "canary": broken},
        spec(
            [{"setWeight": 20}, {"pause": {"duration": "60s"}}],
            analysis=analysis(prometheus, error_rate=0.05),
        ),
    )

    with steady(servers):
        set_model(cluster, namespace, "iris", NEW)
        wait_for(lambda: finished(cluster, namespace, "iris", "RolledBack"), 90, "the rollback")
        status = status_of(cluster, namespace, "iris")
    entry = status["history"][0]
    assert entry["reason"] == "AnalysisFailed" and entry["model"]["uri"] == NEW
    assert "error-rate = 1 (max 0.05)" in entry["message"], entry["message"]
    assert status["stable"]["uri"] == OLD and "canary" not in status
    md = get(cluster, "mdep", namespace, "iris")
    assert condition(md, "Degraded")["status"] == "True"
    assert condition(md, "Degraded")["reason"] == "AnalysisFailed"
    # The old model still serves (Available); the model the spec asks for does not (not Ready).
    assert condition(md, "Available")["status"] == "True"
    assert condition(md, "Ready")["status"] == "False"
    wait_for(lambda: get(cluster, "deployment", namespace, "iris-canary") is None, 30, "no canary")
    described = cluster.kubectl("describe", "mdep", "iris", "-n", namespace).stdout
    assert "AnalysisFailed" in described and "error-rate = 1" in described
    # No retry until the spec changes again.
    assert status_of(cluster, namespace, "iris").get("canary") is None


def test_abort_during_a_pause_rolls_back_and_clears_the_annotation(
    cluster: Any, namespace: str, rollout_operator: Any, stand_ins: Any
) -> None:
    rollout_operator()
    apply_md(cluster, namespace, "iris", spec([{"setWeight": 25}, {"pause": {}}]))
    wait_stable(cluster, namespace, "iris", OLD)
    set_model(cluster, namespace, "iris", NEW)
    wait_for(lambda: canary(cluster, namespace, "iris").get("state") == "Paused", 60, "paused")
    assert status_of(cluster, namespace, "iris")["phase"] == "Paused"
    assert get(cluster, "deployment", namespace, "iris-canary") is not None

    cluster.kubectl(
        "annotate", "mdep", "iris", "-n", namespace, "serving.modeldeploy.io/abort=true"
    )

    def aborted() -> dict[str, Any] | None:
        md = get(cluster, "mdep", namespace, "iris")
        history = (md or {}).get("status", {}).get("history") or []
        return md if history and history[0]["reason"] == "Aborted" else None

    md = wait_for(aborted, 60, "the abort")
    assert md["status"]["stable"]["uri"] == OLD
    assert condition(md, "Degraded")["reason"] == "Aborted"
    wait_for(
        lambda: (
            "serving.modeldeploy.io/abort"
            not in (get(cluster, "mdep", namespace, "iris") or {})["metadata"].get(
                "annotations", {}
            )
        ),
        30,
        "the abort annotation removed",
    )
    wait_for(lambda: get(cluster, "deployment", namespace, "iris-canary") is None, 30, "no canary")


def _weights(cluster: Any, namespace: str) -> dict[str, int] | None:
    route = get(cluster, "httproute", namespace, "iris")
    if route is None:
        return None
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {ref["name"]: ref["weight"] for ref in refs}


def test_httproute_weights_follow_the_steps(
    cluster: Any, namespace: str, rollout_operator: Any, gateway_api: Any, stand_ins: Any
) -> None:
    rollout_operator()
    routing = {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "gateways"}]}}
    steps = [{"setWeight": 30}, {"pause": {"duration": "2s"}}, {"setWeight": 60}, {"pause": {}}]
    apply_md(cluster, namespace, "iris", spec(steps, trafficRouting=routing))
    wait_stable(cluster, namespace, "iris", OLD)
    assert _weights(cluster, namespace) == {"iris-stable": 100, "iris-canary": 0}
    for service in ("iris", "iris-stable", "iris-canary"):
        assert get(cluster, "service", namespace, service) is not None

    set_model(cluster, namespace, "iris", NEW)
    seen: list[dict[str, int] | None] = []

    def at(weight: int) -> bool:
        seen.append(_weights(cluster, namespace))
        return seen[-1] == {"iris-stable": 100 - weight, "iris-canary": weight}

    wait_for(
        lambda: at(60) and canary(cluster, namespace, "iris").get("state") == "Paused", 60, "60%"
    )
    assert {"iris-stable": 70, "iris-canary": 30} in seen or canary(cluster, namespace, "iris")[
        "stepIndex"
    ] == 3
    # each track's Service selects that track's pods only: the route's weights are exact
    for track in ("stable", "canary"):
        service = get(cluster, "service", namespace, f"iris-{track}")
        assert service is not None
        assert service["spec"]["selector"]["serving.modeldeploy.io/track"] == track

    cluster.kubectl(
        "annotate", "mdep", "iris", "-n", namespace, "serving.modeldeploy.io/promote=true"
    )
    wait_stable(cluster, namespace, "iris", NEW, timeout=120)
    assert _weights(cluster, namespace) == {"iris-stable": 100, "iris-canary": 0}


def test_the_operator_killed_mid_rollout_resumes_at_the_same_step(
    cluster: Any, namespace: str, rollout_operator: Any, stand_ins: Any
) -> None:
    first = rollout_operator()
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    apply_md(cluster, namespace, "iris", spec(steps))
    wait_stable(cluster, namespace, "iris", OLD)
    set_model(cluster, namespace, "iris", NEW)
    wait_for(lambda: canary(cluster, namespace, "iris").get("state") == "Paused", 60, "paused")
    before = canary(cluster, namespace, "iris")
    deployment = get(cluster, "deployment", namespace, "iris-canary")
    assert first.process is not None
    first.process.kill()
    first.process.wait()

    rollout_operator()
    # The new operator has read everything; the rollout is where it was, nothing restarted.
    wait_for(lambda: status_of(cluster, namespace, "iris").get("phase") == "Paused", 30, "paused")
    after = canary(cluster, namespace, "iris")
    assert (after["stepIndex"], after["weight"], after["startedAt"]) == (
        before["stepIndex"],
        before["weight"],
        before["startedAt"],
    )
    again = get(cluster, "deployment", namespace, "iris-canary")
    assert again is not None and deployment is not None
    assert again["metadata"]["uid"] == deployment["metadata"]["uid"]

    cluster.kubectl(
        "annotate", "mdep", "iris", "-n", namespace, "serving.modeldeploy.io/promote=true"
    )
    md = wait_stable(cluster, namespace, "iris", NEW, timeout=120)
    assert md["status"]["history"][0]["result"] == "Promoted"


def test_gateway_routing_without_the_gateway_api_is_degraded_with_a_clear_message(
    cluster: Any, namespace: str, rollout_operator: Any, gateway_api: Any
) -> None:
    from tests.support.gateway import without_gateway_api

    rollout_operator()
    routing = {"gatewayAPI": {"parentRefs": [{"name": "public"}]}}
    with without_gateway_api(cluster):
        apply_md(cluster, namespace, "iris", spec([{"setWeight": 50}], trafficRouting=routing))

        def degraded() -> dict[str, Any] | None:
            found = condition(get(cluster, "mdep", namespace, "iris"), "Degraded")
            return found if found.get("reason") == "TrafficRoutingUnavailable" else None

        found = wait_for(degraded, 120, "the Degraded condition")
        assert "install the Gateway API CRDs" in found["message"], found
        assert "remove spec.rollout.trafficRouting" in found["message"]
        # The model is served all the same (the stable track needs no route).
        assert get(cluster, "deployment", namespace, "iris") is not None
