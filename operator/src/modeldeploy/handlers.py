"""What the operator watches. kopf owns the watches and calls these handlers; each hands its
event to the controller (:mod:`modeldeploy.controller`), which decides what to reconcile.

- ModelDeployments: every event (and an index of the latest bodies, so a child's event finds
  its owner without a read);
- their children (Deployments, Services, the shadow ConfigMap, HPAs, PDBs) labelled
  managed-by modeldeploy: an edited or deleted child is restored, and the status follows the
  Deployments;
- the serving pods: the status reports why pods are not ready.

Only event handlers: kopf keeps no state on the objects (no finalizers, no annotations), and
the controller, not kopf, retries a failed reconcile. The wiring is in :mod:`modeldeploy.runner`.
"""

from __future__ import annotations

from typing import Any

import kopf

from modeldeploy.api import GROUP, PLURAL, VERSION
from modeldeploy.builders.names import LABEL_DEPLOYMENT, MANAGED_BY
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import Controller
from modeldeploy.reconcilers import plain
from modeldeploy.resources import CACHED, CHILDREN, MANAGED_SELECTOR, POD


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's settings, then the controller's threads and the leader election."""
    config: OperatorConfig = memo["config"]
    # Events are posted by the controller's recorder, as component "modeldeploy".
    settings.posting.enabled = False
    settings.networking.error_backoffs = [1, 2, 4, 8, 15]
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 8
    settings.batching.worker_limit = 256
    # Watch only what the operator manages, filtered by the API server: the handlers' own
    # label filters are applied by kopf after it received every object of the kind.
    for resource in CACHED:
        settings.watching.label_selectors[resource.group, resource.plural] = MANAGED_SELECTOR
    if config.namespaces:
        # Exact namespaces and fixed resources: no cluster-wide scan of namespaces and CRDs,
        # so a namespaced installation needs Roles only.
        settings.scanning.disabled = True
    memo["controller"].start()
    if memo.get("leadership") is not None:
        memo["leadership"].start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo["controller"].stop()
    if memo.get("leadership") is not None:
        memo["leadership"].release()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the ServiceAccount; elsewhere $KUBECONFIG (read now, not at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.index(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def modeldeployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Latest body of every ModelDeployment, so child events find their owner without a read."""
    return {(namespace, name): body}


@kopf.on.event(GROUP, VERSION, PLURAL)
def modeldeployment(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A ModelDeployment was listed, created, changed or deleted."""
    controller: Controller = memo["controller"]
    controller.modeldeployment_event(plain(body), deleted=type == "DELETED")


def child(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    modeldeployments: kopf.Index,
    **_: Any,
) -> None:
    """A child changed: reconcile its owner, unless the event shows a version already known
    (our own apply's response)."""
    controller: Controller = memo["controller"]
    if not controller.child_event(plain(body), deleted=type == "DELETED"):
        return
    owner = body["metadata"].get("labels", {}).get(LABEL_DEPLOYMENT)
    for parent in modeldeployments.get((namespace, owner), []) if owner else []:
        uid = parent["metadata"].get("uid")
        if any(ref.get("uid") == uid for ref in body["metadata"].get("ownerReferences", [])):
            controller.reconcile_logged(plain(parent))


for _child in CHILDREN:
    kopf.on.event(_child.group, _child.version, _child.plural, labels=MANAGED_BY)(child)  # type: ignore[arg-type]


@kopf.on.event(POD.group, POD.version, POD.plural, labels=MANAGED_BY)
async def serving_pod(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A serving pod changed (in the event loop: it only updates the store)."""
    memo["controller"].pod_event(body, deleted=type == "DELETED")
