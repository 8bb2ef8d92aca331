"""The model contract: what a canary must keep of the stable model's, and the step function's
decisions on it (checked once the canary's pods are ready, before any traffic moves)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from modeldeploy.builders import STABLE, build_service
from modeldeploy.config import OperatorConfig
from modeldeploy.reconcilers.rollout_children import TARGET_ANNOTATION, plan_rollout, read_contract
from modeldeploy.rollout.contract import (
    ContractError,
    ContractReading,
    ModelContract,
    TensorContract,
    differences,
)
from modeldeploy.rollout.plan import desired_model, iso, model_key
from tests.unit.operator.test_rollout_plan import (
    IRIS,
    OLD,
    T0,
    decided,
    mdep,
    passed_run,
    seen,
    stable_status,
    tick,
    typed,
)


def model(
    inputs: list[tuple[str, str, tuple[int, ...]]] | None = None,
    outputs: list[tuple[str, str]] | None = None,
    classes: set[str] | None = None,
) -> ModelContract:
    """IRIS with some of its parts replaced."""
    return ModelContract(
        inputs=tuple(TensorContract(*t) for t in inputs) if inputs is not None else IRIS.inputs,
        outputs=tuple(TensorContract(n, d, (-1,)) for n, d in outputs)
        if outputs is not None
        else IRIS.outputs,
        classes=frozenset(classes) if classes is not None else IRIS.classes,
    )


FIVE_FEATURES = model(inputs=[("X", "FP32", (-1, 5))])


# --- what counts as a difference -------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "expected"),
    [
        (IRIS, []),
        (FIVE_FEATURES, ["input X: shape [-1,4] -> [-1,5]"]),
        (model(inputs=[("X", "FP64", (-1, 4))]), ["input X: datatype FP32 -> FP64"]),
        (model(inputs=[("X", "FP32", (1, 4))]), ["input X: shape [-1,4] -> [1,4]"]),
        (model(inputs=[("X", "FP32", (-1, 4, 1))]), ["input X: shape [-1,4] -> [-1,4,1]"]),
        (
            model(inputs=[("features", "FP32", (-1, 4))]),
            [
                "input X: removed (clients send it)",
                "input features: new FP32 [-1,4] (clients omit it)",
            ],
        ),
        (
            model(outputs=[("label", "STRING")]),
            ["output label: datatype INT64 -> STRING", "output probabilities: removed"],
        ),
        (
            model(outputs=[("label", "INT64"), ("probabilities", "FP32"), ("logits", "FP32")]),
            [],
        ),
        (model(classes={"0", "1"}), ["classes: 2 no longer predicted"]),
        (model(classes={"0", "1", "2", "3"}), ["classes: 3 new"]),
        (model(classes=set()), []),  # no profile classes: nothing to compare
    ],
    ids=[
        "same", "width", "datatype", "fixed-batch", "rank", "renamed-input",
        "output-changed", "output-added", "class-removed", "class-added", "no-classes",
    ],
)  # fmt: skip
def test_differences_are_what_a_client_of_stable_would_notice(
    canary: ModelContract, expected: list[str]
) -> None:
    assert differences(IRIS, canary) == expected


def test_a_wider_canary_accepts_what_stable_accepts() -> None:
    fixed = model(inputs=[("X", "FP32", (8, 4))])
    assert differences(fixed, IRIS) == []  # -1 accepts a batch of 8
    assert differences(IRIS, fixed) == ["input X: shape [-1,4] -> [8,4]"]


def test_metadata_is_read_as_the_open_inference_protocol_writes_it() -> None:
    metadata = {
        "name": "iris",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    contract = ModelContract.from_metadata(metadata, frozenset({"0", "1", "2"}))
    assert differences(IRIS, contract) == []
    assert ModelContract.from_metadata(metadata, frozenset()).classes is None
    with pytest.raises(ContractError, match="inputs"):
        ModelContract.from_metadata({**metadata, "inputs": [{"name": "X"}]})
    with pytest.raises(ContractError, match="outputs"):
        ModelContract.from_metadata({"inputs": []})


# --- the step function ------------------------------------------------------------------------


def started(**rollout: Any) -> tuple[Any, dict[str, Any]]:
    md = mdep(**rollout)
    return md, tick(md, stable_status(), seen())


def test_a_compatible_canary_is_recorded_and_traffic_moves() -> None:
    md, status = started()
    status = tick(md, status, seen(1, canary_ready=1))
    assert status["canary"]["contract"]["result"] == "Compatible"
    assert status["canary"]["weight"] == 20


def test_an_incompatible_canary_is_rolled_back_before_any_traffic_moves() -> None:
    md, status = started()
    status = tick(
        md, status, seen(1, canary_ready=1, contract=ContractReading(IRIS, FIVE_FEATURES))
    )
    decision = decided(status)
    assert "canary" not in status and decision.canary_target is None and decision.weight == 0
    entry = status["history"][0]
    assert (entry["result"], entry["reason"]) == ("RolledBack", "IncompatibleModel")
    assert "input X: shape [-1,4] -> [-1,5]" in entry["message"]
    assert decision.degraded is not None and decision.degraded[0] == "IncompatibleModel"
    assert "input X: shape [-1,4] -> [-1,5]" in decision.degraded[1]
    assert decision.events[-1][:2] == ("Warning", "IncompatibleModel")
    assert decision.stable_target.uri == OLD and decision.stable_replicas == 4


def test_a_declared_breaking_change_is_reported_and_not_enforced() -> None:
    md, status = started(compatibility="Breaking")
    status = tick(
        md, status, seen(1, canary_ready=1, contract=ContractReading(IRIS, FIVE_FEATURES))
    )
    contract = status["canary"]["contract"]
    assert contract["result"] == "Incompatible"
    assert contract["differences"] == ["input X: shape [-1,4] -> [-1,5]"]
    assert status["canary"]["weight"] == 20
    assert ("Warning", "BreakingChange") in [e[:2] for e in decided(status).events]


def test_unreadable_metadata_holds_the_weight_and_retries_soon() -> None:
    md, status = started(progressDeadline="60s")
    unreadable = ContractReading(error="cannot read the model metadata of the canary pod: refused")
    status = tick(md, status, seen(1, canary_ready=1, contract=unreadable))
    decision = decided(status)
    assert status["canary"]["weight"] == 0 and "contract" not in status["canary"]
    assert decision.progressing is not None and "refused" in decision.progressing[1]
    assert decision.requeue_after is not None and decision.requeue_after <= 5
    status = tick(md, status, seen(62, canary_ready=1, contract=unreadable))
    entry = status["history"][0]
    assert entry["reason"] == "ProgressDeadlineExceeded" and "refused" in entry["message"]


def test_unreadable_metadata_holds_a_declared_breaking_change_only_until_the_deadline() -> None:
    md, status = started(compatibility="Breaking", progressDeadline="60s")
    unreadable = ContractReading(error="cannot read the model metadata: timed out")
    status = tick(md, status, seen(1, canary_ready=1, contract=unreadable))
    assert "contract" not in status["canary"] and status["canary"]["weight"] == 0
    status = tick(md, status, seen(62, canary_ready=1, contract=unreadable))
    assert status["canary"]["contract"]["result"] == "Unchecked"
    assert status["canary"]["weight"] == 20
    assert ("Warning", "ContractUnchecked") in [e[:2] for e in decided(status).events]


def test_the_contract_is_checked_once_and_kept_across_ticks() -> None:
    md, status = started()
    status = tick(md, status, seen(1, canary_ready=1))
    checked = status["canary"]["contract"]
    # a later (different) reading changes nothing: the check was made before traffic moved
    status = tick(
        md, status, seen(40, canary_ready=1, contract=ContractReading(IRIS, FIVE_FEATURES))
    )
    assert status["canary"]["contract"] == checked and "canary" in status


def test_promotion_waits_for_the_contract_even_without_a_weight_step() -> None:
    md = mdep(steps=[{"pause": {"duration": "5s"}}])
    status = tick(md, stable_status(), seen())
    status = tick(md, status, seen(10, canary_ready=1, contract=ContractReading(error="refused")))
    assert status["canary"]["state"] == "Progressing"
    assert "before promotion" in decided(status).progressing[1]  # type: ignore[index]
    status = tick(md, status, seen(11, canary_ready=1))
    assert status["canary"]["state"] == "Promoting"


def test_a_human_may_promote_before_the_check() -> None:
    md, status = started(steps=[{"setWeight": 20}, {"pause": {}}])
    status = tick(md, status, seen(1, canary_ready=0, promote=True))
    assert status["canary"]["state"] == "Promoting"


def test_an_incompatible_canary_is_rolled_back_even_with_analysis_passing() -> None:
    md, status = started(
        analysis={"interval": "10s", "metrics": [{"name": "error-rate", "max": 1}]}
    )
    status = tick(
        md,
        status,
        seen(
            10,
            canary_ready=1,
            contract=ContractReading(IRIS, FIVE_FEATURES),
            analysis=passed_run(10),
        ),
    )
    assert status["history"][0]["reason"] == "IncompatibleModel"


@pytest.mark.parametrize(
    ("only", "selector"),
    [
        (None, {"serving.modeldeploy.io/deployment": "iris"}),
        (
            STABLE,
            {"serving.modeldeploy.io/deployment": "iris", "serving.modeldeploy.io/track": "stable"},
        ),
    ],
)
def test_the_main_service_can_keep_a_canary_without_traffic_out(
    only: Any, selector: dict[str, str]
) -> None:
    service = build_service(mdep(), only=only)
    assert service["metadata"]["name"] == "iris" and service["spec"]["selector"] == selector


# --- the reconciler's reading of the tracks ----------------------------------------------------


class Pods:
    """A Kube that only lists pods (by the track in the selector)."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods

    def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[Any]:
        track = selector.rsplit("=", 1)[-1]
        return [p for p in self.pods if p["metadata"]["labels"]["track"] == track]


