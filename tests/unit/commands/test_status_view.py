"""The status table from stored objects: every field in its place, missing ones tolerated."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

from modeldeploy.api import ModelDeployment
from modeldeploy.commands.control import annotation_patch, consequence
from modeldeploy.commands.status import machine_view, render
from tests.support.statuses import full_status

NOW = datetime(2025, 1, 2, 3, 9, 5, tzinfo=UTC)  # five minutes after the times below


def stored(status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "serving.modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "generation": 2},
        "spec": {
            "model": {"uri": "s3://models/iris/3/model.onnx", "version": "3"},
            "rollout": {
                "strategy": "Canary",
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "1m"}},
                    {"setWeight": 50},
                    {"pause": {}},
                ],
                "analysis": {"failureLimit": 2, "metrics": [{"name": "error-rate", "max": 0.01}]},
            },
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_full_status_shows_every_part() -> None:
    obj = stored(full_status())
    ModelDeployment.model_validate(obj)  # the fixture is a real object of the API
    text = render(obj, now=NOW)
    lines = text.splitlines()
    assert "Phase:         Progressing" in lines
    assert "Replicas:      3/3 ready" in lines
    assert "URL:           http://case.default.svc:8080/v2/models/iris" in lines
    assert "Stable model:  s3://models/iris/2/model.onnx (version 2) sha256 bbbbbbbbbbbb" in lines
    assert "Canary:" in lines
    assert "  Weight:        10%" in lines
    assert "  Step:          2 of 4 (pause 1m)" in lines
    assert "  Failed checks: 1 of 2 allowed" in lines
    assert "  Started:       2025-01-02T03:04:05Z (5m ago)" in lines
    assert "  Contract:      Incompatible: input X: shape [-1,4] -> [-1,5]" in lines
    assert "  Window since:  2025-01-02T03:04:05Z (5m ago)" in lines
    # The analysis table: name, values of both tracks, bounds, samples, result, and the
    # reason of an inconclusive one.
    header = lines.index("Last analysis:") + 1
    assert lines[header].split() == ["METRIC", "VALUE", "STABLE", "MIN", "MAX", "MAX",
                                     "INCREASE", "SAMPLES", "RESULT", "MEASURED",
                                     "MESSAGE"]  # fmt: skip
    row = lines[header + 1].split()
    assert row[:8] == ["error-rate", "0.02", "-", "-", "0.01", "-", "250", "Failed"]
    row = lines[header + 2].split()
    assert row[:8] == ["latency-p99", "0.048", "0.04", "-", "0.5", "20%", "250/740", "Passed"]
    assert lines[header + 3].split()[:8] == [
        "prediction-drift", "0.04", "-", "-", "0.1", "-", "2000/5920", "Passed"
    ]  # fmt: skip
    assert lines[header + 3].endswith("compared 2000 canary and 5920 stable predictions")
    assert lines[header + 4].split()[:8] == [
        "custom", "-", "-", "0.5", "2.5", "-", "-", "Inconclusive"
    ]  # fmt: skip
    assert lines[header + 4].endswith("no data")
    conditions = lines.index("Conditions:") + 1
    assert lines[conditions + 1].split()[:3] == ["Ready", "True", "MinimumReplicasReady"]
    assert lines[conditions + 1].endswith("2 of 2 pods ready")
    history = lines.index("History (newest first):") + 1
    assert lines[history + 1].split()[:3] == [
        "Promoted",
        "AnalysisPassed",
        "s3://models/iris/2/model.onnx",
    ]
    assert lines[history + 1].endswith("all steps passed")


def test_columns_line_up() -> None:
    lines = render(stored(full_status()), now=NOW).splitlines()
    start = lines.index("Last analysis:") + 1
    table = lines[start : start + 5]
    column = table[0].index("RESULT")
    assert [row[column:].split()[0] for row in table] == [
        "RESULT", "Failed", "Passed", "Passed", "Inconclusive"
    ]  # fmt: skip


def test_no_status_yet_says_so() -> None:
    text = render(stored(), now=NOW)
    assert "Phase:         (no status yet: is the operator running?)" in text
    assert "Canary: none under way" in text
    assert "Desired model: s3://models/iris/3/model.onnx (version 3)" in text
    assert "Conditions" not in text and "History" not in text


def test_missing_and_new_fields_are_tolerated() -> None:
    status = full_status()
    canary = status["canary"]
    for key in ("failedChecks", "stepStartedAt", "analysis", "sha256"):
        del canary[key]
    canary["state"] = "Paused"  # being added to the API
    canary["pausedBy"] = "someone"  # a field this CLI does not know yet
    del status["conditions"][0]["reason"]
    del status["history"][0]["model"]
    text = render(stored(status), now=NOW)
    assert re.search(r"^  State: +Paused$", text, re.MULTILINE)
    assert re.search(r"^  Paused by: +someone$", text, re.MULTILINE)
    assert "Failed checks" not in text and "Last analysis" not in text


def test_a_generation_not_observed_yet_is_pointed_out() -> None:
    status = full_status()
    status["observedGeneration"] = 1
    assert "generation 1 of 2 (operator catching up)" in render(stored(status), now=NOW)


def test_machine_view_has_identity_desired_model_and_the_whole_status() -> None:
    obj = stored(full_status())
    view = machine_view(obj)
    assert view == {
        "name": "iris",
        "namespace": "ml",
        "generation": 2,
        "model": obj["spec"]["model"],
        "status": full_status(),
    }
    assert machine_view(stored())["status"] == {}


def test_promote_and_abort_patches_set_one_annotation() -> None:
    assert annotation_patch("promote") == {
        "metadata": {"annotations": {"serving.modeldeploy.io/promote": "true"}}
    }
    assert annotation_patch("abort") == {
        "metadata": {"annotations": {"serving.modeldeploy.io/abort": "true"}}
    }


def test_consequences_name_the_models() -> None:
    obj = stored(copy.deepcopy(full_status()))
    promote = consequence("promote", obj)
    assert "s3://models/iris/3/model.onnx (now at 10% of traffic) will be promoted" in promote
    abort = consequence("abort", obj)
    assert "all traffic returns to s3://models/iris/2/model.onnx" in abort


def test_a_shadow_step_says_what_is_mirrored_and_names_the_worst_slice() -> None:
    obj = stored(full_status())
    obj["spec"]["rollout"]["steps"] = [{"shadow": {"percent": 50, "duration": "10m"}}]
    message = "v3 disagrees with v2 on 9.1% of rows where petal_length in [4.7, 5.1) (312 rows)"
    canary = obj["status"]["canary"]
    canary.update(state="Shadowing", shadowPercent=50, weight=0, stepIndex=0)
    canary["analysis"] = [
        {"name": "shadow-slice-agreement", "value": 0.909, "min": 0.95, "samples": 312,
         "result": "Failed", "message": message, "time": "2025-01-02T03:09:00Z"}
    ]  # fmt: skip
    obj["spec"]["rollout"]["analysis"]["metrics"] = [
        {"name": "shadow-slice-agreement", "min": 0.95}
    ]
    ModelDeployment.model_validate(obj)
    lines = render(obj, now=NOW).splitlines()
    assert "  Step:          1 of 1 (shadow 50% for 10m)" in lines
    assert (
        "  State:         Shadowing (the stable pods mirror 50% of their requests to it; "
        "no client sees its answers)"
    ) in lines
    assert any(line.endswith(message) for line in lines)
