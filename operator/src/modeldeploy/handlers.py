"""kopf handlers: thin. Each one finds the ModelDeployment concerned and calls ``reconcile``.

Settings live in one startup handler; the shared client and configuration in kopf's memo.
Children (Deployments, Services, HPAs, PDBs) are watched too, so an edited or deleted child is
restored and the status follows the pods.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from modeldeploy.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from modeldeploy.dispatch import Dispatcher
from modeldeploy.kube import Kube, api_client_from_environment, is_transient
from modeldeploy.metrics import serve as serve_metrics
from modeldeploy.reconcilers import plain
from modeldeploy.settings import OperatorSettings

log = logging.getLogger("modeldeploy.handlers")

MANAGED = {"app.kubernetes.io/managed-by": "modeldeploy"}
OWNER_LABEL = "serving.modeldeploy.io/deployment"
CHILD_KINDS = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """The one place where the operator is configured."""
    config: OperatorSettings = memo.get("config") or OperatorSettings()
    memo["config"] = config
    if "kube" not in memo:
        memo["kube"] = Kube(api_client_from_environment(), field_manager=config.field_manager)
    memo["dispatcher"] = Dispatcher(memo["kube"], config, _emitter)
    if config.metrics_address and not memo.get("metrics_started"):
        serve_metrics(config.metrics_address, memo["dispatcher"].statuses)
        memo["metrics_started"] = True
    # Our own annotations, not kopf's defaults; no finalizers (children are garbage-collected).
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="serving.modeldeploy.io", key="last-handled-configuration"
    )
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="serving.modeldeploy.io"
    )
    settings.posting.level = logging.INFO
    # Events say who wrote them: `kubectl describe mdep` shows "modeldeploy", not "kopf".
    settings.posting.reporting_component = "modeldeploy"
    settings.posting.reporting_instance = config.identity or "modeldeploy"
    settings.networking.error_backoffs = [1, 2, 4, 8, 15]
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 8
    if config.namespaces:
        # Exact namespaces and fixed resources: no cluster-wide scan of namespaces and CRDs,
        # so a namespaced installation needs Roles only.
        settings.scanning.disabled = True
    settings.batching.worker_limit = 256


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In a pod, the ServiceAccount; elsewhere $KUBECONFIG (read now, not at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _emitter(body: Any) -> Any:
    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    return emit


def _run(body: Any, memo: kopf.Memo, *, fresh: bool = False) -> None:
    try:
        memo["dispatcher"].run(body, fresh=fresh)
    except Exception as error:
        if is_transient(error):
            raise kopf.TemporaryError(f"transient API error: {error}", delay=2) from error
        raise


@kopf.index(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def modeldeployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Latest body of every ModelDeployment, so child events find their owner without a read."""
    return {(namespace, name): body}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_modeldeployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A ModelDeployment appeared, changed, or the operator (re)started."""
    _run(body, memo)


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_deleted(type: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Drop what we remember of a deleted ModelDeployment (its children go with it by GC)."""
    if type == "DELETED":
        memo["dispatcher"].forget(uid)


def _leads(kube: Kube, config: OperatorSettings) -> bool:
    """Whether this replica is the one that acts (kopf pauses the others' event handling;
    the resync thread must pause with them). Mirrors kopf's rule: no live peer with a higher
    or equal priority."""
    if config.peering is None:
        return True
    namespace = config.namespaces[0] if config.namespaces else None
    kind = "KopfPeering" if namespace else "ClusterKopfPeering"
    peering = kube.get("kopf.dev/v1", kind, namespace, config.peering)
    now = datetime.now(UTC)
    for identity, peer in ((peering or {}).get("status") or {}).items():
        if identity == config.identity or not isinstance(peer, dict):
            continue
        seen = datetime.fromisoformat(str(peer.get("lastseen")))
        alive = seen + timedelta(seconds=int(peer.get("lifetime", 60))) > now
        if alive and int(peer.get("priority", 0)) >= config.priority:
            return False
    return peering is not None


def _resync_forever(memo: kopf.Memo, stop: threading.Event) -> None:
    """A periodic level-based pass over every ModelDeployment (it writes nothing when all is as
    desired). Not a kopf timer: those put a finalizer on every object."""
    config: OperatorSettings = memo["config"]
    kube: Kube = memo["kube"]
    while not stop.wait(config.resync_seconds):
        try:
            if not _leads(kube, config):
                log.debug("resync skipped: another replica leads")
                continue
        except Exception as error:
            log.warning("resync: cannot read the peering object: %s", error)
            continue
        for namespace in config.namespaces or (None,):
            try:
                items = kube.list(API_VERSION, KIND, namespace)
            except Exception as error:  # the next round retries
                log.warning("resync: cannot list ModelDeployments: %s", error)
                continue
            log.debug("resync pass", extra={"count": len(items)})
            for item in items:
                try:
                    _run(item, memo, fresh=True)
                except Exception as error:
                    log.warning("resync of %s failed: %s", item["metadata"]["name"], error)


@kopf.on.startup()
def start_resync(memo: kopf.Memo, **_: Any) -> None:
    memo["stop"] = threading.Event()
    # kopf keeps its settings and event queue in context variables: carry them to the thread,
    # or posting an Event from the resync would fail.
    context = contextvars.copy_context()
    threading.Thread(
        target=context.run,
        args=(_resync_forever, memo, memo["stop"]),
        name="resync",
        daemon=True,
    ).start()


@kopf.on.cleanup()
def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    memo["stop"].set()


def _on_child(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    modeldeployments: kopf.Index,
    **_: Any,
) -> None:
    memo["dispatcher"].child_event(plain(body), deleted=type == "DELETED")
    owner = body["metadata"].get("labels", {}).get(OWNER_LABEL)
    if not owner:
        return
    for parent in modeldeployments.get((namespace, owner), []):
        uid = parent["metadata"].get("uid")
        refs = body["metadata"].get("ownerReferences", [])
        if any(ref.get("uid") == uid for ref in refs):
            try:
                _run(parent, memo)
            except kopf.TemporaryError as error:
                log.warning("child event: will retry on the next event or resync: %s", error)


for _group, _version, _plural in CHILD_KINDS:
    kopf.on.event(_group, _version, _plural, labels=MANAGED)(_on_child)  # type: ignore[arg-type]
