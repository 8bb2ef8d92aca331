"""Builders: a ModelDeployment in, the desired child out (table tests, no cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modeldeploy.api import ModelDeployment
from modeldeploy.builders import (
    build_autoscaler,
    build_deployment,
    build_disruption_budget,
    build_service,
    build_shadow_config,
    server_concurrency,
)
from modeldeploy.config import OperatorConfig

SHA = "b" * 64


def md(**spec: Any) -> ModelDeployment:
    body = {
        "apiVersion": "serving.modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {"model": {"uri": "https://m.example.com/iris.onnx"}, **spec},
    }
    return ModelDeployment.model_validate(body)


def container(deployment: dict[str, Any], name: str = "server") -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] + pod["initContainers"] if c["name"] == name)


def test_deployment_is_labelled_owned_and_secure() -> None:
    d = build_deployment(md(), "stable", replicas=2)
    labels = d["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "modeldeploy"
    assert labels["serving.modeldeploy.io/track"] == "stable"
    assert d["metadata"]["ownerReferences"][0] == {
        "apiVersion": "serving.modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "iris",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"]["matchLabels"] == {
        "serving.modeldeploy.io/deployment": "iris",
        "serving.modeldeploy.io/track": "stable",
    }
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"] + pod["initContainers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_fetch_then_serve_with_probes_env_and_scrape_annotations() -> None:
    d = build_deployment(
        md(model={"uri": "s3://bucket/k.onnx", "sha256": SHA, "credentialsSecret": "s3-creds"}),
        "canary",
        OperatorConfig(server_image="registry.example.com/server:9"),
    )
    fetch, server = container(d, "fetch-model"), container(d)
    assert fetch["args"] == [
        "fetch",
        "--model-uri=s3://bucket/k.onnx",
        "--dest=/models",
        "--max-bytes=2147483648",
        f"--sha256={SHA}",
    ]
    assert fetch["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "envFrom" not in server  # credentials only where the model is fetched
    assert server["image"] == fetch["image"] == "registry.example.com/server:9"
    assert "--model-uri=file:///models/model.onnx" in server["args"]
    assert "--model-name=iris" in server["args"]
    env = {e["name"]: e for e in server["env"]}
    assert env["MODELDEPLOY_TRACK"]["value"] == "canary"
    assert env["MODELDEPLOY_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    annotations = d["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8082"
    assert d["metadata"]["name"] == "iris-canary"


def test_the_operators_env_wins_and_comes_before_the_authors() -> None:
    """Reserved names are refused at admission; an object stored before that rule still gets
    the operator's values (server-side apply would refuse a duplicate name anyway)."""
    from modeldeploy.api.v1alpha1 import EnvVar, Runtime

    author = [
        EnvVar(name="OTEL_SERVICE_NAME", value="$(MODELDEPLOY_DEPLOYMENT_NAME)"),
        EnvVar(name="MODELDEPLOY_SERVER_LOG_LEVEL", value="debug"),
    ]
    # Bypasses validation, as an object admitted before the CEL rule existed would.
    smuggled = EnvVar.model_construct(name="MODELDEPLOY_TRACK", value="stable")
    stored = md().model_copy(deep=True)
    stored.spec.runtime = Runtime.model_construct(env=[author[0], smuggled, author[1]])
    env = container(build_deployment(stored, "canary"))["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert [e["value"] for e in env if e["name"] == "MODELDEPLOY_TRACK"] == ["canary"]
    assert names[-2:] == ["OTEL_SERVICE_NAME", "MODELDEPLOY_SERVER_LOG_LEVEL"]
    assert names.index("MODELDEPLOY_DEPLOYMENT_NAME") < names.index("OTEL_SERVICE_NAME")


@pytest.mark.parametrize(
    ("model", "default", "max_bytes", "volume"),
    [
        ({}, "2Gi", 2 * 2**30, "2064Mi"),
        ({}, "100Mi", 100 * 2**20, "116Mi"),
        ({"sizeLimit": "500Mi"}, "2Gi", 500 * 2**20, "516Mi"),
        ({"sizeLimit": "1G"}, "2Gi", 10**9, str(10**9 + 16 * 2**20)),
        (
            {"sizeLimit": "1Gi", "profile": {"uri": "https://m.example.com/p.json"}},
            "2Gi",
            2**30,
            "2064Mi",
        ),
    ],
)
def test_the_size_limit_caps_the_fetch_and_sizes_the_model_volume(
    model: dict[str, Any], default: str, max_bytes: int, volume: str
) -> None:
    d = build_deployment(
        md(model={"uri": "https://m.example.com/iris.onnx", **model}),
        settings=OperatorConfig(model_size_limit=default),
    )
    assert f"--max-bytes={max_bytes}" in container(d, "fetch-model")["args"]
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model"]["emptyDir"] == {"sizeLimit": volume}


def test_autoscaled_deployment_leaves_replicas_to_the_hpa() -> None:
    from modeldeploy.builders.deployment import desired_replicas

    scaled = md(autoscaling={"minReplicas": 2, "maxReplicas": 5})
    assert desired_replicas(scaled) is None
    assert "replicas" not in build_deployment(scaled, replicas=desired_replicas(scaled))["spec"]


@pytest.mark.parametrize(
    ("runtime", "workers", "threads"),
    [
        ({}, 1, 1),
        ({"threads": 3}, 1, 3),
        ({"resources": {"limits": {"cpu": "2"}}}, 2, 1),
        ({"resources": {"limits": {"cpu": "1500m"}}}, 2, 1),
        ({"resources": {"requests": {"cpu": "250m"}}}, 1, 1),
        ({"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "4"}}, "threads": 2}, 2, 2),
    ],
)
def test_workers_times_threads_follow_the_cpu_limit_not_the_host(
    runtime: dict[str, Any], workers: int, threads: int
) -> None:
    assert server_concurrency(md(runtime=runtime)) == (workers, threads)
    args = container(build_deployment(md(runtime=runtime)))["args"]
    assert f"--workers={workers}" in args and f"--threads={threads}" in args


def test_pod_template_overrides_and_pvc_source() -> None:
    d = build_deployment(
        md(
            model={"uri": "pvc://models/iris/3/model.onnx"},
            podTemplate={
                "nodeSelector": {"pool": "cpu"},
                "serviceAccountName": "serving",
                "labels": {"team": "fraud"},
                "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            },
        )
    )
    pod = d["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["serviceAccountName"] == "serving"
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert d["spec"]["template"]["metadata"]["labels"]["team"] == "fraud"
    claim = next(v for v in pod["volumes"] if v["name"] == "model-source")
    assert claim["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}


def test_batching_and_runtime_image_reach_the_server() -> None:
    d = build_deployment(
        md(runtime={"image": "my/server:1", "batching": {"maxBatchSize": 8, "maxDelayMs": 5}})
    )
    args = container(d)["args"]
    assert "--max-batch-size=8" in args and "--max-batch-delay-ms=5" in args
    assert container(d)["image"] == "my/server:1"


@pytest.mark.parametrize(
    ("shutdown", "drain", "timeout", "grace"),
    [(None, 5, 20, 30), ({"drainSeconds": 0, "timeoutSeconds": 60}, 0, 60, 65)],
)
def test_pods_drain_before_they_stop_within_a_grace_period_that_covers_it(
    shutdown: dict[str, int] | None, drain: int, timeout: int, grace: int
) -> None:
    runtime = {"shutdown": shutdown} if shutdown else {}
    d = build_deployment(md(runtime=runtime))
    args = container(d)["args"]
    assert f"--drain-delay={drain}" in args and f"--graceful-timeout={timeout}" in args
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace


def test_service_selects_all_tracks_or_one() -> None:
    svc = build_service(md(service={"port": 9000, "type": "NodePort"}))
    assert svc["spec"]["selector"] == {"serving.modeldeploy.io/deployment": "iris"}
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"][0] == {
        "name": "http",
        "port": 9000,
        "targetPort": "http",
        "protocol": "TCP",
    }
    canary = build_service(md(), "canary")
    assert canary["metadata"]["name"] == "iris-canary"
    assert canary["spec"]["selector"]["serving.modeldeploy.io/track"] == "canary"


def test_autoscaler_passes_metrics_and_behavior_through() -> None:
    assert build_autoscaler(md()) is None
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    extra = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "qps"},
            "target": {"type": "AverageValue", "averageValue": "10"},
        },
    }
    hpa = build_autoscaler(
        md(
            autoscaling={
                "minReplicas": 2,
                "maxReplicas": 7,
                "targetCPUUtilization": 55,
                "metrics": [extra],
                "behavior": behavior,
            }
        )
    )
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "iris",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 55
    assert hpa["spec"]["metrics"][1] == extra
    assert hpa["spec"]["behavior"] == behavior


def test_disruption_budget_only_when_asked() -> None:
    assert build_disruption_budget(md()) is None
    pdb = build_disruption_budget(md(disruptionBudget={"maxUnavailable": "25%"}))
    assert pdb is not None
    assert pdb["spec"] == {
        "selector": {"matchLabels": {"serving.modeldeploy.io/deployment": "iris"}},
        "maxUnavailable": "25%",
    }


def test_a_training_profile_is_fetched_beside_the_model_and_checked_by_the_server() -> None:
    d = build_deployment(
        md(
            model={
                "uri": "pvc://models/iris/3/model.onnx",
                "profile": {
                    "uri": "pvc://profiles/iris/3/model.profile.json",
                    "sha256": SHA,
                    "policy": "reject",
                },
            }
        )
    )
    fetch = container(d, "fetch-model")["args"]
    assert "--profile-uri=pvc://profiles/iris/3/model.profile.json" in fetch
    assert f"--profile-sha256={SHA}" in fetch
    server = container(d)["args"]
    assert "--profile-uri=file:///models/model.profile.json" in server
    assert "--quality-policy=reject" in server
    pod = d["spec"]["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"model-source": "models", "profile-source": "profiles"}
    mounts = {m["mountPath"] for m in container(d, "fetch-model")["volumeMounts"]}
    assert {"/mnt/pvc/models", "/mnt/pvc/profiles"} <= mounts


def test_without_a_profile_the_server_gets_no_quality_flags() -> None:
    args = container(build_deployment(md()))["args"]
    assert not any(a.startswith(("--profile-uri", "--quality-policy")) for a in args)


def test_only_the_stable_server_reads_the_shadow_config_from_a_read_only_volume() -> None:
    stable, canary = build_deployment(md(), "stable"), build_deployment(md(), "canary")
    server = container(stable)
    assert "--shadow-config=/etc/modeldeploy/shadow/config.json" in server["args"]
    assert {"name": "shadow", "mountPath": "/etc/modeldeploy/shadow", "readOnly": True} in server[
        "volumeMounts"
    ]
    volumes = {v["name"]: v for v in stable["spec"]["template"]["spec"]["volumes"]}
    # optional: a stable pod never waits for the ConfigMap; without the file nothing mirrors
    assert volumes["shadow"] == {
        "name": "shadow",
        "configMap": {"name": "iris-shadow", "optional": True},
    }
    assert not any("shadow" in arg for arg in container(canary)["args"])
    assert "shadow" not in {v["name"] for v in canary["spec"]["template"]["spec"]["volumes"]}
    assert "shadow" not in {m["name"] for m in container(canary)["volumeMounts"]}


def test_the_shadow_config_points_at_the_canary_service_or_nowhere() -> None:
    model = md(service={"port": 9000})
    on = build_shadow_config(model, 25)
    assert on["kind"] == "ConfigMap"
    assert on["metadata"]["name"] == "iris-shadow"
    assert on["metadata"]["namespace"] == "ml"
    assert on["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert on["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modeldeploy"
    assert json.loads(on["data"]["config.json"]) == {
        "target": "http://iris-canary.ml.svc:9000",
        "percent": 25,
    }
    off = build_shadow_config(model)
    assert json.loads(off["data"]["config.json"]) == {"target": "", "percent": 0}
    assert off["metadata"] == on["metadata"]


def test_turning_mirroring_on_and_off_leaves_the_stable_pod_template_alone() -> None:
    """The pod template does not depend on the shadow config, so no restart follows it."""
    model = md()
    template = build_deployment(model, "stable")["spec"]["template"]
    assert build_shadow_config(model, 100) != build_shadow_config(model, 0)
    assert build_deployment(model, "stable")["spec"]["template"] == template
