"""The dispatcher's coalescing, requeue times and retries, and its listing of the children
(threads and data only; no cluster: the API port is replaced where it is called)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modeldeploy import dispatch
from modeldeploy.api import ModelDeploymentStatus, Phase
from modeldeploy.dispatch import RETRY_BACKOFF, Dispatcher, Requeues
from modeldeploy.kube import Kube
from modeldeploy.reconcilers import Outcome
from modeldeploy.settings import OperatorSettings
from tests.unit.operator.test_cache import ANSWERS, FakeKube, answer_requests


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


def make_dispatcher(clock: Clock | None = None) -> Dispatcher:
    return Dispatcher(
        FakeKube(),  # type: ignore[arg-type]
        OperatorSettings(),
        lambda _body: lambda *_: None,
        clock=clock or Clock(),
    )


# Listing the children -----------------------------------------------------------------------


def test_list_children_fills_the_store_and_marks_kinds_listed(
    requests: list[tuple[str, str]],
) -> None:
    listed = {"metadata": {"name": "iris", "namespace": "ns", "resourceVersion": "7"}}
    at = {"resourceVersion": "7"}
    ANSWERS["/apis/apps/v1/namespaces/ns/deployments"] = {"metadata": at, "items": [listed]}
    ANSWERS["/api/v1/namespaces/ns/services"] = {"metadata": at, "items": []}
    ANSWERS["/apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers"] = {"metadata": at}
    ANSWERS["/apis/policy/v1/namespaces/ns/poddisruptionbudgets"] = {"metadata": at}
    dispatcher = make_dispatcher()
    dispatcher.list_children("ns")
    assert all("labelSelector=app.kubernetes.io/managed-by=modeldeploy" in p for _, p in requests)
    assert dispatcher.store.get("Deployment", "ns", "iris")["kind"] == "Deployment"  # type: ignore[index]
    assert dispatcher.store.known_absent("Service", "ns", "iris")
    # The watch event of the listed version tells nothing new: no reconcile for it.
    assert not dispatcher.child_event({**listed, "kind": "Deployment"}, deleted=False)
    event = {"kind": "Deployment", "metadata": {**listed["metadata"], "resourceVersion": "8"}}
    assert dispatcher.child_event(event, deleted=False)
    assert dispatcher.child_event(event, deleted=True)
    assert dispatcher.store.known_absent("Deployment", "ns", "iris")


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


def test_the_dispatcher_honours_requeue_after(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[float | None] = [30.0, 10.0, None]
    monkeypatch.setattr(
        dispatch, "reconcile", lambda *_a, **_k: Outcome(requeue_after=answers.pop(0))
    )
    dispatcher = make_dispatcher()
    dispatcher.run(md())
    assert dispatcher.requeues.due_in("u") == 30
    dispatcher.run(md())
    assert dispatcher.requeues.due_in("u") == 10  # the latest outcome decides
    dispatcher.run(md())
    assert dispatcher.requeues.due_in("u") is None
    answers.append(5.0)
    dispatcher.run(md())
    dispatcher.forget("u")
    assert dispatcher.requeues.due_in("u") is None


def test_a_failing_reconcile_is_retried_with_backoff_and_does_not_wedge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = [RuntimeError("boom"), ConnectionError("gone")]

    def flaky(*_: Any, **__: Any) -> Outcome:
        if failures:
            raise failures.pop(0)
        return Outcome(status=ModelDeploymentStatus(phase=Phase.READY))

    monkeypatch.setattr(dispatch, "reconcile", flaky)
    dispatcher = make_dispatcher()
    with pytest.raises(RuntimeError):
        dispatcher.run(md())
    assert dispatcher.requeues.due_in("u") == RETRY_BACKOFF[0]
    with pytest.raises(ConnectionError):
        dispatcher.run(md())  # not left "running": the next run runs
    assert dispatcher.requeues.due_in("u") == RETRY_BACKOFF[1]
    dispatcher.run(md())
    assert dispatcher.requeues.due_in("u") is None  # success clears the retry
    assert dispatcher.statuses() == {("ns", "iris"): ModelDeploymentStatus(phase=Phase.READY)}


def test_a_due_object_is_read_fresh_and_a_missing_one_forgotten(
    monkeypatch: pytest.MonkeyPatch, requests: list[tuple[str, str]]
) -> None:
    ran: list[str] = []

    def record(body: Any, *_: Any, **__: Any) -> Outcome:
        ran.append(body["metadata"]["resourceVersion"])
        return Outcome(status=ModelDeploymentStatus(phase=Phase.PROGRESSING), requeue_after=60)

    monkeypatch.setattr(dispatch, "reconcile", record)
    clock = Clock()
    dispatcher = make_dispatcher(clock)
    dispatcher.run(md("1"))
    path = "/apis/serving.modeldeploy.io/v1alpha1/namespaces/ns/modeldeployments/iris"
    ANSWERS[path] = md("9")
    clock.now += 60
    (due,) = dispatcher.requeues.pop_due()
    dispatcher.run_due(*due)
    assert ran == ["1", "9"]  # the fresh body
    assert requests[-1][0] == "GET" and requests[-1][1].startswith(path)
    ANSWERS[path] = md("10", uid="another")  # deleted and created again: not the same object
    dispatcher.run_due(*due)
    assert ran == ["1", "9"]
    assert dispatcher.statuses() == {} and dispatcher.requeues.due_in("u") is None
    del ANSWERS[path]
    dispatcher.run_due(*due)  # gone: forgotten, nothing run
    assert ran == ["1", "9"]

    def unavailable(*_: Any, **__: Any) -> Any:
        raise ApiException(status=503, reason="Service Unavailable")

    monkeypatch.setattr(Kube, "_call", unavailable)
    with pytest.raises(ApiException):
        dispatcher.run_due(*due)
    assert dispatcher.requeues.due_in("u") == RETRY_BACKOFF[0]  # tried again later


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

    monkeypatch.setattr(dispatch, "reconcile", slow_reconcile)
    dispatcher = make_dispatcher()
    first = threading.Thread(target=dispatcher.run, args=(md("1"),))
    first.start()
    assert started.wait(5)
    for rv in ("3", "4", "2"):  # a burst of events (one late) while the first pass runs
        dispatcher.run(md(rv))
    release.set()
    first.join(5)
    assert calls == ["1", "4"]  # one pass, then exactly one re-run with the newest body
    dispatcher.run(md("5"))
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

    monkeypatch.setattr(dispatch, "reconcile", slow_reconcile)
    dispatcher = make_dispatcher()
    first = threading.Thread(target=dispatcher.run, args=(md("1"),))
    first.start()
    assert started.wait(5)
    dispatcher.run(md("2"))  # would re-run ...
    dispatcher.forget("u")  # ... but the object is deleted meanwhile
    release.set()
    first.join(5)
    assert calls == ["1"]
    assert dispatcher.statuses() == {} and dispatcher.requeues.due_in("u") is None


def test_a_poke_reconciles_a_known_modeldeployment_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "reconcile", lambda *_a, **_k: Outcome(requeue_after=60))
    dispatcher = make_dispatcher()
    dispatcher.poke("ns", "iris")  # never reconciled: nothing known, nothing scheduled
    assert dispatcher.requeues.due_in("u") is None
    dispatcher.run(md())
    assert dispatcher.requeues.due_in("u") == 60
    dispatcher.poke("ns", "iris")
    assert dispatcher.requeues.due_in("u") == 0
    dispatcher.poke("ns", "other")
    assert dispatcher.requeues.pop_due() == [("u", "ns", "iris")]


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
    monkeypatch.setattr(dispatch, "reconcile", analysing(source))
    dispatcher = Dispatcher(
        FakeKube(),  # type: ignore[arg-type]
        OperatorSettings(due_workers=2),
        lambda _body: lambda *_: None,
    )
    try:
        dispatcher.start_due(serve(["slow", "fast-1", "fast-2", "fast-3"]))  # returns at once
        deadline = time.monotonic() + 5
        while len(source.answered) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The slow analysis holds one worker; the other rollouts went on with the other.
        assert sorted(source.answered) == ["fast-1", "fast-2", "fast-3"]
        assert source.most == 2  # side by side, never more than the bound
        assert dispatcher.statuses().keys() == {
            ("ns", "fast-1"),
            ("ns", "fast-2"),
            ("ns", "fast-3"),
        }
    finally:
        source.release.set()
        dispatcher.stop()


def test_a_due_reconcile_waiting_for_a_worker_is_not_queued_twice(
    monkeypatch: pytest.MonkeyPatch, requests: list[tuple[str, str]]
) -> None:
    source = SlowPrometheus(slow="slow")
    monkeypatch.setattr(dispatch, "reconcile", analysing(source))
    dispatcher = Dispatcher(
        FakeKube(),  # type: ignore[arg-type]
        OperatorSettings(due_workers=1),
        lambda _body: lambda *_: None,
    )
    try:
        dispatcher.start_due(serve(["slow"]))
        for _ in range(3):  # due again and again while the only worker is busy
            dispatcher.start_due(serve(["iris"]))
        source.release.set()
        deadline = time.monotonic() + 5
        while len(source.answered) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert source.answered == ["slow", "iris"]
    finally:
        source.release.set()
        dispatcher.stop()
