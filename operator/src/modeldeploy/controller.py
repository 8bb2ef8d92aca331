"""The operator's control loop: one place that decides when a ModelDeployment is reconciled.

kopf owns the watches and calls :mod:`modeldeploy.handlers`, which hand every event here:

- a ModelDeployment event reconciles it at once, unless only its status changed (our own
  write coming back);
- a child or serving-pod event updates the watch-fed :class:`~modeldeploy.cache.Store`; a
  child that changed reconciles its owner, a pod whose trouble changed reconciles it soon;
- a reconcile may ask to run again later (a rollout's next step, a retry after a failure):
  :class:`Requeues` keeps those due times and the *requeue* thread hands them to a few due
  workers, so one analysis waiting on a slow Prometheus delays no other rollout;
- the *resync* thread lists every ModelDeployment, child and serving pod now and then and
  reconciles them all: the safety net for events a watch missed.

One reconcile at a time per ModelDeployment: events that arrive while it runs coalesce, and it
makes one more pass with the newest body. Only the replica that holds the leader-election Lease
(:mod:`modeldeploy.leadership`) reconciles; the others keep their caches warm. A replica that
becomes leader forgets every status it wrote before (another replica may have moved the
rollouts on since) and reconciles everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modeldeploy.api import API_VERSION, KIND, ModelDeploymentStatus
from modeldeploy.builders.names import LABEL_DEPLOYMENT
from modeldeploy.cache import CachingKube, Store, resource_version, version_number
from modeldeploy.config import OperatorConfig
from modeldeploy.kube import Kube, NotLeading, is_transient
from modeldeploy.metrics import count_children, count_pod_event, count_requeue, timed_reconcile
from modeldeploy.reconcilers import EventSink, reconcile
from modeldeploy.reconcilers.pods import pod_problem, trim_pod
from modeldeploy.resources import CACHED, MANAGED_SELECTOR, POD

log = logging.getLogger("modeldeploy.controller")

RETRY_BACKOFF = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
"""Seconds before retrying a failed reconcile, by the number of failures in a row."""


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

    def uids(self) -> list[str]:
        with self._changed:
            return list(self._due)

    def __len__(self) -> int:
        with self._changed:
            return len(self._due)


class Controller:
    """Runs :func:`reconcile` for the events, the due times and the resync."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorConfig,
        events: Callable[[Mapping[str, Any]], EventSink],
        leads: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = Store()
        # Every write of a reconcile asks whether this replica still leads, just before it is
        # sent: the check at the start of a reconcile is not enough when the process was
        # frozen in the middle of one.
        self.kube = CachingKube(kube, self.store, fence=lambda: self.leads())
        self.config = config
        self.events = events
        self.leads = leads
        self.requeues = Requeues(clock)
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._pending: dict[str, Mapping[str, Any]] = {}
        self._gone: set[str] = set()
        self._failures: dict[str, int] = {}
        self._written: dict[str, ModelDeploymentStatus] = {}
        self._latest: dict[str, Mapping[str, Any]] = {}
        self._taking_over = False
        self._deferred: dict[str, tuple[str, str]] = {}
        self._names: dict[str, tuple[str, str]] = {}
        self._due_workers = ThreadPoolExecutor(
            max(1, config.due_workers), thread_name_prefix="due-reconcile"
        )
        self._due_waiting: set[str] = set()
        self._stop = threading.Event()
        self._resync_now = threading.Event()

    # Events, from kopf's watches (see modeldeploy.handlers).

    def modeldeployment_event(self, body: Mapping[str, Any], *, deleted: bool) -> None:
        """A ModelDeployment was listed, added, changed or deleted."""
        uid = str(body["metadata"]["uid"])
        if deleted:
            self.forget(uid)
            return
        if not self.leads():
            return
        with self._guard:
            last = self._latest.get(uid)
            unchanged = last is not None and _what_we_act_on(last) == _what_we_act_on(body)
        if unchanged:  # only the status moved: our own write, seen again
            return
        self.reconcile_logged(body)

    def child_event(self, body: Mapping[str, Any], *, deleted: bool) -> bool:
        """Remember the child as its watch event shows it (or forget it when deleted).

        False when the event tells nothing new: the store already holds this version (our own
        apply's response, or a re-list), so no reconcile is needed for it."""
        meta = body["metadata"]
        if deleted:
            kind, namespace, name = str(body["kind"]), str(meta["namespace"]), str(meta["name"])
            self.store.drop(kind, namespace, name, resource_version(body))
            return True
        return self.store.put(body)

    def pod_event(self, body: Mapping[str, Any], *, deleted: bool) -> None:
        """Keep the serving pod in the store. Its Deployment's status events reconcile the
        owner; a change in the pod's trouble (unschedulable, a failed fetch, OOMKilled, or
        recovered) has no event of its own there, so it reconciles the owner soon."""
        count_pod_event()
        pod = {**trim_pod(body), "kind": POD.kind}
        meta = pod["metadata"]
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        before = self.store.get(POD.kind, namespace, name)
        if deleted:
            self.store.drop(POD.kind, namespace, name, resource_version(pod))
            return
        if not self.store.put(pod):
            return
        owner = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
        if owner and pod_problem(before) != pod_problem(pod):
            self.reconcile_soon(namespace, str(owner))

    # Reconciles.

    def reconcile(self, body: Mapping[str, Any], *, fresh: bool = False) -> None:
        """Reconcile ``body`` now, or leave it to the reconcile already running for it (which
        then makes one more pass with the newest body it was given). A failure is retried after
        a backoff (see :attr:`requeues`) and re-raised. Nothing happens unless this replica
        leads.

        ``fresh``: the body was just read from the API. Right after this replica became the
        leader, only such bodies are reconciled: its watches may lag behind what the previous
        leader wrote (a replica that was frozen or cut off), and a reconcile of a stale body
        would undo that. The pass over everything that follows the election reads them all.
        A body older than one already reconciled is replaced by that one."""
        if not self.leads():
            return
        uid = str(body["metadata"]["uid"])
        with self._guard:
            if self._taking_over and not fresh:
                # Read fresh once the pass is over: the event may be newer than its list.
                meta = body["metadata"]
                self._deferred[uid] = (str(meta["namespace"]), str(meta["name"]))
                return
            latest = self._latest.get(uid)
            if latest is not None and resource_version(latest) > resource_version(body):
                body = latest
            if uid in self._running:
                newest = self._pending.get(uid, body)
                self._pending[uid] = (
                    body if resource_version(body) >= resource_version(newest) else newest
                )
                return
            self._running.add(uid)
            self._gone.discard(uid)
        namespace, name = str(body["metadata"]["namespace"]), str(body["metadata"]["name"])
        try:
            while True:
                if not self.leads():
                    raise NotLeading("not one more pass: this replica no longer leads")
                with self._guard:
                    written = self._written.get(uid)
                with timed_reconcile():
                    outcome = reconcile(
                        body,
                        self.kube,
                        self.config,
                        self.events(body),
                        known_status=written,
                        may_exist=self.may_exist,
                    )
                count_children(outcome.applied, outcome.deleted)
                with self._guard:
                    if uid in self._gone:  # deleted meanwhile: remember nothing
                        self._running.discard(uid)
                        self._pending.pop(uid, None)
                        self._gone.discard(uid)
                        return
                    self._written[uid] = outcome.status
                    self._latest[uid] = body
                    self._names[uid] = (namespace, name)
                    self._failures.pop(uid, None)
                    self.requeues.set(uid, namespace, name, outcome.requeue_after)
                    pending = self._pending.pop(uid, None)
                    if pending is None:
                        self._running.discard(uid)
                        return
                if resource_version(pending) >= resource_version(body):
                    body = pending
        except BaseException as error:
            stopped = isinstance(error, NotLeading)  # the leader reconciles it now: no retry
            if not stopped:
                self._retry_later(uid, namespace, name)
            with self._guard:
                self._running.discard(uid)
                self._pending.pop(uid, None)
                self._gone.discard(uid)
            if not stopped:
                raise
            log.info(
                "reconcile stopped: %s",
                error,
                extra={"namespace": namespace, "modeldeployment": name},
            )

    def reconcile_logged(self, body: Mapping[str, Any], *, fresh: bool = False) -> None:
        """:meth:`reconcile`, with a failure logged instead of raised (it is retried)."""
        try:
            self.reconcile(body, fresh=fresh)
        except Exception as error:
            meta = body["metadata"]
            where = {"namespace": meta.get("namespace"), "modeldeployment": meta.get("name")}
            if is_transient(error):
                log.warning("reconcile failed, will retry: %s", error, extra=where)
            else:
                log.exception("reconcile failed, will retry", extra=where)

    def _retry_later(self, uid: str, namespace: str, name: str) -> None:
        with self._guard:
            if uid in self._gone:
                return
            failures = self._failures.get(uid, 0)
            self._failures[uid] = failures + 1
        delay = RETRY_BACKOFF[min(failures, len(RETRY_BACKOFF) - 1)]
        self.requeues.set(uid, namespace, name, delay)

    def reconcile_due(self, uid: str, namespace: str, name: str) -> None:
        """Reconcile a ModelDeployment whose requeue time has come, read fresh from the API."""
        if not self.leads():
            return
        count_requeue()
        try:
            body = self.kube.get(API_VERSION, KIND, namespace, name)
        except Exception:
            self._retry_later(uid, namespace, name)
            raise
        if body is None or body["metadata"].get("uid") != uid:
            self.forget(uid)
            return
        self.reconcile(body, fresh=True)

    def start_due(self, due: Iterable[tuple[str, str, str]]) -> None:
        """Hand due ModelDeployments (uid, namespace, name) to the due workers and return at
        once: at most ``config.due_workers`` run at a time, the others wait their turn. One
        already waiting is not queued twice (its run reads it fresh anyway). A failure is
        logged; :meth:`reconcile_due` has scheduled its retry."""
        for uid, namespace, name in due:
            with self._guard:
                if uid in self._due_waiting:
                    continue
                self._due_waiting.add(uid)
            try:
                self._due_workers.submit(self._reconcile_due_logged, uid, namespace, name)
            except RuntimeError:  # shut down: the operator is stopping
                return

    def _reconcile_due_logged(self, uid: str, namespace: str, name: str) -> None:
        with self._guard:
            self._due_waiting.discard(uid)
        try:
            self.reconcile_due(uid, namespace, name)
        except Exception as error:
            where = {"namespace": namespace, "modeldeployment": name}
            if is_transient(error):
                log.warning("timed reconcile failed, will retry: %s", error, extra=where)
            else:
                log.exception("timed reconcile failed, will retry", extra=where)

    def may_exist(self, kind: str, namespace: str, name: str) -> bool:
        """False only when no watch event has shown this child: no need to read it to know."""
        return (kind, namespace, name) in self.store

    def reconcile_soon(self, namespace: str, name: str) -> None:
        """Reconcile a known ModelDeployment soon (on a due worker, which reads it fresh):
        something its status reports changed without an event of its own."""
        with self._guard:
            uid = next((u for u, known in self._names.items() if known == (namespace, name)), None)
        if uid is not None:
            self.requeues.set(uid, namespace, name, 0)

    def forget(self, uid: str) -> None:
        """Drop what is remembered of a deleted ModelDeployment."""
        with self._guard:
            self._written.pop(uid, None)
            self._latest.pop(uid, None)
            self._names.pop(uid, None)
            self._pending.pop(uid, None)
            self._failures.pop(uid, None)
            if uid in self._running:
                self._gone.add(uid)
        self.requeues.drop(uid)

    def statuses(self) -> dict[tuple[str, str], ModelDeploymentStatus]:
        """The status last written for each ModelDeployment, by (namespace, name)."""
        with self._guard:
            return {self._names[u]: s for u, s in self._written.items() if u in self._names}

    # Leadership.

    def started_leading(self) -> None:
        """This replica now leads: forget the statuses it wrote when it last led (another
        replica may have moved every rollout on since, so the API's statuses are the truth),
        then reconcile everything."""
        with self._guard:
            self._written.clear()
            self._latest.clear()
            self._failures.clear()
            self._taking_over = True
        self._resync_now.set()

    def stopped_leading(self) -> None:
        """Another replica acts now: drop the due times (the next leader starts afresh)."""
        with self._guard:
            self._due_waiting.clear()
        for uid in list(self.requeues.uids()):
            self.requeues.drop(uid)

    # The resync and the requeue threads.

    def list_cached(self, namespace: str | None) -> None:
        """List every child kind and the serving pods (one request each) into the store: at
        start, so an object the store lacks is known absent; in each resync, to catch events a
        watch missed (far cheaper than reading each child of each ModelDeployment)."""
        for resource in CACHED:
            items, version = self.kube.list_with_version(
                resource.api_version, resource.kind, namespace, MANAGED_SELECTOR
            )
            kind = {"apiVersion": resource.api_version, "kind": resource.kind}
            typed = [{**item, **kind} for item in items]
            if resource is POD:
                typed = [{**trim_pod(item), "kind": POD.kind} for item in typed]
            self.store.refresh(resource.kind, namespace, typed, version_number(version))

    def resync(self) -> bool:
        """List the children and pods again, then reconcile every ModelDeployment (a pass
        writes nothing when all is as desired). False when a list failed."""
        listed = True
        for namespace in self.config.namespaces or (None,):
            try:
                self.list_cached(namespace)
                items = self.kube.list(API_VERSION, KIND, namespace)
            except Exception as error:  # the next round retries
                log.warning("resync: cannot list ModelDeployments or their children: %s", error)
                listed = False
                continue
            for item in items:
                self.reconcile_logged(item, fresh=True)
            log.debug("resync pass", extra={"count": len(items)})
        return listed

    def _take_over(self) -> None:
        """The first pass of a new leader; until it is done, only fresh bodies are reconciled
        (see :meth:`reconcile`). The ModelDeployments whose events came meanwhile are read
        again after it."""
        while not self._stop.is_set() and self.leads() and not self.resync():
            self._stop.wait(RETRY_BACKOFF[0])
        with self._guard:
            self._taking_over = False
            deferred, self._deferred = self._deferred, {}
        for uid, (namespace, name) in deferred.items():
            self.requeues.set(uid, namespace, name, 0)

    def _list_at_start(self) -> None:
        """List the children and pods once, in every replica (a replica that takes over then
        has warm caches): from then on, what the store lacks is known absent. Until then,
        reads fall through to the API."""
        delay = 1.0
        for namespace in self.config.namespaces or (None,):
            while not self._stop.is_set():
                try:
                    self.list_cached(namespace)
                    break
                except Exception as error:
                    log.warning("cannot list the children and pods yet: %s", error)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 30.0)

    def _resync_forever(self) -> None:
        self._list_at_start()
        while not self._stop.is_set():
            self._resync_now.wait(self.config.resync_seconds)
            self._resync_now.clear()
            if self._stop.is_set():
                return
            if not self.leads():
                continue
            with self._guard:
                taking_over = self._taking_over
            if taking_over:
                self._take_over()
            else:
                self.resync()

    def _requeue_forever(self) -> None:
        while not self._stop.is_set():
            due = self.requeues.wait(self._stop)
            if due and self.leads():
                self.start_due(due)

    def start(self) -> None:
        """Start the resync and requeue threads."""
        for name, target in (("resync", self._resync_forever), ("requeue", self._requeue_forever)):
            threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop the threads; due reconciles not yet started are dropped, those running finish
        in the background."""
        self._stop.set()
        self._resync_now.set()
        self.requeues.wake()
        self._due_workers.shutdown(wait=False, cancel_futures=True)


def _what_we_act_on(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a ModelDeployment, when it changes, calls for a reconcile: its spec (by
    generation), labels and annotations (promote, abort). Not its status, which we write."""
    meta = body["metadata"]
    return (
        meta.get("generation"),
        sorted((meta.get("labels") or {}).items()),
        sorted((meta.get("annotations") or {}).items()),
    )
