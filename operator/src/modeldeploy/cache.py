"""An informer's cache in miniature: what the watches last showed, so reads need no request.

Children (Deployments, Services, autoscalers, disruption budgets) come from kopf's watch
events, our own applies and a list at startup (then a child the store lacks is known absent);
serving pods from a watch of their own (:class:`PodWatch`), which updates the store only: the
Deployment's status events already trigger reconciles. :class:`CachingKube` answers the
reconciles' reads from these stores and falls through to the API when they cannot say.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client import ApiClient

from modeldeploy.builders.names import LABEL_DEPLOYMENT, MANAGED_BY
from modeldeploy.kube import Kube
from modeldeploy.metrics import count_pod_event
from modeldeploy.reconcilers.pods import pod_problem, trim_pod

log = logging.getLogger("modeldeploy.cache")

MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
CHILD_RESOURCES = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
)
CACHED_KINDS = frozenset(kind for _, kind in CHILD_RESOURCES)
WATCH_SECONDS = 300
TOMBSTONES = 10_000


def version_number(version: str | int | None) -> int:
    """A resourceVersion as a number, to tell the newer of two (0 when absent or not a number)."""
    try:
        return int(version or 0)
    except (TypeError, ValueError):
        return 0


def resource_version(obj: Mapping[str, Any]) -> int:
    """The object's ``metadata.resourceVersion`` as a number (see :func:`version_number`)."""
    return version_number(obj["metadata"].get("resourceVersion"))


