"""kopf handlers: thin. Each one finds the ModelDeployment concerned and calls ``reconcile``.

Settings live in one startup handler; the shared client and configuration in kopf's memo.
Children (Deployments, Services, HPAs, PDBs) are watched too, so an edited or deleted child is
restored and the status follows the pods. Beside kopf, three threads: the periodic resync, the
timed re-reconciles a reconcile asks for, and the watch that keeps the pod store current.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from modeldeploy.api import (
    ABORT_ANNOTATION,
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    PROMOTE_ANNOTATION,
    VERSION,
)
from modeldeploy.cache import PodWatch
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
PREFIX = "serving.modeldeploy.io"
LEGACY_DIFFBASE = f"{PREFIX}/last-handled-configuration"
REQUEUE_RETRY_SECONDS = 2.0
"""When the peering object cannot be read, due reconciles are looked at again this much later."""


class RememberedDiffBase(kopf.DiffBaseStorage):
    """kopf's "last handled" essence of each object, kept in memory instead of an annotation.

    The annotation costs one PATCH of every ModelDeployment after each create or spec change,
    only so that kopf can tell creation from update from resumption. Our one handler treats them
    alike (a level-based pass), so after a restart an object seen as new again is handled
    exactly as a resumed one would be.
    """

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, kopf.BodyEssence] = {}

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = essence.get("metadata", {}).get("annotations", {})
        annotations.pop(LEGACY_DIFFBASE, None)  # left by earlier versions
        # An object marked "kopf-managed" by earlier versions has every annotation under our
        # prefix left out by kopf; the user's rollout controls must still count as changes.
        given = body.get("metadata", {}).get("annotations", {})
        for key in (PROMOTE_ANNOTATION, ABORT_ANNOTATION):
            if key in given:
                essence.setdefault("metadata", {}).setdefault("annotations", {})[key] = given[key]
        self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._essences.get(str(body.metadata.uid))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._essences[str(body.metadata.uid)] = essence

    def forget(self, uid: str) -> None:
        self._essences.pop(uid, None)


class RememberedProgress(kopf.ProgressStorage):
    """kopf's per-handler progress, kept in memory: with annotations, kopf marks every object
    it handles (one PATCH each). Our handlers never fail or retry through kopf (the dispatcher
    retries), so a record lives only between a handler's start and its end."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], kopf.ProgressRecord] = {}
        self._annotations = kopf.AnnotationsProgressStorage(prefix=PREFIX)

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        return self._records.get((str(body.metadata.uid), key))

    def store(
        self,
        *,
        key: kopf.HandlerId,
        record: kopf.ProgressRecord,
        body: kopf.Body,
        patch: kopf.Patch,
    ) -> None:
        self._records[(str(body.metadata.uid), key)] = record

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records.pop((str(body.metadata.uid), key), None)

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        # Only for a delayed handler, which needs a write to be woken: never ours.
        self._annotations.touch(body=body, patch=patch, value=value)

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        # kopf drops every annotation under our prefix from the essence it diffs; the
        # promote/abort annotations are the user's and must count as a change.
        annotations = dict(essence.get("metadata", {}).get("annotations", {}))
        kept = {
            k: annotations[k] for k in (PROMOTE_ANNOTATION, ABORT_ANNOTATION) if k in annotations
        }
        essence = self._annotations.clear(essence=essence)
        if kept:
            essence.setdefault("metadata", {}).setdefault("annotations", {}).update(kept)
        return essence

    def forget(self, uid: str) -> None:
        for key in [k for k in list(self._records) if k[0] == uid]:
            self._records.pop(key, None)


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
    # No finalizers (children are garbage-collected), and kopf's bookkeeping in memory, not in
    # annotations: handling an object costs it no write.
    memo["diffbase"], memo["progress"] = RememberedDiffBase(), RememberedProgress()
    settings.persistence.diffbase_storage = memo["diffbase"]
    settings.persistence.progress_storage = memo["progress"]
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


_HANDLER_CONTEXT: dict[str, contextvars.Context] = {}
"""A copy of the context kopf runs handlers in: kopf posts Events through context variables
that threads started at startup may not have yet (the requeue and resync threads)."""


def _remember_context() -> None:
    if "kopf" not in _HANDLER_CONTEXT:
        _HANDLER_CONTEXT["kopf"] = contextvars.copy_context()


def _emitter(body: Any) -> Any:
    def emit(kind: str, reason: str, message: str) -> None:
        try:
            kopf.event(body, type=kind, reason=reason, message=message)
        except LookupError:
            context = _HANDLER_CONTEXT.get("kopf")
            if context is None:
                raise
            context.copy().run(kopf.event, body, type=kind, reason=reason, message=message)

    return emit


