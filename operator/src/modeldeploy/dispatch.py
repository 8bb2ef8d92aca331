"""One reconcile at a time per ModelDeployment; events that arrive meanwhile coalesce.

A burst of child events (a Deployment's status moving while its pods start) would otherwise
queue one full reconcile each. Here the first event runs a reconcile; any that arrive while it
runs mark the object dirty, and the running reconcile makes one more pass with the newest body.

Reads come from stores fed by watches, as an informer's cache would serve them: children (from
kopf's events, our own applies and one list at startup) and serving pods (from a watch of their
own, which updates the store only: the Deployment's status events already trigger reconciles).
A reconcile may ask to run again after a while (:attr:`Outcome.requeue_after`); a failed one is
retried with backoff. :class:`Requeues` keeps those due times.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from modeldeploy.api import API_VERSION, KIND
from modeldeploy.builders.names import MANAGED_BY
from modeldeploy.kube import Kube, resource_path
from modeldeploy.metrics import count_children, count_pod_event, count_requeue, timed_reconcile
from modeldeploy.reconcilers import EventSink, reconcile
from modeldeploy.settings import OperatorSettings

log = logging.getLogger("modeldeploy.dispatch")

MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
CHILD_RESOURCES = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
)
CACHED_KINDS = frozenset(kind for _, kind in CHILD_RESOURCES)
RETRY_BACKOFF = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
"""Seconds before retrying a failed reconcile, by the number of failures in a row."""
WATCH_SECONDS = 300
TOMBSTONES = 10_000


def _version(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


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
        version = _version(obj)
        with self._guard:
            known = self._objects.get(key)
            if known is not None and version < _version(known):
                return False
            if version and version <= self._gone.get(key, 0):
                return False
            news = known is None or not version or version != _version(known)
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
                if in_scope and key not in listed and _version(known) <= version:
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


def trim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """What status needs of a pod: its name, labels, version, phase and conditions."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return {
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "labels", "resourceVersion") if k in meta
        },
        "status": {k: status[k] for k in ("phase", "conditions") if k in status},
    }


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

    def update(self, kind: str, pod: Mapping[str, Any]) -> None:
        """Apply one watch event (ADDED, MODIFIED or DELETED)."""
        trimmed = trim_pod(pod)
        meta = trimmed["metadata"]
        with self._guard:
            pods = self._pods.setdefault(str(meta.get("namespace")), {})
            if kind == "DELETED":
                pods.pop(str(meta.get("name")), None)
            else:
                pods[str(meta.get("name"))] = trimmed

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
        self.store.drop(kind, namespace, name)
        return super().delete(api_version, kind, namespace, name)


