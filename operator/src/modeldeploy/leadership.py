"""Leader election over a ``coordination.k8s.io`` Lease: one replica acts, the others stand by.

The election itself is the Kubernetes client's ``leaderelection`` package (the same algorithm
and Lease as client-go and controller-runtime); this module runs it in a thread, says in the log
and on a metric whether this replica leads, and tells the controller when leadership comes and
goes. A replica leads only while its last renewal is younger than the renew deadline, so one that
was frozen (a stopped process, a long pause) stops acting before it even tries to renew.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from modeldeploy.metrics import set_leading

log = logging.getLogger("modeldeploy.leadership")


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults: a new leader within about ``lease_seconds`` of the old one's end."""

    lease_seconds: int = 15
    """How long a Lease stays held after its last renewal."""
    renew_seconds: int = 10
    """The leader gives up when it could not renew for this long."""
    retry_seconds: int = 2
    """Interval between attempts to acquire or renew."""


class _Lease(LeaseLock):
    """The package's Lease lock, which takes nothing more once :attr:`released`: a released
    Lease must not be taken back by the renew loop still running in this process."""

    released = False

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return False if self.released else bool(super().create(name, namespace, election_record))

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return False if self.released else bool(super().update(name, namespace, updated_record))


class Leadership:
    """Whether this replica leads. :meth:`start` runs the election in a daemon thread."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming = LeaseTiming(),
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
    ) -> None:
        self.namespace, self.name, self.identity, self.timing = namespace, name, identity, timing
        self.on_started, self.on_stopped = on_started, on_stopped
        self._lock = _Lease(name, namespace, identity)
        # The package's lock uses the default client; ours carries the operator's credentials.
        self._lock.api_instance = client.CoordinationV1Api(api_client)
        self._election: leaderelection.LeaderElection | None = None
        self._leading = threading.Event()

    def leads(self) -> bool:
        """True while this replica holds the Lease and renewed it within the renew deadline."""
        election = self._election
        if not self._leading.is_set() or election is None:
            return False
        record = election.observed_record
        if record is None or record.holder_identity != self.identity:
            return False
        age = time.time() - election.observed_time_milliseconds / 1000
        return age < self.timing.renew_seconds

    def holder(self) -> str | None:
        """The identity that holds the Lease as this replica last saw it."""
        election = self._election
        record = election.observed_record if election is not None else None
        return None if record is None else record.holder_identity

    def start(self) -> None:
        set_leading(False)
        threading.Thread(target=self._run_forever, name="leader-election", daemon=True).start()
        threading.Thread(target=self._report_waiting, name="leader-report", daemon=True).start()

    def release(self) -> None:
        """On a clean stop: hand the Lease back (no holder, a one-second duration, as client-go
        does), so a standby replica takes over at its next attempt, not after the Lease expires."""
        if not self.leads():
            return
        self._lock.released = True
        self._leading.clear()
        set_leading(False)
        patch = {"spec": {"holderIdentity": None, "leaseDurationSeconds": 1}}
        try:
            self._lock.api_instance.patch_namespaced_lease(self.name, self.namespace, patch)
            log.info("released the Lease", extra={"lease": f"{self.namespace}/{self.name}"})
        except Exception as error:  # it expires on its own
            log.warning("cannot release the Lease: %s", error)

    def _run_forever(self) -> None:
        log.info(
            "waiting to lead",
            extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity},
        )
        while True:
            config = electionconfig.Config(
                self._lock,
                lease_duration=self.timing.lease_seconds,
                renew_deadline=self.timing.renew_seconds,
                retry_period=self.timing.retry_seconds,
                onstarted_leading=self._started,
                onstopped_leading=self._stopped,
            )
            self._election = leaderelection.LeaderElection(config)
            try:
                self._election.run()  # returns when leadership is lost
            except Exception as error:  # the API unreachable: try again
                log.warning("leader election failed, trying again: %s", error)
                self._stopped()
            time.sleep(self.timing.retry_seconds)

    def _started(self) -> None:
        self._leading.set()
        set_leading(True)
        log.info("leading", extra={"lease": f"{self.namespace}/{self.name}"})
        self.on_started()

    def _stopped(self) -> None:
        if not self._leading.is_set():
            return
        self._leading.clear()
        set_leading(False)
        log.warning("lost leadership", extra={"lease": f"{self.namespace}/{self.name}"})
        self.on_stopped()

    def _report_waiting(self, every: float = 30.0) -> None:
        """While another replica leads, say so now and then (the election's own log is quiet)."""
        said: str | None = None
        last = 0.0
        while True:
            time.sleep(self.timing.retry_seconds)
            holder = self.holder()
            if self._leading.is_set() or holder in (None, self.identity):
                continue
            if holder != said or time.monotonic() - last > every:
                log.info(
                    "waiting to lead: another replica holds the Lease",
                    extra={"lease": f"{self.namespace}/{self.name}", "holder": holder},
                )
                said, last = holder, time.monotonic()
