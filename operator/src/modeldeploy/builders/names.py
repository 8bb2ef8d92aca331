"""Names, labels and owner references shared by every child of a ModelDeployment."""

from __future__ import annotations

from typing import Any, Literal

from modeldeploy.api import API_VERSION, KIND, ModelDeployment

Track = Literal["stable", "canary"]
STABLE: Track = "stable"
CANARY: Track = "canary"

LABEL_DEPLOYMENT = "serving.modeldeploy.io/deployment"
LABEL_TRACK = "serving.modeldeploy.io/track"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modeldeploy"}


def name_of(md: ModelDeployment) -> str:
    return md.name


def namespace_of(md: ModelDeployment) -> str:
    return md.namespace or "default"


def deployment_name(md: ModelDeployment, track: Track) -> str:
    """The stable Deployment carries the ModelDeployment's name; the canary a suffix."""
    return name_of(md) if track == STABLE else f"{name_of(md)}-canary"


def service_name(md: ModelDeployment, track: Track | None = None) -> str:
    """The Service of all tracks, or (for Gateway API routing) the Service of one track."""
    return name_of(md) if track is None else f"{name_of(md)}-{track}"


def selector_labels(md: ModelDeployment, track: Track | None = None) -> dict[str, str]:
    """Labels that select the serving pods (of one track, when given)."""
    labels = {LABEL_DEPLOYMENT: name_of(md)}
    if track is not None:
        labels[LABEL_TRACK] = track
    return labels


def standard_labels(md: ModelDeployment, track: Track | None = None) -> dict[str, str]:
    """The labels on everything modeldeploy creates for ``md``."""
    return {
        "app.kubernetes.io/name": "modeldeploy-server",
        "app.kubernetes.io/instance": name_of(md),
        "app.kubernetes.io/component": "inference",
        **MANAGED_BY,
        **selector_labels(md, track),
    }


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    """Makes ``md`` the controller of a child, so deleting it garbage-collects the child."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name_of(md),
        "uid": md.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    md: ModelDeployment, name: str, track: Track | None = None, **extra: Any
) -> dict[str, Any]:
    """Metadata of a child object: name, namespace, labels, owner reference."""
    return {
        "name": name,
        "namespace": namespace_of(md),
        "labels": standard_labels(md, track),
        "ownerReferences": [owner_reference(md)],
        **extra,
    }