def pod(name: str, track: str, ip: str, *, ready: bool = True, deleted: bool = False) -> Any:
    meta: dict[str, Any] = {"name": name, "labels": {"track": track}}
    if deleted:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": meta, "status": {"podIP": ip, "conditions": [condition]}}


class Metadata:
    """A metadata source answering per address; an unknown address is unreachable."""

    def __init__(self, **by_address: ModelContract) -> None:
        self.by_address = {k.replace("_", "."): v for k, v in by_address.items()}
        self.read_from: list[str] = []

    def read(self, host: str, model: str) -> ModelContract:
        self.read_from.append(host)
        if host not in self.by_address:
            raise ContractError("connection refused")
        return self.by_address[host]


def canary_deployment(md: Any, ready: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "generation": 1,
            "annotations": {TARGET_ANNOTATION: model_key(desired_model(md))},
        },
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": ready,
            "readyReplicas": ready,
            "updatedReplicas": ready,
        },
    }


def test_the_reconciler_reads_a_ready_pod_of_each_track() -> None:
    md, status = started()
    kube = Pods(
        [
            pod("iris-a", "stable", "10.0.0.1", deleted=True),
            pod("iris-b", "stable", "10.0.0.2"),
            pod("iris-canary-a", "canary", "10.0.0.3", ready=False),
            pod("iris-canary-b", "canary", "10.0.0.4"),
        ]
    )
    source = Metadata(**{"10_0_0_2": IRIS, "10_0_0_4": FIVE_FEATURES})
    reading = read_contract(md, kube, typed(status), canary_deployment(md), source)  # type: ignore[arg-type]
    assert reading == ContractReading(stable=IRIS, canary=FIVE_FEATURES)
    assert source.read_from == ["10.0.0.2", "10.0.0.4"]


