"""One reconcile at a time per ModelDeployment; events that arrive meanwhile coalesce.

A burst of child events (a Deployment's status moving while its pods start) would otherwise
queue one full reconcile each. Here the first event runs a reconcile; any that arrive while it
runs mark the object dirty, and the running reconcile makes one more pass with the newest body.

Reads come from the watch-fed stores of :mod:`modeldeploy.cache`. A reconcile may ask to run
again after a while (:attr:`Outcome.requeue_after`); a failed one is retried with backoff.
:class:`Requeues` keeps those due times, and due reconciles run side by side on a few threads
(:meth:`Dispatcher.start_due`), so one that waits on a slow Prometheus delays no other.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modeldeploy.api import API_VERSION, KIND, ModelDeploymentStatus
from modeldeploy.cache import (
    CHILD_RESOURCES,
    MANAGED_SELECTOR,
    CachingKube,
    ChildStore,
    PodStore,
    resource_version,
    version_number,
)
from modeldeploy.kube import Kube, is_transient
from modeldeploy.metrics import count_children, count_requeue, timed_reconcile
from modeldeploy.reconcilers import EventSink, reconcile
from modeldeploy.settings import OperatorSettings

log = logging.getLogger("modeldeploy.dispatch")

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
        self._statuses: dict[str, ModelDeploymentStatus] = {}
        self._names: dict[str, tuple[str, str]] = {}
        self._due_workers = ThreadPoolExecutor(
            max(1, config.due_workers), thread_name_prefix="due-reconcile"
        )
        self._due_waiting: set[str] = set()

    def run(self, body: Mapping[str, Any]) -> None:
        """Reconcile ``body`` now, or leave it to the reconcile already running for it (which
        then makes one more pass with the newest body it was given). A failure is retried after
        a backoff (see :attr:`requeues`) and re-raised."""
        uid = str(body["metadata"]["uid"])
        with self._guard:
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
                if resource_version(pending) >= resource_version(body):
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

    def start_due(self, due: Iterable[tuple[str, str, str]]) -> None:
        """Hand due ModelDeployments (uid, namespace, name) to the due workers and return at
        once: at most ``config.due_workers`` run at a time, the others wait their turn. One
        already waiting is not queued twice (its run reads it fresh anyway). A failure is
        logged; :meth:`run_due` has scheduled its retry."""
        for uid, namespace, name in due:
            with self._guard:
                if uid in self._due_waiting:
                    continue
                self._due_waiting.add(uid)
            # kopf posts Events through context variables: carry them to the worker thread.
            context = contextvars.copy_context()
            try:
                self._due_workers.submit(context.run, self._run_due_logged, uid, namespace, name)
            except RuntimeError:  # shut down: the operator is stopping
                return

    def _run_due_logged(self, uid: str, namespace: str, name: str) -> None:
        with self._guard:
            self._due_waiting.discard(uid)
        try:
            self.run_due(uid, namespace, name)
        except Exception as error:
            where = {"namespace": namespace, "modeldeployment": name}
            if is_transient(error):
                log.warning("timed reconcile failed, will retry: %s", error, extra=where)
            else:
                log.exception("timed reconcile failed, will retry", extra=where)

    def stop(self) -> None:
        """Drop the due reconciles not yet started; those running finish in the background."""
        self._due_workers.shutdown(wait=False, cancel_futures=True)

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

    def may_exist(self, kind: str, namespace: str, name: str) -> bool:
        """False only when no watch event has shown this child: no need to read it to know."""
        return (kind, namespace, name) in self.store

    def poke(self, namespace: str, name: str) -> None:
        """Reconcile a known ModelDeployment soon (through the requeue thread, which reads it
        fresh): something its status reports changed without an event of its own."""
        with self._guard:
            uid = next((u for u, known in self._names.items() if known == (namespace, name)), None)
        if uid is not None:
            self.requeues.set(uid, namespace, name, 0)

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

    def statuses(self) -> dict[tuple[str, str], ModelDeploymentStatus]:
        """The status last written for each ModelDeployment, by (namespace, name)."""
        with self._guard:
            return {self._names[u]: s for u, s in self._statuses.items() if u in self._names}

    def list_children(self, namespace: str | None) -> None:
        """List every managed child kind (one request each) into the store: at start, so a
        child the store lacks is known absent; in each resync, to catch events a watch missed
        (far cheaper than reading each child of each ModelDeployment)."""
        for api_version, kind in CHILD_RESOURCES:
            items, version = self.kube.list_with_version(
                api_version, kind, namespace, MANAGED_SELECTOR
            )
            typed = [{**item, "apiVersion": api_version, "kind": kind} for item in items]
            self.store.refresh(kind, namespace, typed, version_number(version))
