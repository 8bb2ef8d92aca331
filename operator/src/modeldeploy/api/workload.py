"""The workload part of a ModelDeployment's spec: model, runtime, scaling, Service, pods."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, WithJsonSchema

from modeldeploy.api.types import (
    ApiModel,
    DnsSubdomain,
    Quantity,
    Rule,
    list_map,
    parse_quantity,
    passthrough_list,
    passthrough_object,
)

# Labels the operator sets on everything it creates; podTemplate.labels may not override them.
RESERVED_LABEL_PREFIX = "serving.modeldeploy.io/"
RESERVED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
)

MODEL_URI_PATTERN = (
    r"^(https?://[^\s/]+(/\S*)?"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+"
    r"|pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/\S+"
    r"|file:///\S+)$"
)
URL_PATH_SEGMENT_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"

# Environment variables the operator sets on the serving container (deployment, track, pod):
# an author's value would mislabel the metrics a canary is judged by. MODELDEPLOY_SERVER_*
# stay open: they tune server options the operator does not pass on the command line, and a
# command-line flag wins over its variable, so they cannot override what the operator sets.
RESERVED_ENV_PREFIX = "MODELDEPLOY_"
SERVER_OPTION_ENV_PREFIX = "MODELDEPLOY_SERVER_"

Sha256 = Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{64}$", max_length=64)]
ModelUri = Annotated[str, StringConstraints(pattern=MODEL_URI_PATTERN, max_length=2048)]
PathSegment = Annotated[str, StringConstraints(pattern=URL_PATH_SEGMENT_PATTERN, max_length=63)]
StringMap = Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)]


class ModelProfile(ApiModel):
    """The training profile written by `modeldeploy export` beside the model."""

    uri: ModelUri = Field(
        description="Where the profile (model.profile.json) is fetched from; same schemes and "
        "credentials as the model."
    )
    sha256: Sha256 | None = Field(default=None, description="Expected SHA-256 of the profile file.")
    policy: Literal["observe", "reject"] = Field(
        default="observe",
        description="observe: count out-of-profile inputs (metrics only). reject: answer a "
        "request with an out-of-range, missing or unseen value with a 400 naming the feature.",
    )


MIN_MODEL_SIZE_LIMIT = "1Mi"


def _size_limit_large_enough(m: ModelSource) -> bool:
    return m.size_limit is None or parse_quantity(m.size_limit) >= parse_quantity(
        MIN_MODEL_SIZE_LIMIT
    )


class ModelSource(ApiModel):
    """The model to serve: where to fetch it, how to verify it and the name it is served under."""

    __rules__ = (
        Rule(
            cel="!has(self.sizeLimit) || !isQuantity(string(self.sizeLimit)) || "
            f"quantity(string(self.sizeLimit)).compareTo(quantity('{MIN_MODEL_SIZE_LIMIT}')) >= 0",
            message=f"model.sizeLimit must be at least {MIN_MODEL_SIZE_LIMIT}",
            check=_size_limit_large_enough,
            field_path=".sizeLimit",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.credentialsSecret) || self.uri.startsWith('s3://')"
            " || self.uri.startsWith('https://') || self.uri.startsWith('http://')",
            message="credentialsSecret is only used with s3, https or http model URIs",
            check=lambda m: (
                m.credentials_secret is None or m.uri.startswith(("s3://", "https://", "http://"))
            ),
            field_path=".credentialsSecret",
            reason="FieldValueForbidden",
        ),
    )

    uri: ModelUri = Field(
        description="Where the ONNX model file is fetched from: https://host/path, "
        "http://host/path, s3://bucket/key, pvc://claim/path (a PersistentVolumeClaim in the "
        "same namespace) or file:///path (a file inside the serving image). Changing it starts "
        "a rollout."
    )
    sha256: Sha256 | None = Field(
        default=None,
        description="Expected SHA-256 of the model file (64 lowercase hex characters). The pod "
        "refuses to serve a file that does not match.",
    )
    name: PathSegment | None = Field(
        default=None,
        description="Name the model is served under (/v2/models/NAME). Letters, digits, '_', "
        "'.' and '-', starting with a letter or digit, at most 63 characters. Defaults to "
        "metadata.name.",
    )
    version: PathSegment | None = Field(
        default=None,
        description='Version of the model (a string, e.g. "3"): reported by the model '
        "metadata endpoint and in status; informative only.",
    )
    credentials_secret: DnsSubdomain | None = Field(
        default=None,
        description="Name of a Secret in the same namespace whose keys become environment "
        "variables of the model download (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_SESSION_TOKEN, AWS_ENDPOINT_URL for s3; MODELDEPLOY_HTTP_AUTHORIZATION, sent as "
        "the Authorization header, for http(s)). Credentials go only to the model's origin, "
        "never to a redirect target on another host.",
    )
    size_limit: Quantity | None = Field(
        default=None,
        description="Largest model file the pod downloads, in bytes as a Kubernetes quantity "
        "(e.g. 500Mi, 4Gi; at least 1Mi): a larger file fails the fetch before or while it is "
        "read. The same cap applies to the profile, and the pod's model volume is limited to "
        "the cap for each file plus 16Mi. Defaults to the operator's setting (2Gi unless "
        "configured).",
    )
    profile: ModelProfile | None = Field(
        default=None,
        description="The model's training profile: the server checks each input against it "
        "(data-quality metrics, optional rejection) and compares predictions (the "
        "prediction-drift and data-quality rollout checks). Changing it starts a rollout.",
    )


def _requests_within_limits(resources: ResourceRequirements) -> bool:
    if not resources.requests or not resources.limits:
        return True
    return all(
        parse_quantity(value) <= parse_quantity(resources.limits[key])
        for key, value in resources.requests.items()
        if key in resources.limits
    )


ResourceList = Annotated[dict[str, Quantity], Field(max_length=16)]


class ResourceRequirements(ApiModel):
    """Compute resources of the serving container, as in a Pod's container resources."""

    __rules__ = (
        Rule(
            cel="!has(self.requests) || !has(self.limits) || self.requests.all(k, "
            "!(k in self.limits) || !isQuantity(string(self.requests[k]))"
            " || !isQuantity(string(self.limits[k])) || quantity(string(self.requests[k]))"
            ".compareTo(quantity(string(self.limits[k]))) <= 0)",
            message="resources.requests must not exceed resources.limits for the same resource",
            check=_requests_within_limits,
            field_path=".requests",
            reason="FieldValueInvalid",
        ),
    )

    requests: ResourceList | None = Field(
        default=None,
        description="Minimum resources the pod is scheduled with, by resource name (cpu, "
        "memory, ephemeral-storage, ...), as Kubernetes quantities (500m, 2, 1Gi).",
    )
    limits: ResourceList | None = Field(
        default=None,
        description="Maximum resources, by resource name, as Kubernetes quantities. The CPU "
        "limit sets the default number of inference threads.",
    )