def test_the_reconciler_says_which_pod_it_could_not_read() -> None:
    md, status = started()
    kube = Pods([pod("iris-b", "stable", "10.0.0.2"), pod("iris-canary-b", "canary", "10.0.0.9")])
    reading = read_contract(
        md, kube, typed(status), canary_deployment(md), Metadata(**{"10_0_0_2": IRIS})
    )  # type: ignore[arg-type]
    assert reading is not None and reading.canary is None
    assert reading.error == (
        "cannot read the model metadata of the canary pod iris-canary-b (10.0.0.9): "
        "connection refused"
    )


def test_the_reconciler_reads_nothing_once_checked_or_while_the_canary_rolls() -> None:
    md, status = started()
    kube = Pods([pod("iris-b", "stable", "10.0.0.2"), pod("iris-canary-b", "canary", "10.0.0.4")])
    source = Metadata()
    rolling = canary_deployment(md)
    rolling["status"]["updatedReplicas"] = 0  # pods of another model still serve
    assert read_contract(md, kube, typed(status), rolling, source) is None  # type: ignore[arg-type]
    contract = {"result": "Compatible", "time": iso(T0)}
    checked = {**status, "canary": {**status["canary"], "contract": contract}}
    assert read_contract(md, kube, typed(checked), canary_deployment(md), source) is None  # type: ignore[arg-type]
    assert source.read_from == []


class Cluster(Pods):
    """Pods, and Deployments by name (the canary's as given)."""

    def __init__(self, canary: dict[str, Any] | None, pods: list[dict[str, Any]]) -> None:
        super().__init__(pods)
        self.canary = canary

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        return self.canary if name.endswith("-canary") else None


@pytest.mark.parametrize(
    ("weight", "tracks"),
    [(None, "stable only"), (0, "stable only"), (20, "every track")],
    ids=["no-rollout", "canary-without-traffic", "canary-with-traffic"],
)
def test_the_service_selects_a_canary_only_while_it_has_traffic(
    weight: int | None, tracks: str
) -> None:
    md, status = started()
    if weight is None:
        status = stable_status()
    else:
        status["canary"].update(weight=weight, stepIndex=1 if weight else 0)
    kube = Cluster(canary_deployment(md), [])
    plan = plan_rollout(
        md,
        kube,
        OperatorConfig(),
        typed(status),
        T0 + timedelta(seconds=1),
        Metadata(),  # type: ignore[arg-type]
    )
    assert plan.service is not None
    selected = plan.service["spec"]["selector"].get("serving.modeldeploy.io/track")
    assert (selected == "stable") == (tracks == "stable only"), plan.service["spec"]
