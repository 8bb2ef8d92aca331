"""One table of ModelDeployments, run against the pydantic models (unit) and the API server
(integration): both must refuse the same invalid objects, naming the same field, and accept the
same valid ones."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

DELETE = object()
"""Value of a change that removes the field."""


def base_manifest(name: str = "case") -> dict[str, Any]:
    """A valid ModelDeployment that uses most of the API (Canary with analysis)."""
    return {
        "apiVersion": "serving.modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": "s3://models/iris/3/model.onnx",
                "sha256": "a" * 64,
                "name": "iris",
                "version": "3",
                "credentialsSecret": "s3-credentials",
            },
            "runtime": {
                "image": "registry.example.com/modeldeploy-server:0.1.0",
                "resources": {
                    "requests": {"cpu": "500m", "memory": "256Mi"},
                    "limits": {"cpu": 1, "memory": "1Gi"},
                },
                "threads": 2,
                "batching": {"maxBatchSize": 16, "maxDelayMs": 5},
                "env": [{"name": "LOG_LEVEL", "value": "debug"}],
            },
            "replicas": 2,
            "rollout": {
                "strategy": "Canary",
                "steps": [{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}],
                "analysis": {
                    "interval": "30s",
                    "prometheus": {"address": "http://prometheus.monitoring:9090"},
                    "metrics": [
                        {"name": "error-rate", "max": 0.01},
                        {"name": "custom", "query": "vector(1)", "min": 0, "max": 2},
                    ],
                },
            },
            "service": {"port": 8080, "type": "ClusterIP"},
            "podTemplate": {"labels": {"team": "ml"}},
        },
    }


@dataclass(frozen=True)
class Case:
    """`changes` (dotted path -> value, or DELETE) applied to `base_manifest()`."""

    id: str
    changes: dict[str, Any]
    field: str = ""
    """For an invalid case: text both refusals must contain (the offending field's name)."""


def build(case: Case, name: str = "case") -> dict[str, Any]:
    """The manifest of a case."""
    manifest = base_manifest(name)
    for path, value in case.changes.items():
        *parents, last = path.split(".")
        node: Any = manifest
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key: Any = int(last) if isinstance(node, list) else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = copy.deepcopy(value)
    return manifest


ROLLING = {"spec.rollout": {"strategy": "Rolling"}}

INVALID = [
    Case("unknown-field", {"spec.model.urii": "s3://a/b"}, "urii"),
    Case("unknown-spec-field", {"spec.replica": 3}, "replica"),
    Case("uri-missing", {"spec.model.uri": DELETE}, "spec.model.uri"),
    Case("uri-scheme", {"spec.model.uri": "ftp://host/model.onnx"}, "spec.model.uri"),
    Case("uri-no-path", {"spec.model.uri": "s3://bucket"}, "spec.model.uri"),
    Case("sha256-short", {"spec.model.sha256": "abc123"}, "spec.model.sha256"),
    Case("sha256-uppercase", {"spec.model.sha256": "A" * 64}, "spec.model.sha256"),
    Case("model-name-slash", {"spec.model.name": "iris/v2"}, "spec.model.name"),
    Case("model-version-integer", {"spec.model.version": 3}, "spec.model.version"),
    Case(
        "credentials-with-file-uri",
        {"spec.model.uri": "file:///models/iris.onnx"},
        "credentialsSecret",
    ),
    Case("replicas-negative", {"spec.replicas": -1}, "spec.replicas"),
    Case("replicas-string", {"spec.replicas": "3"}, "spec.replicas"),
    Case(
        "autoscaling-min-above-max",
        {"spec.autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "minReplicas",
    ),
    Case("autoscaling-no-max", {"spec.autoscaling": {"minReplicas": 1}}, "maxReplicas"),
    Case(
        "autoscaling-cpu-zero",
        {"spec.autoscaling": {"maxReplicas": 3, "targetCPUUtilization": 0}},
        "targetCPUUtilization",
    ),
    Case("quantity-garbage", {"spec.runtime.resources.limits.cpu": "lots"}, "limits.cpu"),
    Case(
        "requests-above-limits",
        {"spec.runtime.resources.requests.memory": "2Gi"},
        "requests",
    ),
    Case("size-limit-tiny", {"spec.model.sizeLimit": "512Ki"}, "sizeLimit"),
    Case("size-limit-garbage", {"spec.model.sizeLimit": "big"}, "sizeLimit"),
    Case("threads-zero", {"spec.runtime.threads": 0}, "threads"),
    Case("batch-size-zero", {"spec.runtime.batching.maxBatchSize": 0}, "maxBatchSize"),
    Case("pull-policy", {"spec.runtime.imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
    Case(
        "env-duplicate",
        {"spec.runtime.env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "env",
    ),
    Case("env-no-name", {"spec.runtime.env": [{"value": "1"}]}, "name"),
    Case(
        "env-reserved-name",
        {"spec.runtime.env": [{"name": "LOG", "value": "1"}, {"name": "MODELDEPLOY_TRACK"}]},
        "runtime.env must not set MODELDEPLOY_",
    ),
    Case(
        "env-reserved-credentials",
        {"spec.runtime.env": [{"name": "MODELDEPLOY_HTTP_AUTHORIZATION", "value": "x"}]},
        "runtime.env must not set MODELDEPLOY_",
    ),
    Case("strategy-unknown", {"spec.rollout.strategy": "BlueGreen"}, "strategy"),
    Case(
        "steps-with-rolling",
        {"spec.rollout": {"strategy": "Rolling", "steps": [{"setWeight": 10}]}},
        "steps",
    ),
    Case("canary-without-steps", {"spec.rollout.steps": DELETE}, "steps"),
    Case("weight-above-100", {"spec.rollout.steps.0.setWeight": 150}, "setWeight"),
    Case(
        "weight-decreasing",
        {"spec.rollout.steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 20}]},
        "setWeight",
    ),
    Case(
        "step-with-both",
        {"spec.rollout.steps.0": {"setWeight": 10, "pause": {}}},
        "setWeight",
    ),
    Case("step-empty", {"spec.rollout.steps.0": {}}, "setWeight"),
    Case("pause-duration", {"spec.rollout.steps.1.pause.duration": "10 minutes"}, "duration"),
    Case("progress-deadline", {"spec.rollout.progressDeadline": "soon"}, "progressDeadline"),
    Case("analysis-interval", {"spec.rollout.analysis.interval": "1d"}, "interval"),
    Case("failure-limit-zero", {"spec.rollout.analysis.failureLimit": 0}, "failureLimit"),
    Case("inconclusive", {"spec.rollout.analysis.inconclusive": "Maybe"}, "inconclusive"),
    Case("metric-without-query", {"spec.rollout.analysis.metrics.1.query": DELETE}, "query"),
    Case(
        "metric-without-bounds",
        {"spec.rollout.analysis.metrics.0": {"name": "error-rate"}},
        "max",
    ),
    Case("metric-min-above-max", {"spec.rollout.analysis.metrics.1.min": 5}, "min"),
    Case(
        "metric-duplicate",
        {"spec.rollout.analysis.metrics.1": {"name": "error-rate", "max": 0.1}},
        "metrics",
    ),
    Case("metrics-empty", {"spec.rollout.analysis.metrics": []}, "metrics"),
    Case(
        "max-increase-garbage",
        {"spec.rollout.analysis.metrics.0.maxIncrease": "a lot"},
        "maxIncrease",
    ),
    Case(
        "max-increase-negative", {"spec.rollout.analysis.metrics.0.maxIncrease": -1}, "maxIncrease"
    ),
    Case(
        "max-increase-fraction-unquoted",
        {"spec.rollout.analysis.metrics.0.maxIncrease": 0.01},
        "maxIncrease",
    ),
    Case(
        "max-increase-too-long",
        {"spec.rollout.analysis.metrics.0.maxIncrease": "1" * 17 + "%"},
        "maxIncrease",
    ),
    Case(
        "drift-with-max-increase",
        {
            "spec.rollout.analysis.metrics.0": {
                "name": "prediction-drift",
                "max": 0.1,
                "maxIncrease": "10%",
            }
        },
        "maxIncrease",
    ),
    Case("min-samples-negative", {"spec.rollout.analysis.metrics.0.minSamples": -1}, "minSamples"),
    Case("on-no-traffic", {"spec.rollout.analysis.onNoTraffic": "Wait"}, "onNoTraffic"),
    Case("compatibility", {"spec.rollout.compatibility": "Loose"}, "compatibility"),
    Case(
        "prometheus-no-scheme",
        {"spec.rollout.analysis.prometheus.address": "prometheus:9090"},
        "address",
    ),
    Case(
        "analysis-with-rolling",
        {
            "spec.rollout": {
                "strategy": "Rolling",
                "analysis": {"metrics": [{"name": "error-rate", "max": 1}]},
            }
        },
        "analysis",
    ),
    Case(
        "traffic-routing-with-rolling",
        {
            "spec.rollout": {
                "strategy": "Rolling",
                "trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
            }
        },
        "trafficRouting",
    ),
    Case(
        "gateway-without-parent-refs",
        {"spec.rollout.trafficRouting": {"gatewayAPI": {"hostnames": ["a.example.com"]}}},
        "parentRefs",
    ),
    Case(
        "gateway-bad-hostname",
        {
            "spec.rollout.trafficRouting": {
                "gatewayAPI": {"parentRefs": [{"name": "gw"}], "hostnames": ["Bad_Host"]}
            }
        },
        "hostnames",
    ),
    Case("service-port", {"spec.service.port": 70000}, "spec.service.port"),
    Case("service-type", {"spec.service.type": "ExternalName"}, "spec.service.type"),
    Case(
        "reserved-label",
        {"spec.podTemplate.labels": {"serving.modeldeploy.io/track": "canary"}},
        "labels",
    ),
    Case(
        "service-account-name",
        {"spec.podTemplate.serviceAccountName": "Not A Name"},
        "serviceAccountName",
    ),
    Case(
        "disruption-budget-both",
        {"spec.disruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "disruptionBudget",
    ),
    Case(
        "disruption-budget-percent",
        {"spec.disruptionBudget": {"minAvailable": "150%"}},
        "minAvailable",
    ),
    Case(
        "shadow-after-set-weight",
        {"spec.rollout.steps": [{"setWeight": 10}, {"shadow": {"duration": "5m"}}]},
        "shadow must come before the first setWeight",
    ),
    Case(
        "shadow-and-set-weight-in-one-step",
        {"spec.rollout.steps.0": {"setWeight": 10, "shadow": {"duration": "5m"}}},
        "shadow",
    ),
    Case("shadow-without-duration", {"spec.rollout.steps.0": {"shadow": {}}}, "duration"),
    Case(
        "shadow-percent-zero",
        {"spec.rollout.steps.0": {"shadow": {"percent": 0, "duration": "5m"}}},
        "percent",
    ),
    Case(
        "shadow-percent-above-100",
        {"spec.rollout.steps.0": {"shadow": {"percent": 101, "duration": "5m"}}},
        "percent",
    ),
    Case(
        "shadow-duration",
        {"spec.rollout.steps.0": {"shadow": {"duration": "ten minutes"}}},
        "duration",
    ),
    Case(
        "shadow-metric-without-shadow-step",
        {"spec.rollout.analysis.metrics.0": {"name": "shadow-agreement", "min": 0.98}},
        "need a shadow step",
    ),
    Case(
        "shadow-metric-with-max-increase",
        {
            "spec.rollout.steps.0": {"shadow": {"duration": "5m"}},
            "spec.rollout.analysis.metrics.0": {
                "name": "shadow-slice-agreement",
                "maxIncrease": "0.01",
            },
        },
        "maxIncrease",
    ),
    Case("name-starts-with-digit", {"metadata.name": "1iris"}, "metadata.name"),
    Case("name-too-long", {"metadata.name": "m" * 53}, "metadata.name"),
]

VALID = [
    Case("base", {}),
    Case("rolling-minimal", {"spec": {"model": {"uri": "https://example.com/m.onnx"}}}),
    Case("file-uri", {"spec.model": {"uri": "file:///models/iris.onnx"}}),
    Case("pvc-uri", {"spec.model": {"uri": "pvc://model-store/iris/3/model.onnx"}}),
    Case("http-uri", {"spec.model.uri": "http://minio.storage:9000/models/iris.onnx"}),
    Case("size-limit", {"spec.model.sizeLimit": "500Mi"}),
    Case("size-limit-integer", {"spec.model.sizeLimit": 1073741824}),
    Case("model-name-dots", {"spec.model.name": "iris.v2_final-1"}),
    Case("replicas-zero", {"spec.replicas": 0}),
    Case("autoscaling-min-equals-max", {"spec.autoscaling": {"minReplicas": 3, "maxReplicas": 3}}),
    Case(
        "autoscaling-passthrough",
        {
            "spec.autoscaling": {
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "inference_queue"},
                            "target": {"type": "AverageValue", "averageValue": "10"},
                        },
                    }
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            }
        },
    ),
    Case(
        "requests-equal-limits-other-units",
        {
            "spec.runtime.resources": {
                "requests": {"cpu": "1000m", "memory": "1024Mi"},
                "limits": {"cpu": 1, "memory": "1Gi"},
            }
        },
    ),
    Case("requests-only", {"spec.runtime.resources": {"requests": {"cpu": "2"}}}),
    Case(
        "weights-equal-and-bounds",
        {"spec.rollout.steps": [{"setWeight": 0}, {"setWeight": 0}, {"setWeight": 100}]},
    ),
    Case("pause-forever-last", {"spec.rollout.steps": [{"setWeight": 20}, {"pause": {}}]}),
    Case("duration-compound", {"spec.rollout.steps.1.pause.duration": "1h30m"}),
    Case("builtin-with-query", {"spec.rollout.analysis.metrics.0.query": "vector(0)"}),
    Case("metric-only-min", {"spec.rollout.analysis.metrics.1.max": DELETE}),
    Case(
        "metric-only-max-increase",
        {"spec.rollout.analysis.metrics.0": {"name": "client-error-rate", "maxIncrease": "0.01"}},
    ),
    Case(
        "metric-relative-and-absolute",
        {
            "spec.rollout.analysis.metrics.0": {
                "name": "latency-p99",
                "max": 0.5,
                "maxIncrease": "20%",
                "minSamples": 200,
            }
        },
    ),
    Case("max-increase-integer", {"spec.rollout.analysis.metrics.1.maxIncrease": 3}),
    Case("min-samples-zero", {"spec.rollout.analysis.metrics.0.minSamples": 0}),
    Case(
        "no-traffic-promote-breaking",
        {"spec.rollout.analysis.onNoTraffic": "Promote", "spec.rollout.compatibility": "Breaking"},
    ),
    Case("analysis-without-prometheus", {"spec.rollout.analysis.prometheus": DELETE}),
    Case(
        "gateway-api",
        {
            "spec.rollout.trafficRouting": {
                "gatewayAPI": {
                    "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "https"}],
                    "hostnames": ["iris.example.com", "*.models.example.com"],
                }
            }
        },
    ),
    Case("disruption-budget-max-percent", {"spec.disruptionBudget": {"maxUnavailable": "25%"}}),
    Case(
        "env-value-from",
        {
            "spec.runtime.env": [
                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]
        },
    ),
    Case(
        "env-server-option",
        {"spec.runtime.env": [{"name": "MODELDEPLOY_SERVER_LOG_LEVEL", "value": "debug"}]},
    ),
    Case("other-labels", {"spec.podTemplate.labels": {"app.kubernetes.io/version": "3"}}),
    Case("name-max-length", {"metadata.name": "m" * 52}),
    Case(
        "shadow-only",
        {
            "spec.rollout.steps": [{"shadow": {"duration": "10m"}}],
            "spec.rollout.analysis.metrics.0": {"name": "shadow-agreement", "min": 0.98},
        },
    ),
    Case(
        "shadow-then-weights",
        {
            "spec.rollout.steps": [
                {"shadow": {"percent": 20, "duration": "5m"}},
                {"pause": {"duration": "1m"}},
                {"shadow": {"percent": 100, "duration": "10m"}},
                {"setWeight": 10},
                {"pause": {}},
            ],
            "spec.rollout.analysis.metrics.0": {
                "name": "shadow-slice-agreement",
                "min": 0.95,
                "minSamples": 200,
            },
        },
    ),
    Case(
        "shadow-metric-name-with-own-query",
        {
            "spec.rollout.analysis.metrics.0": {
                "name": "shadow-agreement",
                "query": "vector(1)",
                "maxIncrease": 1,
            }
        },
    ),
]
