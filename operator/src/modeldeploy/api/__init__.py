"""The ModelDeployment API: pydantic models (the single source of truth) and the CRD generator.

`modeldeploy.api.v1alpha1` holds every model and the API names; `modeldeploy.api.crd` turns them
into the CustomResourceDefinition, `modeldeploy.api.reference` into docs/api.md. Nothing here
talks to a cluster.
"""

from modeldeploy.api.types import parse_duration, parse_quantity
from modeldeploy.api.v1alpha1 import (
    ABORT_ANNOTATION,
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    PROMOTE_ANNOTATION,
    VERSION,
    CanaryStatus,
    Condition,
    ConditionType,
    HistoryEntry,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelStatus,
    Phase,
)

__all__ = [
    "ABORT_ANNOTATION",
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "PROMOTE_ANNOTATION",
    "VERSION",
    "CanaryStatus",
    "Condition",
    "ConditionType",
    "HistoryEntry",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelStatus",
    "Phase",
    "parse_duration",
    "parse_quantity",
]