class Requeues:
    """When each ModelDeployment must be reconciled again although no event came.

    One due time per uid (the latest outcome's request replaces the previous one); a waiter
    sleeps until the earliest, and a new earlier time wakes it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._due: dict[str, tuple[float, str, str]] = {}
        self._changed = threading.Condition()

    def set(self, uid: str, namespace: str, name: str, after: float | None) -> None:
        """Reconcile ``uid`` again in ``after`` seconds; None: no need."""
        with self._changed:
            if after is None:
                self._due.pop(uid, None)
                return
            self._due[uid] = (self.clock() + max(after, 0.0), namespace, name)
            self._changed.notify_all()

    def drop(self, uid: str) -> None:
        self.set(uid, "", "", None)

    def due_in(self, uid: str) -> float | None:
        """Seconds until ``uid`` is due (negative when overdue); None when not scheduled."""
        with self._changed:
            entry = self._due.get(uid)
            return None if entry is None else entry[0] - self.clock()

    def pop_due(self) -> list[tuple[str, str, str]]:
        """(uid, namespace, name) of every entry whose time has come, earliest first."""
        with self._changed:
            return self._pop_due()

    def _pop_due(self) -> list[tuple[str, str, str]]:
        now = self.clock()
        due = sorted((when, uid) for uid, (when, _, _) in self._due.items() if when <= now)
        return [(uid, *self._due.pop(uid)[1:]) for _, uid in due]

    def wait(self, stop: threading.Event, longest: float = 60) -> list[tuple[str, str, str]]:
        """Block until something is due (returned) or ``stop`` is set (empty list)."""
        with self._changed:
            while not stop.is_set():
                due = self._pop_due()
                if due:
                    return due
                earliest = min((when for when, _, _ in self._due.values()), default=None)
                pause = longest if earliest is None else earliest - self.clock()
                self._changed.wait(min(max(pause, 0.0), longest))
            return []

    def wake(self) -> None:
        """Let a waiter look again (e.g. after ``stop`` was set)."""
        with self._changed:
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return len(self._due)


class Dispatcher:
    """Runs :func:`reconcile` for the operator's handlers, the resync, child events and the
    requeue times."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorSettings,
        emitter: Callable[[Mapping[str, Any]], EventSink],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = ChildStore()
        self.pods = PodStore()
        self.kube = CachingKube(kube, self.store, self.pods)
        self.config = config
        self.emitter = emitter
        self.requeues = Requeues(clock)
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._pending: dict[str, Mapping[str, Any]] = {}
        self._gone: set[str] = set()
        self._failures: dict[str, int] = {}
        self._statuses: dict[str, dict[str, Any]] = {}
        self._names: dict[str, tuple[str, str]] = {}

    def run(self, body: Mapping[str, Any]) -> None:
        """Reconcile ``body`` now, or leave it to the reconcile already running for it (which
        then makes one more pass with the newest body it was given). A failure is retried after
        a backoff (see :attr:`requeues`) and re-raised."""
        uid = str(body["metadata"]["uid"])
        with self._guard:
            if uid in self._running:
                newest = self._pending.get(uid, body)
                self._pending[uid] = body if _version(body) >= _version(newest) else newest
                return
            self._running.add(uid)
            self._gone.discard(uid)
        namespace, name = str(body["metadata"]["namespace"]), str(body["metadata"]["name"])
        try:
            while True:
                with timed_reconcile():
                    outcome = reconcile(
                        body,
                        self.kube,
                        self.config,
                        self.emitter(body),
                        known_status=self._statuses.get(uid),
                        may_exist=self.may_exist,
                    )
                count_children(outcome.applied, outcome.deleted)
                with self._guard:
                    if uid in self._gone:  # deleted meanwhile: remember nothing
                        self._running.discard(uid)
                        self._pending.pop(uid, None)
                        self._gone.discard(uid)
                        return
                    self._statuses[uid] = outcome.status
                    self._names[uid] = (namespace, name)
                    self._failures.pop(uid, None)
                    self.requeues.set(uid, namespace, name, outcome.requeue_after)
                    pending = self._pending.pop(uid, None)
                    if pending is None:
                        self._running.discard(uid)
                        return
                if _version(pending) >= _version(body):
                    body = pending
        except BaseException:
            self._retry_later(uid, namespace, name)
            with self._guard:
                self._running.discard(uid)
                self._pending.pop(uid, None)
                self._gone.discard(uid)
            raise

    def _retry_later(self, uid: str, namespace: str, name: str) -> None:
        with self._guard:
            if uid in self._gone:
                return
            failures = self._failures.get(uid, 0)
            self._failures[uid] = failures + 1
        delay = RETRY_BACKOFF[min(failures, len(RETRY_BACKOFF) - 1)]
        self.requeues.set(uid, namespace, name, delay)

    def run_due(self, uid: str, namespace: str, name: str) -> None:
        """Reconcile a ModelDeployment whose requeue time has come, read fresh from the API."""
        count_requeue()
        try:
            body = self.kube.get(API_VERSION, KIND, namespace, name)
        except Exception:
            self._retry_later(uid, namespace, name)
            raise
        if body is None or body["metadata"].get("uid") != uid:
            self.forget(uid)
            return
        self.run(body)

    def child_event(self, body: Mapping[str, Any], *, deleted: bool) -> bool:
        """Remember the child as its watch event shows it (or forget it when deleted).

        False when the event tells nothing new: the store already holds this version (our own
        apply's response, or a re-list), so no reconcile is needed for it."""
        meta = body["metadata"]
        if deleted:
            kind, namespace, name = str(body["kind"]), str(meta["namespace"]), str(meta["name"])
            self.store.drop(kind, namespace, name, _version(body))
            return True
        return self.store.put(body)

    def may_exist(self, kind: str, namespace: str, name: str) -> bool:
        """False only when no watch event has shown this child: no need to read it to know."""
        return (kind, namespace, name) in self.store

    def forget(self, uid: str) -> None:
        """Drop what is remembered of a deleted ModelDeployment."""
        with self._guard:
            self._statuses.pop(uid, None)
            self._names.pop(uid, None)
            self._pending.pop(uid, None)
            self._failures.pop(uid, None)
            if uid in self._running:
                self._gone.add(uid)
        self.requeues.drop(uid)

    def statuses(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The status last written for each ModelDeployment, by (namespace, name)."""
        with self._guard:
            return {self._names[u]: s for u, s in self._statuses.items() if u in self._names}

    def list_children(self, namespace: str | None) -> None:
        """List every managed child kind (one request each) into the store: at start, so a
        child the store lacks is known absent; in each resync, to catch events a watch missed
        (far cheaper than reading each child of each ModelDeployment)."""
        for api_version, kind in CHILD_RESOURCES:
            items, version = list_at(self.kube, api_version, kind, namespace, MANAGED_SELECTOR)
            typed = [{**item, "apiVersion": api_version, "kind": kind} for item in items]
            self.store.refresh(kind, namespace, typed, version)


def list_at(
    kube: Kube, api_version: str, kind: str, namespace: str | None, selector: str
) -> tuple[list[dict[str, Any]], int]:
    """A list and the resource version it was taken at."""
    path = resource_path(api_version, kind, namespace)
    result = kube._call("GET", path, query=[("labelSelector", selector)])
    return list(result.get("items", [])), _version(result)


class PodWatch:
    """Keeps :class:`PodStore` in step with the serving pods of one namespace (None: all):
    list, then watch from the list's version; list again when the watch expires or breaks."""

    def __init__(self, kube: Kube, store: PodStore, namespace: str | None) -> None:
        # A client of its own: the long-lived watch must not hold a pooled connection of the
        # reconciles' client.
        self.kube = Kube(ApiClient(kube.client.configuration), kube.field_manager, kube.timeout)
        self.store, self.namespace = store, namespace

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
        items, version = list_at(self.kube, "v1", "Pod", self.namespace, MANAGED_SELECTOR)
        self.store.replace(self.namespace, items)
        return str(version)

    def _watch(self, version: str, stop: threading.Event) -> str | None:
        """Apply events until the server ends the watch: the version to resume from, or None
        when it expired (a new list is needed)."""
        for event in self._events(version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise RuntimeError(f"pod watch error: {obj.get('message', obj)}")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.store.update(str(kind), obj)
                count_pod_event()
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if stop.is_set():
                break
        return version

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        query = [
            ("labelSelector", MANAGED_SELECTOR),
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", WATCH_SECONDS),
        ]
        client = self.kube.client
        method, url, headers, _, _ = client.param_serialize(
            method="GET",
            resource_path=resource_path("v1", "Pod", self.namespace),
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = client.call_api(
            method, url, header_params=headers, _request_timeout=(10, WATCH_SECONDS + 30)
        )
        if not 200 <= response.status < 300:
            response.read()
            raise ApiException(http_resp=response)
        raw = response.response
        try:
            buffer = b""
            for chunk in raw.stream(amt=None, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()
