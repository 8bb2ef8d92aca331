"""What a serving pod says about its own trouble, in words a ModelDeployment's status can carry.

Pure functions over pod objects (as a watch delivers them, or trimmed by :func:`trim_pod`).
A Deployment's own conditions say only that pods are not ready; the reasons live in the pods:
the scheduler could not place one, the init container could not fetch the model (wrong
digest, missing object, refused credentials), the server was killed for memory, the image
cannot be pulled.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

# Kept of each container status: enough to explain a failure, little enough to cache.
_CONTAINER_KEYS = ("name", "state", "lastState", "restartCount")
_MESSAGE_LIMIT = 300
# Waiting reasons that mean the image will not arrive without a change.
_IMAGE_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
)


def trim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What status and the rollout need of a pod: name, labels, version, deletion, phase,
    conditions, address and the states of its containers."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    trimmed: dict[str, Any] = {
        k: status[k] for k in ("phase", "conditions", "podIP") if k in status
    }
    for key in ("initContainerStatuses", "containerStatuses"):
        if status.get(key):
            trimmed[key] = [{k: c[k] for k in _CONTAINER_KEYS if k in c} for c in status[key]]
    return {
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "labels", "resourceVersion", "deletionTimestamp")
            if k in meta
        },
        "status": trimmed,
    }


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def _last_words(message: str) -> str:
    """What a container said last: its termination message, or (FallbackToLogsOnError) the
    tail of its log, whose last line is the error; a structured line gives its message."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1].strip()
    try:
        parsed = json.loads(last)
    except ValueError:
        return _short(last)
    if isinstance(parsed, dict) and parsed.get("message"):
        return _short(str(parsed["message"]))
    return _short(last)


def _terminated_badly(container: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The container's failed termination, current or the last one before a restart."""
    for key in ("state", "lastState"):
        terminated = (container.get(key) or {}).get("terminated")
        if terminated and (terminated.get("exitCode") or terminated.get("reason") == "OOMKilled"):
            return dict(terminated)
    return None


def _scheduling(pod: Mapping[str, Any], name: str) -> tuple[str, str] | None:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if (condition.get("type"), condition.get("status"), condition.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            message = f"pod {name} cannot be scheduled: {condition.get('message', '')}"
            return "PodsUnschedulable", message.strip()
    return None


def _container(pod_name: str, container: Mapping[str, Any], init: bool) -> tuple[str, str] | None:
    kind = "init container" if init else "container"
    cname = container.get("name", "?")
    waiting = (container.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in _IMAGE_REASONS:
        return "ImagePullFailed", _short(
            f"pod {pod_name}: {kind} {cname} cannot get its image ({waiting['reason']}): "
            f"{waiting.get('message', '')}"
        )
    terminated = _terminated_badly(container)
    if terminated is None:
        return None
    restarts = int(container.get("restartCount") or 0)
    said = _last_words(str(terminated.get("message") or ""))
    if terminated.get("reason") == "OOMKilled":
        return "OOMKilled", _short(
            f"pod {pod_name}: {kind} {cname} was killed for exceeding its memory limit "
            f"(OOMKilled, {restarts} restart(s)); raise spec.runtime.resources.limits.memory "
            "or serve a smaller model"
        )
    reason = "ModelFetchFailed" if init and cname == "fetch-model" else "ContainerFailed"
    return reason, _short(
        f"pod {pod_name}: {kind} {cname} failed (exit code {terminated.get('exitCode')}, "
        f"{restarts} restart(s))" + (f": {said}" if said else "")
    )


def pod_problem(pod: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(reason, message) of what keeps ``pod`` from serving for good, or None while it is
    fine or merely starting."""
    if not pod:
        return None
    name = str((pod.get("metadata") or {}).get("name", "?"))
    found = _scheduling(pod, name)
    if found:
        return found
    status = pod.get("status") or {}
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for container in status.get(key) or ():
            found = _container(name, container, init)
            if found:
                return found
    return None


def pod_problems(pods: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """One (reason, message) per kind of problem, from the first pod that shows it."""
    seen: dict[str, str] = {}
    for pod in pods:
        found = pod_problem(pod)
        if found and found[0] not in seen:
            seen[found[0]] = found[1]
    return list(seen.items())


def serving_address(pod: Mapping[str, Any]) -> str | None:
    """The IP of a pod that is Ready and not being deleted; None otherwise."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or not status.get("podIP"):
        return None
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return str(status["podIP"]) if ready else None