def _run(body: Any, memo: kopf.Memo) -> None:
    """Reconcile; a failure is logged and the dispatcher retries it after a backoff (not kopf,
    whose retries write progress annotations on the object)."""
    try:
        memo["dispatcher"].run(body)
    except Exception as error:
        meta = body["metadata"]
        where = {"namespace": meta.get("namespace"), "modeldeployment": meta.get("name")}
        if is_transient(error):
            log.warning("reconcile failed, will retry: %s", error, extra=where)
        else:
            log.exception("reconcile failed, will retry", extra=where)


@kopf.index(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
def modeldeployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Latest body of every ModelDeployment, so child events find their owner without a read."""
    return {(namespace, name): body}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def on_modeldeployment(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A ModelDeployment appeared, changed, or the operator (re)started."""
    _remember_context()
    _run(body, memo)


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_deleted(type: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Drop what we remember of a deleted ModelDeployment (its children go with it by GC)."""
    if type == "DELETED":
        memo["dispatcher"].forget(uid)
        memo["diffbase"].forget(uid)
        memo["progress"].forget(uid)


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
    desired), after listing the children again: the safety net for events a watch missed (a
    deletion during a reconnect). Not a kopf timer: those put a finalizer on every object."""
    config: OperatorSettings = memo["config"]
    kube: Kube = memo["kube"]
    dispatcher: Dispatcher = memo["dispatcher"]
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
                dispatcher.list_children(namespace)
            except Exception as error:  # the next round retries
                log.warning("resync: cannot list ModelDeployments or their children: %s", error)
                continue
            log.debug("resync pass", extra={"count": len(items)})
            for item in items:
                _run(item, memo)  # logs its own failure; the dispatcher retries it


def _requeue_forever(memo: kopf.Memo, stop: threading.Event) -> None:
    """Reconcile each ModelDeployment whose requested time has come (a rollout's next step, a
    retry), read fresh from the API, when this replica leads: on the dispatcher's due workers,
    side by side, so a rollout whose analysis waits on a slow Prometheus delays no other."""
    config: OperatorSettings = memo["config"]
    kube: Kube = memo["kube"]
    dispatcher: Dispatcher = memo["dispatcher"]
    while not stop.is_set():
        due = dispatcher.requeues.wait(stop)
        if not due:
            continue
        try:
            leads = _leads(kube, config)
        except Exception as error:
            log.warning("requeue: cannot read the peering object: %s", error)
            for uid, namespace, name in due:
                dispatcher.requeues.set(uid, namespace, name, REQUEUE_RETRY_SECONDS)
            continue
        if not leads:
            log.debug("requeue skipped: another replica leads", extra={"count": len(due)})
            continue
        dispatcher.start_due(due)


def _watch_caches(memo: kopf.Memo, scope: str | None, stop: threading.Event) -> None:
    """List the children once (then the store knows which are absent), then keep the pod
    store current. Runs in every replica, so a replica that takes over has warm caches."""
    dispatcher: Dispatcher = memo["dispatcher"]
    delay = 1.0
    while not stop.is_set():
        try:
            dispatcher.list_children(scope)
            break
        except Exception as error:  # until then, children are read one by one
            log.warning("cannot list the children yet: %s", error)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
    PodWatch(memo["kube"], dispatcher.pods, scope, on_problem=dispatcher.poke).run(stop)


def _start(name: str, target: Any, *args: Any) -> None:
    # kopf keeps its settings and event queue in context variables: carry them to the thread,
    # or posting an Event from it would fail.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(target, *args), name=name, daemon=True).start()


@kopf.on.startup()
def start_threads(memo: kopf.Memo, **_: Any) -> None:
    memo["stop"] = threading.Event()
    config: OperatorSettings = memo["config"]
    _start("resync", _resync_forever, memo, memo["stop"])
    _start("requeue", _requeue_forever, memo, memo["stop"])
    for scope in config.namespaces or (None,):
        _start(f"caches-{scope or 'all'}", _watch_caches, memo, scope, memo["stop"])


@kopf.on.cleanup()
def stop_threads(memo: kopf.Memo, **_: Any) -> None:
    memo["stop"].set()
    memo["dispatcher"].requeues.wake()
    memo["dispatcher"].stop()


def _on_child(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    memo: kopf.Memo,
    modeldeployments: kopf.Index,
    **_: Any,
) -> None:
    if not memo["dispatcher"].child_event(plain(body), deleted=type == "DELETED"):
        return  # a version already known (our own apply's response): nothing to act on
    owner = body["metadata"].get("labels", {}).get(OWNER_LABEL)
    if not owner:
        return
    for parent in modeldeployments.get((namespace, owner), []):
        uid = parent["metadata"].get("uid")
        refs = body["metadata"].get("ownerReferences", [])
        if any(ref.get("uid") == uid for ref in refs):
            _run(parent, memo)


for _group, _version, _plural in CHILD_KINDS:
    kopf.on.event(_group, _version, _plural, labels=MANAGED)(_on_child)  # type: ignore[arg-type]
