"""ModelDeployment v1alpha1: the top-level object, its spec, and every model of the API.

These models are the single source of truth of the API: `modeldeploy.api.crd` generates the
CRD from them, and the operator parses every object through `ModelDeployment.model_validate`.
The operator computes a whole `ModelDeploymentStatus` each pass and serialises it once, with
`to_dict()`, into a merge patch of the status subresource (fields it drops sent as null), sent
only when it differs from the stored status. Field descriptions become `kubectl explain` text:
write them for the user.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from modeldeploy.api.rollout import (
    BUILTIN_METRICS,
    Analysis,
    AnalysisMetric,
    GatewayAPIRouting,
    Pause,
    PrometheusSource,
    Rollout,
    Shadow,
    Step,
    TrafficRouting,
)
from modeldeploy.api.status import (
    AnalysisResult,
    CanaryStatus,
    Condition,
    ConditionType,
    HistoryEntry,
    ModelDeploymentStatus,
    ModelStatus,
    Phase,
)
from modeldeploy.api.types import ApiModel, Rule
from modeldeploy.api.workload import (
    Autoscaling,
    Batching,
    DisruptionBudget,
    EnvVar,
    LocalObjectReference,
    ModelSource,
    PodTemplate,
    ResourceRequirements,
    Runtime,
    ServiceSpec,
)

__all__ = [
    "API_VERSION",
    "BUILTIN_METRICS",
    "CATEGORIES",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Analysis",
    "AnalysisMetric",
    "AnalysisResult",
    "Autoscaling",
    "Batching",
    "CanaryStatus",
    "Condition",
    "ConditionType",
    "DisruptionBudget",
    "EnvVar",
    "GatewayAPIRouting",
    "HistoryEntry",
    "LocalObjectReference",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelSource",
    "ModelStatus",
    "Pause",
    "Phase",
    "PodTemplate",
    "PrometheusSource",
    "ResourceRequirements",
    "Rollout",
    "Runtime",
    "ServiceSpec",
    "Shadow",
    "Step",
    "TrafficRouting",
]

GROUP = "serving.modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("mdep",)
CATEGORIES = ("modeldeploy",)
NAME_MAX_LENGTH = 52
PROMOTE_ANNOTATION = f"{GROUP}/promote"
"""Set to "true" to promote the canary under way now (the operator removes it once acted on)."""
ABORT_ANNOTATION = f"{GROUP}/abort"
"""Set to "true" to roll the canary under way back now (the operator removes it once acted on)."""
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""metadata.name: a DNS label (Services are named after it) short enough for suffixes."""


class ModelDeploymentSpec(ApiModel):
    """The desired state: which model to serve, how, how many replicas, how to roll out changes."""

    model: ModelSource = Field(description="The model to serve.")
    runtime: Runtime | None = Field(
        default=None, description="How the serving container runs the model."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=10000,
        description="Number of serving pods (kubectl scale sets it). Ignored while autoscaling "
        "is set: the autoscaler owns the pod count then.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Scale the pods with a HorizontalPodAutoscaler. Absent: exactly replicas pods.",
    )
    rollout: Rollout = Field(
        default_factory=Rollout,
        description="How a change of the model or of the pod template is rolled out.",
    )
    service: ServiceSpec = Field(
        default_factory=ServiceSpec, description="The Service in front of the serving pods."
    )
    pod_template: PodTemplate | None = Field(
        default=None, description="Settings of the serving pods."
    )
    disruption_budget: DisruptionBudget | None = Field(
        default=None,
        description="A PodDisruptionBudget for the serving pods; none when unset.",
    )


class ModelDeployment(ApiModel):
    """A model served over the Open Inference Protocol, autoscaled, rolled out by canary."""

    __rules__ = (
        Rule(
            cel=f"self.metadata.name.size() <= {NAME_MAX_LENGTH} && "
            f"self.metadata.name.matches('{NAME_PATTERN}')",
            message=f"metadata.name must be at most {NAME_MAX_LENGTH} characters of lowercase "
            "letters, digits and '-', starting with a letter (the objects created for it "
            "append suffixes and must remain valid DNS labels)",
            check=lambda md: _valid_name(md.metadata.get("name")),
            reason="FieldValueInvalid",
        ),
    )

    api_version: Literal["serving.modeldeploy.io/v1alpha1"] = Field(
        default="serving.modeldeploy.io/v1alpha1",
        description="APIVersion defines the versioned schema of this representation of an object.",
    )
    kind: Literal["ModelDeployment"] = Field(
        default="ModelDeployment",
        description="Kind is a string value representing the REST resource.",
    )
    metadata: Annotated[dict[str, Any], WithJsonSchema({"type": "object"})] = Field(
        default_factory=dict, description="Standard object metadata."
    )
    spec: ModelDeploymentSpec = Field(description="The desired state of the ModelDeployment.")
    status: ModelDeploymentStatus | None = Field(
        default=None,
        description="The observed state, written by the operator (the status subresource).",
    )

    @property
    def name(self) -> str:
        """metadata.name."""
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        """metadata.namespace."""
        return str(self.metadata.get("namespace", ""))

    @property
    def served_model_name(self) -> str:
        """The name the model is served under (/v2/models/NAME): spec.model.name or
        metadata.name."""
        return self.spec.model.name or self.name


_NAME_RE = re.compile(NAME_PATTERN)


def _valid_name(name: Any) -> bool:
    # Objects not named yet (generateName, unit tests) have nothing to check.
    return name is None or (
        isinstance(name, str) and len(name) <= NAME_MAX_LENGTH and bool(_NAME_RE.match(name))
    )