class ChildStore:
    """The children as their watch events and our own applies last showed them.

    A child never seen falls through to a real read, unless its kind was listed in that
    namespace (:meth:`refresh`): from then on, the store knows every child we manage.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._gone: dict[tuple[str, str, str], int] = {}
        self._listed: set[tuple[str, str | None]] = set()

    def put(self, obj: Mapping[str, Any]) -> bool:
        """Remember ``obj`` unless a newer version (or its deletion) is known; True if new."""
        key = (str(obj["kind"]), str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"]))
        version = resource_version(obj)
        with self._guard:
            known = self._objects.get(key)
            if known is not None and version < resource_version(known):
                return False
            if version and version <= self._gone.get(key, 0):
                return False
            news = known is None or not version or version != resource_version(known)
            self._objects[key] = dict(obj)
            self._gone.pop(key, None)
            return news

    def drop(self, kind: str, namespace: str, name: str, version: int = 0) -> None:
        """Forget a deleted child (``version``: its last, so late events cannot revive it)."""
        with self._guard:
            self._objects.pop((kind, namespace, name), None)
            if version:
                if len(self._gone) >= TOMBSTONES:
                    self._gone.clear()  # only a racing list at startup needs them
                self._gone[(kind, namespace, name)] = version

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._guard:
            return self._objects.get((kind, namespace, name))

    def refresh(
        self, kind: str, namespace: str | None, items: list[dict[str, Any]], version: int
    ) -> None:
        """A list of every managed ``kind`` in ``namespace`` (None: all), taken at ``version``:
        keep what it shows, forget what it lacks (deleted while a watch was away) unless the
        store knows a later version; from now on, a child the store lacks is absent."""
        metas = [item["metadata"] for item in items]
        listed = {(kind, str(m["namespace"]), str(m["name"])) for m in metas}
        with self._guard:
            for key, known in list(self._objects.items()):
                in_scope = key[0] == kind and namespace in (None, key[1])
                if in_scope and key not in listed and resource_version(known) <= version:
                    del self._objects[key]
            self._listed.add((kind, namespace))
        for item in items:
            self.put(item)

    def known_absent(self, kind: str, namespace: str, name: str) -> bool:
        """True when a list and the watch since say this child does not exist."""
        with self._guard:
            listed = (kind, namespace) in self._listed or (kind, None) in self._listed
            return listed and (kind, namespace, name) not in self._objects

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        with self._guard:
            return key in self._objects


def equality_selector(selector: str | None) -> dict[str, str] | None:
    """``a=b,c=d`` as a dict; None for any other form (set-based, ``!=``, bare keys)."""
    if not selector:
        return None
    wanted: dict[str, str] = {}
    for term in selector.split(","):
        key, sep, value = term.replace("==", "=").partition("=")
        if not sep or "!" in key or "=" in value or " " in term.strip():
            return None
        wanted[key.strip()] = value.strip()
    return wanted


class PodStore:
    """Serving pods (labelled managed-by modeldeploy) as a watch shows them, trimmed."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}
        self._synced: set[str | None] = set()

    def replace(self, scope: str | None, pods: list[dict[str, Any]]) -> None:
        """A fresh list of ``scope`` (a namespace, or None for all): it is now in sync."""
        fresh: dict[str, dict[str, dict[str, Any]]] = {}
        for pod in pods:
            trimmed = trim_pod(pod)
            meta = trimmed["metadata"]
            fresh.setdefault(str(meta.get("namespace")), {})[str(meta.get("name"))] = trimmed
        with self._guard:
            if scope is None:
                self._pods = fresh
            else:
                self._pods[scope] = fresh.get(scope, {})
            self._synced.add(scope)

    def update(self, kind: str, pod: Mapping[str, Any]) -> bool:
        """Apply one watch event (ADDED, MODIFIED or DELETED). True when the pod's trouble
        changed: it turned unschedulable, its init container failed, it was OOMKilled, or it
        recovered (see :func:`~modeldeploy.reconcilers.pods.pod_problem`)."""
        trimmed = trim_pod(pod)
        meta = trimmed["metadata"]
        with self._guard:
            pods = self._pods.setdefault(str(meta.get("namespace")), {})
            if kind == "DELETED":
                pods.pop(str(meta.get("name")), None)
                return False
            before = pods.get(str(meta.get("name")))
            pods[str(meta.get("name"))] = trimmed
            return pod_problem(before) != pod_problem(trimmed)

    def unsync(self, scope: str | None) -> None:
        """The watch of ``scope`` broke: answer nothing from it until it lists again."""
        with self._guard:
            self._synced.discard(scope)

    def select(self, namespace: str, selector: str | None) -> list[dict[str, Any]] | None:
        """Pods matching an equality ``selector``; None when the store cannot say."""
        wanted = equality_selector(selector)
        with self._guard:
            if wanted is None or not ({namespace, None} & self._synced):
                return None
            return [
                pod
                for pod in self._pods.get(namespace, {}).values()
                if all(pod["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
            ]

    def __len__(self) -> int:
        with self._guard:
            return sum(len(p) for p in self._pods.values())


class CachingKube(Kube):
    """``Kube`` whose reads of children and serving pods come from the stores."""

    def __init__(self, kube: Kube, store: ChildStore, pods: PodStore) -> None:
        super().__init__(kube.client, kube.field_manager, kube.timeout)
        self.store = store
        self.pods = pods

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        cacheable = namespace is not None and kind in CACHED_KINDS
        if cacheable:
            cached = self.store.get(kind, namespace or "", name)
            if cached is not None:
                return cached
            if self.store.known_absent(kind, namespace or "", name):
                return None
        found = super().get(api_version, kind, namespace, name)
        if cacheable:
            if found is None:
                self.store.drop(kind, namespace or "", name)
            else:
                self.store.put(found)
        return found

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        if (api_version, kind) == ("v1", "Pod") and namespace:
            pods = self.pods.select(namespace, label_selector)
            if pods is not None:
                return pods
        return super().list(api_version, kind, namespace, label_selector)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        applied = super().apply(obj)
        if applied.get("kind") in CACHED_KINDS:
            self.store.put(applied)
        return applied

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete, then forget the child (also when it was already gone). A DELETE that fails
        leaves it in the store: the retry of the reconcile still knows it exists and deletes it
        again, instead of taking it for absent until the next resync lists it."""
        deleted = super().delete(api_version, kind, namespace, name)
        self.store.drop(kind, namespace, name)
        return deleted


class PodWatch:
    """Keeps :class:`PodStore` in step with the serving pods of one namespace (None: all):
    list, then watch from the list's version; list again when the watch expires or breaks."""

    def __init__(
        self,
        kube: Kube,
        store: PodStore,
        namespace: str | None,
        on_problem: Callable[[str, str], None] | None = None,
    ) -> None:
        # A client of its own: the long-lived watch must not hold a pooled connection of the
        # reconciles' client.
        self.kube = Kube(ApiClient(kube.client.configuration), kube.field_manager, kube.timeout)
        self.store, self.namespace = store, namespace
        self.on_problem = on_problem
        """Called with (namespace, ModelDeployment name) when a serving pod's trouble changes
        (unschedulable, a failed fetch, OOMKilled, or recovered): the status must say so."""

    def run(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                version: str | None = self._list()
                backoff = 1.0
                while not stop.is_set() and version is not None:
                    version = self._watch(version, stop)
            except Exception as error:
                self.store.unsync(self.namespace)
                log.warning("pod watch broke; listing again: %s", error)
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _list(self) -> str:
        items, version = self.kube.list_with_version("v1", "Pod", self.namespace, MANAGED_SELECTOR)
        self.store.replace(self.namespace, items)
        return version

    def _watch(self, version: str, stop: threading.Event) -> str | None:
        """Apply events until the server ends the watch: the version to resume from, or None
        when it expired (a new list is needed)."""
        events = self.kube.watch(
            "v1",
            "Pod",
            self.namespace,
            resource_version=version,
            label_selector=MANAGED_SELECTOR,
            timeout_seconds=WATCH_SECONDS,
        )
        for event in events:
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise RuntimeError(f"pod watch error: {obj.get('message', obj)}")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                changed = self.store.update(str(kind), obj)
                count_pod_event()
                owner = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_DEPLOYMENT)
                if changed and owner and self.on_problem is not None:
                    self.on_problem(str(obj["metadata"].get("namespace")), str(owner))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if stop.is_set():
                break
        return version