class Batching(ApiModel):
    """Dynamic batching: concurrent requests are merged into one model call."""

    max_batch_size: int = Field(
        default=32, ge=1, le=4096, description="Largest number of requests merged into one batch."
    )
    max_delay_ms: int = Field(
        default=2,
        ge=0,
        le=10000,
        description="Longest time, in milliseconds, a request waits for others to fill a batch.",
    )


class Shutdown(ApiModel):
    """How a serving pod leaves: it keeps serving while the Service and routes forget it, then
    finishes the requests it holds. The pod's grace period is the sum plus 5 seconds."""

    drain_seconds: int = Field(
        default=5,
        ge=0,
        le=300,
        description="Seconds a pod keeps accepting requests after it is told to stop, while it "
        "reports not ready and the endpoints that send it traffic are updated.",
    )
    timeout_seconds: int = Field(
        default=20,
        ge=1,
        le=3600,
        description="Seconds the requests in flight then get to finish before the server exits.",
    )


def reserved_env_name(name: str) -> bool:
    """Whether only the operator may set the variable ``name`` (see RESERVED_ENV_PREFIX)."""
    return name.startswith(RESERVED_ENV_PREFIX) and not name.startswith(SERVER_OPTION_ENV_PREFIX)


class EnvVar(ApiModel, extra="allow"):
    """An environment variable of the serving container."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="Name of the variable."
    )


EnvVarList = Annotated[
    list[EnvVar],
    Field(
        max_length=64,
        json_schema_extra={"x-passthrough": "serving container's env (core/v1 EnvVar)"},
    ),
    *list_map("name"),
]


class Runtime(ApiModel):
    """How the serving container runs the model."""

    __rules__ = (
        Rule(
            cel=f"!has(self.env) || self.env.all(e, !e.name.startsWith('{RESERVED_ENV_PREFIX}')"
            f" || e.name.startsWith('{SERVER_OPTION_ENV_PREFIX}'))",
            message=f"runtime.env must not set {RESERVED_ENV_PREFIX}* variables: the operator "
            f"sets them ({SERVER_OPTION_ENV_PREFIX}* server options are allowed)",
            check=lambda r: not any(reserved_env_name(e.name) for e in r.env or ()),
            field_path=".env",
            reason="FieldValueForbidden",
        ),
    )

    image: Annotated[str, StringConstraints(pattern=r"^\S+$", max_length=1024)] | None = Field(
        default=None,
        description="Serving image. Defaults to the image the operator is configured with.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None,
        description="Pull policy of the serving image; Kubernetes' default when unset.",
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Compute resources of the serving container."
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="ONNX Runtime intra-op threads per pod. Defaults to the CPU limit rounded "
        "up (1 without a CPU limit).",
    )
    batching: Batching | None = Field(
        default=None,
        description="Dynamic batching of concurrent requests; without it each request is run "
        "on its own.",
    )
    env: EnvVarList | None = Field(
        default=None,
        description="Extra environment variables of the serving container (name with value "
        "or valueFrom). Names starting with MODELDEPLOY_ are the operator's, except "
        "MODELDEPLOY_SERVER_<OPTION>, which tunes a server option the operator does not set.",
    )
    shutdown: Shutdown | None = Field(
        default=None,
        description="Draining on the way out, so that no client request fails when pods are "
        "replaced or removed. Defaults: drain 5 s, then 20 s for requests in flight.",
    )


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) that scales the serving pods."""

    __rules__ = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="autoscaling.minReplicas must be less than or equal to maxReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
            field_path=".minReplicas",
            reason="FieldValueInvalid",
        ),
    )

    min_replicas: int = Field(
        default=1, ge=1, le=10000, description="Fewest pods the autoscaler keeps."
    )
    max_replicas: int = Field(ge=1, le=10000, description="Most pods the autoscaler creates.")
    target_cpu_utilization: int = Field(
        default=80,
        ge=1,
        le=1000,
        alias="targetCPUUtilization",
        description="Average CPU use to keep, in percent of the CPU request (set "
        "runtime.resources.requests.cpu).",
    )
    metrics: Annotated[
        list[dict[str, Any]] | None,
        passthrough_list("HorizontalPodAutoscaler's spec.metrics (autoscaling/v2 MetricSpec)", 16),
    ] = Field(default=None, description="Further metrics, added after the CPU metric.")
    behavior: Annotated[
        dict[str, Any] | None,
        passthrough_object("HorizontalPodAutoscaler's spec.behavior (autoscaling/v2)"),
    ] = Field(default=None, description="Scale-up and scale-down policies.")


