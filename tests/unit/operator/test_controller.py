"""The ctl's coalescing, requeue times and retries, and its listing of the children
(threads and data only; no cluster: the API port is replaced where it is called)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modeldeploy import controller
from modeldeploy.api import API_VERSION, KIND, ModelDeploymentStatus, Phase
from modeldeploy.config import OperatorConfig
from modeldeploy.controller import RETRY_BACKOFF, Controller, Requeues
from modeldeploy.kube import Kube
from modeldeploy.reconcilers import Outcome
from tests.unit.operator.test_cache import ANSWERS, FakeKube, answer_requests, pod


def md(rv: str = "1", uid: str = "u", name: str = "iris") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": "ns", "name": name, "resourceVersion": rv}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    return answer_requests(monkeypatch)


def make_controller(clock: Clock | None = None, *, due_workers: int = 4) -> Controller:
    return Controller(
        FakeKube(),  # type: ignore[arg-type]
        OperatorConfig(due_workers=due_workers),
        lambda _body: lambda *_: None,
        clock=clock or Clock(),
    )


# Listing the children -----------------------------------------------------------------------


def test_list_cached_fills_the_store_and_marks_kinds_listed(
    requests: list[tuple[str, str]],
) -> None:
    listed = {"metadata": {"name": "iris", "namespace": "ns", "resourceVersion": "7"}}
    at = {"resourceVersion": "7"}
    ANSWERS["/apis/apps/v1/namespaces/ns/deployments"] = {"metadata": at, "items": [listed]}
    ANSWERS["/api/v1/namespaces/ns/services"] = {"metadata": at, "items": []}
    ANSWERS["/api/v1/namespaces/ns/configmaps"] = {"metadata": at, "items": []}
    ANSWERS["/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers"] = {"metadata": at}
    ANSWERS["/apis/policy/v1/namespaces/ns/poddisruptionbudgets"] = {"metadata": at}
    ANSWERS["/api/v1/namespaces/ns/pods"] = {"metadata": at, "items": [pod("p1")]}
    ctl = make_controller()
    ctl.list_cached("ns")
    assert ctl.store.select("Pod", "ns", "app.kubernetes.io/managed-by=modeldeploy")
    assert all("labelSelector=app.kubernetes.io/managed-by=modeldeploy" in p for _, p in requests)
    assert ctl.store.get("Deployment", "ns", "iris")["kind"] == "Deployment"  # type: ignore[index]
    assert ctl.store.known_absent("Service", "ns", "iris")
    assert ctl.store.known_absent("ConfigMap", "ns", "iris-shadow")
    # The watch event of the listed version tells nothing new: no reconcile for it.
    assert not ctl.child_event({**listed, "kind": "Deployment"}, deleted=False)
    event = {"kind": "Deployment", "metadata": {**listed["metadata"], "resourceVersion": "8"}}
    assert ctl.child_event(event, deleted=False)
    assert ctl.child_event(event, deleted=True)
    assert ctl.store.known_absent("Deployment", "ns", "iris")


# Requeue times ------------------------------------------------------------------------------


def test_requeues_keep_one_time_per_object_and_pop_the_due_ones_in_order() -> None:
    clock = Clock()
    requeues = Requeues(clock)
    requeues.set("a", "ns", "a", 30)
    requeues.set("b", "ns", "b", 10)
    requeues.set("c", "ns", "c", 20)
    requeues.set("a", "ns", "a", 5)  # a later outcome replaces the earlier time
    requeues.set("c", "ns", "c", None)  # ... or clears it
    assert requeues.pop_due() == []
    clock.now += 5
    assert requeues.pop_due() == [("a", "ns", "a")]
    assert requeues.pop_due() == []  # popped once
    clock.now += 100
    requeues.set("d", "ns", "d", -1)  # overdue at once
    assert requeues.pop_due() == [("b", "ns", "b"), ("d", "ns", "d")]
    assert len(requeues) == 0


def test_a_new_earlier_time_wakes_the_waiter() -> None:
    requeues = Requeues()
    stop = threading.Event()
    requeues.set("late", "ns", "late", 3600)
    got: list[list[tuple[str, str, str]]] = []
    waiter = threading.Thread(target=lambda: got.append(requeues.wait(stop)))
    waiter.start()
    requeues.set("soon", "ns", "soon", 0.05)
    waiter.join(5)
    assert got == [[("soon", "ns", "soon")]]
    waiter = threading.Thread(target=lambda: got.append(requeues.wait(stop)))
    waiter.start()
    stop.set()
    requeues.wake()
    waiter.join(5)
    assert not waiter.is_alive() and got[-1] == []


def test_the_controller_honours_requeue_after(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[float | None] = [30.0, 10.0, None]
    monkeypatch.setattr(
        controller, "reconcile", lambda *_a, **_k: Outcome(requeue_after=answers.pop(0))
    )
    ctl = make_controller()
    ctl.reconcile(md())
    assert ctl.requeues.due_in("u") == 30
    ctl.reconcile(md())
    assert ctl.requeues.due_in("u") == 10  # the latest outcome decides
    ctl.reconcile(md())
    assert ctl.requeues.due_in("u") is None
    answers.append(5.0)
    ctl.reconcile(md())
    ctl.forget("u")
    assert ctl.requeues.due_in("u") is None


def test_a_failing_reconcile_is_retried_with_backoff_and_does_not_wedge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = [RuntimeError("boom"), ConnectionError("gone")]

    def flaky(*_: Any, **__: Any) -> Outcome:
        if failures:
            raise failures.pop(0)
        return Outcome(status=ModelDeploymentStatus(phase=Phase.READY))

    monkeypatch.setattr(controller, "reconcile", flaky)
    ctl = make_controller()
    with pytest.raises(RuntimeError):
        ctl.reconcile(md())
    assert ctl.requeues.due_in("u") == RETRY_BACKOFF[0]
    with pytest.raises(ConnectionError):
        ctl.reconcile(md())  # not left "running": the next run runs
    assert ctl.requeues.due_in("u") == RETRY_BACKOFF[1]
    ctl.reconcile(md())
    assert ctl.requeues.due_in("u") is None  # success clears the retry
    assert ctl.statuses() == {("ns", "iris"): ModelDeploymentStatus(phase=Phase.READY)}


def test_a_due_object_is_read_fresh_and_a_missing_one_forgotten(
    monkeypatch: pytest.MonkeyPatch, requests: list[tuple[str, str]]
) -> None:
    ran: list[str] = []

    def record(body: Any, *_: Any, **__: Any) -> Outcome:
        ran.append(body["metadata"]["resourceVersion"])
        return Outcome(status=ModelDeploymentStatus(phase=Phase.PROGRESSING), requeue_after=60)

    monkeypatch.setattr(controller, "reconcile", record)
    clock = Clock()
    ctl = make_controller(clock)
    ctl.reconcile(md("1"))
    path = "/apis/serving.modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments/iris"
    ANSWERS[path] = md("9")
    clock.now += 60
    (due,) = ctl.requeues.pop_due()
    ctl.reconcile_due(*due)
    assert ran == ["1", "9"]  # the fresh body
    assert requests[-1][0] == "GET" and requests[-1][1].startswith(path)
    ANSWERS[path] = md("10", uid="another")  # deleted and created again: not the same object
    ctl.reconcile_due(*due)
    assert ran == ["1", "9"]
    assert ctl.statuses() == {} and ctl.requeues.due_in("u") is None
    del ANSWERS[path]
    ctl.reconcile_due(*due)  # gone: forgotten, nothing run
    assert ran == ["1", "9"]

    def unavailable(*_: Any, **__: Any) -> Any:
        raise ApiException(status=503, reason="Service Unavailable")

    monkeypatch.setattr(Kube, "_call", unavailable)
    with pytest.raises(ApiException):
        ctl.reconcile_due(*due)
    assert ctl.requeues.due_in("u") == RETRY_BACKOFF[0]  # tried again later


# Coalescing ---------------------------------------------------------------------------------


def test_events_during_a_reconcile_coalesce_into_one_rerun(monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_reconcile(body: Any, *_: Any, **__: Any) -> Outcome:
        calls.append(body["metadata"]["resourceVersion"])
        if len(calls) == 1:
            started.set()
            release.wait(5)
        return Outcome(status=ModelDeploymentStatus(phase=Phase.READY))

    monkeypatch.setattr(controller, "reconcile", slow_reconcile)
    ctl = make_controller()
    first = threading.Thread(target=ctl.reconcile, args=(md("1"),))
    first.start()
    assert started.wait(5)
    for rv in ("3", "4", "2"):  # a burst of events (one late) while the first pass runs
        ctl.reconcile(md(rv))
    release.set()
    first.join(5)
    assert calls == ["1", "4"]  # one pass, then exactly one re-run with the newest body
    ctl.reconcile(md("5"))
    assert calls == ["1", "4", "5"]  # idle again: runs at once


def test_an_object_deleted_during_its_reconcile_is_not_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_reconcile(body: Any, *_: Any, **__: Any) -> Outcome:
        calls.append(body["metadata"]["resourceVersion"])
        started.set()
        release.wait(5)
        return Outcome(status=ModelDeploymentStatus(phase=Phase.READY), requeue_after=5)

    monkeypatch.setattr(controller, "reconcile", slow_reconcile)
    ctl = make_controller()
    first = threading.Thread(target=ctl.reconcile, args=(md("1"),))
    first.start()
    assert started.wait(5)
    ctl.reconcile(md("2"))  # would re-run ...
    ctl.forget("u")  # ... but the object is deleted meanwhile
    release.set()
    first.join(5)
    assert calls == ["1"]
    assert ctl.statuses() == {} and ctl.requeues.due_in("u") is None


def test_reconcile_soon_reconciles_a_known_modeldeployment_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(controller, "reconcile", lambda *_a, **_k: Outcome(requeue_after=60))
    ctl = make_controller()
    ctl.reconcile_soon("ns", "iris")  # never reconciled: nothing known, nothing scheduled
    assert ctl.requeues.due_in("u") is None
    ctl.reconcile(md())
    assert ctl.requeues.due_in("u") == 60
    ctl.reconcile_soon("ns", "iris")
    assert ctl.requeues.due_in("u") == 0
    ctl.reconcile_soon("ns", "other")
    assert ctl.requeues.pop_due() == [("u", "ns", "iris")]


# Due reconciles side by side ----------------------------------------------------------------


class SlowPrometheus:
    """An analysis source that answers for one ModelDeployment only when released; the others
    at once. Counts the queries in flight, to see how many reconciles ran side by side."""

    def __init__(self, slow: str) -> None:
        self.slow, self.release = slow, threading.Event()
        self.guard = threading.Lock()
        self.running = self.most = 0
        self.answered: list[str] = []

    def query(self, name: str) -> list[tuple[dict[str, str], float]]:
        with self.guard:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if name.startswith(self.slow):
                assert self.release.wait(10), "never released"
            else:
                time.sleep(0.05)  # long enough for the others to overlap
            return [({}, 0.0)]
        finally:
            with self.guard:
                self.running -= 1
                self.answered.append(name)


def analysing(source: SlowPrometheus) -> Any:
    """A reconcile whose rollout analysis reads ``source``."""

    def reconcile(body: Any, *_: Any, **__: Any) -> Outcome:
        source.query(body["metadata"]["name"])
        return Outcome(status=ModelDeploymentStatus(phase=Phase.PROGRESSING))

    return reconcile


def serve(names: list[str]) -> list[tuple[str, str, str]]:
    """The due entries of ``names``, each answered by the API when read fresh."""
    for name in names:
        path = f"/apis/serving.modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments/{name}"
        ANSWERS[path] = md(uid=name, name=name)
    return [(name, "ns", name) for name in names]


def test_a_slow_prometheus_delays_no_other_due_reconcile(
    monkeypatch: pytest.MonkeyPatch, requests: list[tuple[str, str]]
) -> None:
    source = SlowPrometheus(slow="slow")
    monkeypatch.setattr(controller, "reconcile", analysing(source))
    ctl = make_controller(due_workers=2)
    ctl.requeues.clock = time.monotonic
    try:
        ctl.start_due(serve(["slow", "fast-1", "fast-2", "fast-3"]))  # returns at once
        deadline = time.monotonic() + 5
        while len(source.answered) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The slow analysis holds one worker; the other rollouts went on with the other.
        assert sorted(source.answered) == ["fast-1", "fast-2", "fast-3"]
        assert source.most == 2  # side by side, never more than the bound
        assert ctl.statuses().keys() == {
            ("ns", "fast-1"),
            ("ns", "fast-2"),
            ("ns", "fast-3"),
        }
    finally:
        source.release.set()
        ctl.stop()


def test_a_due_reconcile_waiting_for_a_worker_is_not_queued_twice(
    monkeypatch: pytest.MonkeyPatch, requests: list[tuple[str, str]]
) -> None:
    source = SlowPrometheus(slow="slow")
    monkeypatch.setattr(controller, "reconcile", analysing(source))
    ctl = make_controller(due_workers=1)
    ctl.requeues.clock = time.monotonic
    try:
        ctl.start_due(serve(["slow"]))
        for _ in range(3):  # due again and again while the only worker is busy
            ctl.start_due(serve(["iris"]))
        source.release.set()
        deadline = time.monotonic() + 5
        while len(source.answered) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert source.answered == ["slow", "iris"]
    finally:
        source.release.set()
        ctl.stop()


def test_a_pod_event_reconciles_its_owner_soon_only_when_its_trouble_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pending = Outcome(status=ModelDeploymentStatus(phase=Phase.PENDING))
    monkeypatch.setattr(controller, "reconcile", lambda *a, **k: pending)
    ctl = make_controller()
    ctl.reconcile(md())  # a known ModelDeployment named iris
    assert ctl.requeues.due_in("u") is None
    pending = pod("p1")
    pending["status"]["conditions"] = []
    ctl.pod_event(pending, deleted=False)
    assert ctl.requeues.due_in("u") is None
    # The scheduler finds no room: what the status must report, unannounced by the Deployment.
    ctl.pod_event(pod("p1", rv="2"), deleted=False)
    assert ctl.requeues.due_in("u") == 0
    ctl.requeues.drop("u")
    ctl.pod_event(pod("p1", rv="3"), deleted=False)  # nothing new about it
    assert ctl.requeues.due_in("u") is None
    scheduled = pod("p1", rv="4")
    scheduled["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
    ctl.pod_event(scheduled, deleted=False)  # recovered
    assert ctl.requeues.due_in("u") == 0
    ctl.pod_event(pod("p1", rv="5"), deleted=True)
    assert ctl.store.get("Pod", "ns", "p1") is None


def test_a_modeldeployment_event_that_only_moves_its_status_reconciles_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passes: list[str] = []

    def reconcile(body: Any, *_: Any, **__: Any) -> Outcome:
        passes.append(body["metadata"]["resourceVersion"])
        return Outcome(status=ModelDeploymentStatus(phase=Phase.READY))

    monkeypatch.setattr(controller, "reconcile", reconcile)
    ctl = make_controller()
    first = {**md("1"), "spec": {}}
    first["metadata"]["generation"] = 1
    ctl.modeldeployment_event(first, deleted=False)
    status_only = {"metadata": {**first["metadata"], "resourceVersion": "2"}, "status": {}}
    ctl.modeldeployment_event(status_only, deleted=False)  # our own status write
    assert passes == ["1"]
    edited = {"metadata": {**first["metadata"], "resourceVersion": "3", "generation": 2}}
    ctl.modeldeployment_event(edited, deleted=False)
    promoted = {"metadata": {**edited["metadata"], "resourceVersion": "4"}}
    promoted["metadata"]["annotations"] = {"serving.modeldeploy.io/promote": "true"}
    ctl.modeldeployment_event(promoted, deleted=False)
    assert passes == ["1", "3", "4"]


def test_a_replica_that_does_not_lead_reconciles_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[str] = []
    monkeypatch.setattr(controller, "reconcile", lambda b, *a, **k: passes.append("x") or Outcome())
    ctl = make_controller()
    leading = False
    ctl.leads = lambda: leading
    ctl.modeldeployment_event(md(), deleted=False)
    ctl.reconcile(md())
    ctl.reconcile_due("u", "ns", "iris")
    assert passes == []
    leading = True
    ctl.reconcile(md())
    assert passes == ["x"]


def test_a_replica_that_stops_leading_mid_reconcile_sends_no_more_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Frozen in the middle of a reconcile (a stopped process), a replica wakes up after
    another took over: the rest of that reconcile's writes, computed from what it saw before,
    are not sent, no further pass runs, and nothing is retried here."""
    sent: list[str] = []
    monkeypatch.setattr(
        Kube, "_request", lambda _self, method, path, **_: sent.append(method) or {}
    )
    ctl = make_controller()
    leading = True
    ctl.leads = lambda: leading
    passes: list[str] = []

    def reconcile(body: Any, kube: Kube, *_: Any, **__: Any) -> Outcome:
        nonlocal leading
        passes.append(body["metadata"]["resourceVersion"])
        kube.get(API_VERSION, KIND, "ns", "iris")
        kube.apply(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "iris", "namespace": "ns"}}
        )
        ctl.reconcile(md("2"))  # an event meanwhile: one more pass would follow
        leading = False  # frozen here; another replica leads when it wakes up
        kube.get(API_VERSION, KIND, "ns", "iris")  # reads still go out
        kube.patch_status(API_VERSION, KIND, "ns", "iris", {"phase": "Paused"})
        return Outcome()

    monkeypatch.setattr(controller, "reconcile", reconcile)
    ctl.reconcile(md("1"))  # neither raised nor retried: the leader has it now
    assert sent == ["GET", "PATCH", "GET"]  # the status write was never sent
    assert passes == ["1"]
    assert ctl.requeues.due_in("u") is None
    leading = True
    ctl.reconcile(md("3"))  # nothing left running or pending from the stopped one
    assert passes == ["1", "3"]


