"""What a serving pod's status says about its trouble (pure; pods as the kubelet reports them)."""

from __future__ import annotations

from typing import Any

import pytest

from modeldeploy.reconcilers.pods import pod_problem, pod_problems, trim_pod


def pod(name: str = "iris-abc", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"}, "status": status}


def terminated(exit_code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    return {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}


def test_a_running_pod_has_no_problem() -> None:
    running = pod(
        phase="Running",
        initContainerStatuses=[{"name": "fetch-model", "state": terminated(0, "Completed")}],
        containerStatuses=[{"name": "server", "state": {"running": {}}, "restartCount": 0}],
    )
    assert pod_problem(running) is None


def test_a_starting_pod_has_no_problem() -> None:
    starting = pod(
        phase="Pending",
        initContainerStatuses=[
            {"name": "fetch-model", "state": {"waiting": {"reason": "PodInitializing"}}}
        ],
    )
    assert pod_problem(starting) is None


def test_a_failed_fetch_names_the_init_container_and_quotes_its_message() -> None:
    failing = pod(
        initContainerStatuses=[
            {
                "name": "fetch-model",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": terminated(2, message="fetch: sha256 mismatch: expected ab…, got cd…"),
                "restartCount": 3,
            }
        ]
    )
    reason, message = pod_problem(failing) or ("", "")
    assert reason == "ModelFetchFailed"
    assert "init container fetch-model failed (exit code 2, 3 restart(s))" in message
    assert "sha256 mismatch" in message


def test_a_structured_log_tail_is_reduced_to_its_last_message() -> None:
    tail = (
        '{"level": "info", "message": "fetching s3://models/iris.onnx"}\n'
        '{"level": "error", "message": "not found: s3://models/iris.onnx (HTTP 404)"}\n'
    )
    failing = pod(
        initContainerStatuses=[{"name": "fetch-model", "state": terminated(4, message=tail)}]
    )
    reason, message = pod_problem(failing) or ("", "")
    assert reason == "ModelFetchFailed"
    assert message.endswith(
        "(exit code 4, 0 restart(s)): not found: s3://models/iris.onnx (HTTP 404)"
    )


def test_an_oom_killed_server_says_so_and_what_to_change() -> None:
    killed = pod(
        containerStatuses=[
            {
                "name": "server",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": terminated(137, "OOMKilled"),
                "restartCount": 1,
            }
        ]
    )
    reason, message = pod_problem(killed) or ("", "")
    assert reason == "OOMKilled"
    assert "container server was killed for exceeding its memory limit" in message
    assert "limits.memory" in message


def test_an_image_that_cannot_be_pulled_is_reported() -> None:
    missing = pod(
        containerStatuses=[
            {
                "name": "server",
                "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "not present"}},
            }
        ]
    )
    assert pod_problem(missing) == (
        "ImagePullFailed",
        "pod iris-abc: container server cannot get its image (ErrImageNeverPull): not present",
    )


def test_unschedulable_comes_with_the_schedulers_words() -> None:
    pending = pod(
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu.",
            }
        ]
    )
    assert pod_problem(pending) == (
        "PodsUnschedulable",
        "pod iris-abc cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
    )


def test_one_problem_of_each_kind_is_kept_from_many_pods() -> None:
    oom = {"name": "server", "lastState": terminated(137, "OOMKilled")}
    pods = [pod("a", containerStatuses=[oom]), pod("b", containerStatuses=[oom])]
    found = pod_problems(pods)
    assert [reason for reason, _ in found] == ["OOMKilled"]
    assert "pod a:" in found[0][1]


@pytest.mark.parametrize("key", ["initContainerStatuses", "containerStatuses"])
def test_trimming_keeps_what_explains_a_failure(key: str) -> None:
    full = pod(**{key: [{"name": "c", "lastState": terminated(1), "image": "x", "ready": False}]})
    trimmed = trim_pod(full)
    assert trimmed["status"][key] == [{"name": "c", "lastState": terminated(1)}]
    assert pod_problem(trimmed) == pod_problem(full)
