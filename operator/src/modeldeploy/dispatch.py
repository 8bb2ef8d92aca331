"""One reconcile at a time per ModelDeployment; events that arrive meanwhile coalesce.

A burst of child events (a Deployment's status moving while its pods start) would otherwise
queue one full reconcile each. Here the first event runs a reconcile; any that arrive while it
runs mark the object dirty, and the running reconcile makes one more pass with a fresh body.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from modeldeploy.api import API_VERSION, KIND
from modeldeploy.kube import Kube
from modeldeploy.metrics import count_children, timed_reconcile
from modeldeploy.reconcilers import EventSink, reconcile
from modeldeploy.settings import OperatorSettings


def _version(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


class ChildStore:
    """The children as their watch events and our own applies last showed them.

    An informer's cache in miniature: reconciles read children from here instead of the API
    server. A child never seen falls through to a real read.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}

    def put(self, obj: Mapping[str, Any]) -> None:
        key = (str(obj["kind"]), str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"]))
        with self._guard:
            known = self._objects.get(key)
            if known is None or _version(obj) >= _version(known):
                self._objects[key] = dict(obj)

    def drop(self, kind: str, namespace: str, name: str) -> None:
        with self._guard:
            self._objects.pop((kind, namespace, name), None)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._guard:
            return self._objects.get((kind, namespace, name))

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        with self._guard:
            return key in self._objects


class CachingKube(Kube):
    """``Kube`` whose reads of children come from a :class:`ChildStore` when it has them."""

    def __init__(self, kube: Kube, store: ChildStore, *, read_through: bool = False) -> None:
        super().__init__(kube.client, kube.field_manager, kube.timeout)
        self.store = store
        self.read_through = read_through
        """Always read the API server (and refresh the store): the resync's safety net for
        events a watch may have missed, such as a deletion during a reconnect."""

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        cacheable = namespace is not None and kind in CACHED_KINDS
        if cacheable and not self.read_through:
            cached = self.store.get(kind, namespace or "", name)
            if cached is not None:
                return cached
        found = super().get(api_version, kind, namespace, name)
        if cacheable:
            if found is None:
                self.store.drop(kind, namespace or "", name)
            else:
                self.store.put(found)
        return found

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        applied = super().apply(obj)
        if applied.get("kind") in CACHED_KINDS:
            self.store.put(applied)
        return applied

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.store.drop(kind, namespace, name)
        return super().delete(api_version, kind, namespace, name)


CACHED_KINDS = frozenset(
    {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
)


class Dispatcher:
    """Runs :func:`reconcile` for the operator's handlers, the resync and child events."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorSettings,
        emitter: Callable[[Mapping[str, Any]], EventSink],
    ) -> None:
        self.store = ChildStore()
        self.kube = CachingKube(kube, self.store)
        self.fresh_kube = CachingKube(kube, self.store, read_through=True)
        self.config = config
        self.emitter = emitter
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._statuses: dict[str, dict[str, Any]] = {}
        self._names: dict[str, tuple[str, str]] = {}

    def run(self, body: Mapping[str, Any], *, fresh: bool = False) -> None:
        """Reconcile ``body`` now, or leave it to the reconcile already running for it.

        ``fresh`` reads every child from the API server instead of the store."""
        meta = body["metadata"]
        uid = str(meta["uid"])
        with self._guard:
            if uid in self._running:
                self._dirty.add(uid)
                return
            self._running.add(uid)
        try:
            while True:
                with timed_reconcile():
                    outcome = reconcile(
                        body,
                        self.fresh_kube if fresh else self.kube,
                        self.config,
                        self.emitter(body),
                        known_status=self._statuses.get(uid),
                        may_exist=None if fresh else self.may_exist,
                    )
                count_children(outcome.applied, outcome.deleted)
                self._statuses[uid] = outcome.status
                self._names[uid] = (str(meta["namespace"]), str(meta["name"]))
                with self._guard:
                    if uid not in self._dirty:
                        self._running.discard(uid)
                        return
                    self._dirty.discard(uid)
                latest = Kube.get(self.kube, API_VERSION, KIND, meta["namespace"], meta["name"])
                if latest is None or latest["metadata"]["uid"] != uid:
                    with self._guard:
                        self._running.discard(uid)
                    return
                body = latest
        except BaseException:
            with self._guard:
                self._running.discard(uid)
                self._dirty.discard(uid)
            raise

    def child_event(self, body: Mapping[str, Any], *, deleted: bool) -> None:
        """Remember the child as its watch event shows it (or forget it when deleted)."""
        meta = body["metadata"]
        if deleted:
            self.store.drop(str(body["kind"]), str(meta["namespace"]), str(meta["name"]))
        else:
            self.store.put(body)

    def may_exist(self, kind: str, namespace: str, name: str) -> bool:
        """False only when no watch event has shown this child: no need to read it to know."""
        return (kind, namespace, name) in self.store

    def forget(self, uid: str) -> None:
        """Drop what is remembered of a deleted ModelDeployment."""
        with self._guard:
            self._statuses.pop(uid, None)
            self._names.pop(uid, None)
            self._dirty.discard(uid)

    def statuses(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The status last written for each ModelDeployment, by (namespace, name)."""
        with self._guard:
            return {self._names[u]: s for u, s in self._statuses.items() if u in self._names}
