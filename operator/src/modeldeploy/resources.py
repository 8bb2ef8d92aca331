"""Every kind of object the operator reads or writes, in one table.

:data:`CHILDREN` are the kinds the operator owns, watches and caches; :data:`RESOURCES` maps
each kind the API layer addresses to its plural name.
"""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.api import GROUP, KIND, PLURAL, VERSION
from modeldeploy.builders.names import MANAGED_BY


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        """The API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


MODELDEPLOYMENT = Resource(f"{GROUP}/{VERSION}", KIND, PLURAL)
DEPLOYMENT = Resource("apps/v1", "Deployment", "deployments")
SERVICE = Resource("v1", "Service", "services")
CONFIG_MAP = Resource("v1", "ConfigMap", "configmaps")
AUTOSCALER = Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
DISRUPTION_BUDGET = Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
POD = Resource("v1", "Pod", "pods")
EVENT = Resource("v1", "Event", "events")
HTTPROUTE = Resource("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")

CHILDREN = (DEPLOYMENT, SERVICE, CONFIG_MAP, AUTOSCALER, DISRUPTION_BUDGET)
"""Children the operator watches (an edited or deleted one is restored) and caches."""
CACHED = (*CHILDREN, POD)
"""Kinds whose reads the watch-fed store answers: the children and the serving pods."""

RESOURCES: dict[tuple[str, str], str] = {
    (r.api_version, r.kind): r.plural for r in (MODELDEPLOYMENT, *CHILDREN, POD, EVENT, HTTPROUTE)
}

MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
"""The label selector of everything the operator creates."""
