"""Kubernetes Events about a ModelDeployment, posted by the operator's own client.

What ``kubectl describe mdep`` shows under Events: reported by component ``modeldeploy`` and
this replica's identity. One POST per Event, from whichever thread reconciles; a failed post
is logged and never fails the reconcile (an Event is a notice, the status is the record).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from modeldeploy.kube import Kube, is_transient

log = logging.getLogger("modeldeploy.events")

COMPONENT = "modeldeploy"
MAX_MESSAGE = 1024
"""Longer messages are cut: the API server refuses Events beyond its own limit."""


def event_for(
    involved: Mapping[str, Any], kind: str, reason: str, message: str, instance: str
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (a ModelDeployment as read from the API)."""
    meta = involved["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventRecorder:
    """Posts Events for the reconciles: ``recorder.sink(body)`` is the ``emit`` they call."""

    def __init__(self, kube: Kube, instance: str) -> None:
        self.kube, self.instance = kube, instance or COMPONENT

    def sink(self, involved: Mapping[str, Any]) -> Any:
        def emit(kind: str, reason: str, message: str) -> None:
            event = event_for(involved, kind, reason, message, self.instance)
            try:
                self.kube.create(event)
            except Exception as error:
                level = logging.WARNING if is_transient(error) else logging.ERROR
                log.log(level, "cannot post an Event: %s", error, extra={"reason": reason})

        return emit
