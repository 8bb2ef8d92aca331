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
from modeldeploy.reconcilers import EventSink, reconcile
from modeldeploy.settings import OperatorSettings


class Dispatcher:
    """Runs :func:`reconcile` for the operator's handlers, the resync and child events."""

    def __init__(
        self,
        kube: Kube,
        config: OperatorSettings,
        emitter: Callable[[Mapping[str, Any]], EventSink],
    ) -> None:
        self.kube = kube
        self.config = config
        self.emitter = emitter
        self._guard = threading.Lock()
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._statuses: dict[str, dict[str, Any]] = {}
        self._children: set[tuple[str, str, str]] = set()

    def run(self, body: Mapping[str, Any]) -> None:
        """Reconcile ``body`` now, or leave it to the reconcile already running for it."""
        meta = body["metadata"]
        uid = str(meta["uid"])
        with self._guard:
            if uid in self._running:
                self._dirty.add(uid)
                return
            self._running.add(uid)
        try:
            while True:
                outcome = reconcile(
                    body,
                    self.kube,
                    self.config,
                    self.emitter(body),
                    known_status=self._statuses.get(uid),
                    may_exist=self.may_exist,
                )
                self._statuses[uid] = outcome.status
                with self._guard:
                    if uid not in self._dirty:
                        self._running.discard(uid)
                        return
                    self._dirty.discard(uid)
                fresh = self.kube.get(API_VERSION, KIND, meta["namespace"], meta["name"])
                if fresh is None or fresh["metadata"]["uid"] != uid:
                    with self._guard:
                        self._running.discard(uid)
                    return
                body = fresh
        except BaseException:
            with self._guard:
                self._running.discard(uid)
                self._dirty.discard(uid)
            raise

    def child_event(self, kind: str, namespace: str, name: str, *, deleted: bool) -> None:
        """Remember which children exist, as their watch events tell."""
        key = (kind, namespace, name)
        with self._guard:
            if deleted:
                self._children.discard(key)
            else:
                self._children.add(key)

    def may_exist(self, kind: str, namespace: str, name: str) -> bool:
        """False only when no watch event has shown this child: no need to read it to know."""
        return (kind, namespace, name) in self._children

    def forget(self, uid: str) -> None:
        """Drop what is remembered of a deleted ModelDeployment."""
        with self._guard:
            self._statuses.pop(uid, None)
            self._dirty.discard(uid)