def test_a_new_leader_forgets_the_statuses_it_wrote_when_it_last_led(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica that led, lost the Lease while another moved the rollout on, then leads again
    must read the status from the API, not resume from the one it wrote itself."""
    given: list[Any] = []

    def reconcile(body: Any, *_: Any, known_status: Any = None, **__: Any) -> Outcome:
        given.append(known_status)
        return Outcome(status=ModelDeploymentStatus(phase=Phase.PAUSED))

    monkeypatch.setattr(controller, "reconcile", reconcile)
    ctl = make_controller()
    ctl.reconcile(md("1"))
    ctl.reconcile(md("2"))
    # While it leads, its own write is the newest status.
    assert given == [None, ModelDeploymentStatus(phase=Phase.PAUSED)]
    ctl.stopped_leading()
    ctl.started_leading()
    ctl.reconcile(md("3"))  # from a watch that may lag behind the other leader's writes
    assert len(given) == 2  # not reconciled: it waits for the new leader's first pass
    ctl.reconcile(md("9"), fresh=True)  # that pass reads every ModelDeployment from the API
    assert given[-1] is None  # and the status read is the truth, not the one written before
    monkeypatch.setattr(ctl, "resync", lambda: True)
    ctl._take_over()
    # The one whose event came during the pass is read again after it, and events count again.
    assert ctl.requeues.due_in("u") == 0
    ctl.reconcile(md("10"))
    assert len(given) == 4


def test_a_body_older_than_one_reconciled_is_replaced_by_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    def reconcile(body: Any, *_: Any, **__: Any) -> Outcome:
        seen.append(body["metadata"]["resourceVersion"])
        return Outcome()

    monkeypatch.setattr(controller, "reconcile", reconcile)
    ctl = make_controller()
    ctl.reconcile(md("7"))
    ctl.reconcile(md("5"))  # an owner's body from an index that lags: the newer one is used
    assert seen == ["7", "7"]