class ServiceSpec(ApiModel):
    """The Service in front of the serving pods."""

    port: int = Field(default=8080, ge=1, le=65535, description="Port of the HTTP API.")
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type."
    )
    annotations: StringMap | None = Field(
        default=None, description="Annotations of the Service (e.g. for a load balancer)."
    )


def _labels_not_reserved(labels: dict[str, str] | None) -> bool:
    return not any(
        key.startswith(RESERVED_LABEL_PREFIX) or key in RESERVED_LABELS for key in labels or {}
    )


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: DnsSubdomain = Field(description="Name of the object.")


class PodTemplate(ApiModel):
    """Settings of the serving pods (stable and canary alike)."""

    __rules__ = (
        Rule(
            cel=f"!has(self.labels) || self.labels.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}')"
            f" && !(k in [{', '.join(repr(label) for label in RESERVED_LABELS)}]))",
            message="podTemplate.labels must not set app.kubernetes.io/name, "
            "app.kubernetes.io/instance, app.kubernetes.io/managed-by or "
            "serving.modeldeploy.io/* labels: the operator owns them",
            check=lambda p: _labels_not_reserved(p.labels),
            field_path=".labels",
            reason="FieldValueForbidden",
        ),
    )

    labels: StringMap | None = Field(default=None, description="Extra labels of the pods.")
    annotations: StringMap | None = Field(
        default=None, description="Extra annotations of the pods."
    )
    node_selector: StringMap | None = Field(
        default=None, description="Labels a node must have to run the pods."
    )
    tolerations: Annotated[
        list[dict[str, Any]] | None, passthrough_list("pod's spec.tolerations (core/v1)", 64)
    ] = Field(default=None, description="Taints the pods tolerate.")
    affinity: Annotated[
        dict[str, Any] | None, passthrough_object("pod's spec.affinity (core/v1 Affinity)")
    ] = Field(default=None, description="Node and pod affinity of the pods.")
    topology_spread_constraints: Annotated[
        list[dict[str, Any]] | None,
        passthrough_list("pod's spec.topologySpreadConstraints (core/v1)", 16),
    ] = Field(default=None, description="How the pods spread across zones and nodes.")
    service_account_name: DnsSubdomain | None = Field(
        default=None,
        description="ServiceAccount the pods run as; the namespace's default when unset.",
    )
    image_pull_secrets: (
        Annotated[list[LocalObjectReference], Field(max_length=16), *list_map("name")] | None
    ) = Field(default=None, description="Secrets used to pull the serving image.")
    priority_class_name: DnsSubdomain | None = Field(
        default=None, description="PriorityClass of the pods."
    )


PERCENT_PATTERN = r"^(100|[1-9]?[0-9])%$"
IntOrPercent = Annotated[
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=PERCENT_PATTERN)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "minimum": 0,
            "pattern": PERCENT_PATTERN,
        }
    ),
]


class DisruptionBudget(ApiModel):
    """A PodDisruptionBudget for the serving pods: exactly one of minAvailable or maxUnavailable."""

    __rules__ = (
        Rule(
            cel="has(self.minAvailable) != has(self.maxUnavailable)",
            message="disruptionBudget needs exactly one of minAvailable or maxUnavailable",
            check=lambda d: (d.min_available is None) != (d.max_unavailable is None),
        ),
    )

    min_available: IntOrPercent | None = Field(
        default=None, description="Pods that must stay available: a number or a percentage (50%)."
    )
    max_unavailable: IntOrPercent | None = Field(
        default=None, description="Pods that may be unavailable: a number or a percentage (25%)."
    )
