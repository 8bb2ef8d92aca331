"""The dispatcher's coalescing, requeue times and retries; the child and pod stores; the reads
they answer (threads and data only; no cluster: the API port is replaced where it is called)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modeldeploy import dispatch
from modeldeploy.dispatch import (
    RETRY_BACKOFF,
    CachingKube,
    ChildStore,
    Dispatcher,
    PodStore,
    Requeues,
    equality_selector,
    trim_pod,
)
from modeldeploy.kube import Kube
from modeldeploy.reconcilers import Outcome
from modeldeploy.settings import OperatorSettings


def child(rv: str, replicas: int = 1, name: str = "iris") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv},
        "spec": {"replicas": replicas},
    }


def md(rv: str = "1", uid: str = "u", name: str = "iris") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "namespace": "ns", "name": name, "resourceVersion": rv}}


def pod(name: str, track: str = "stable", owner: str = "iris", rv: str = "1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": {
                "app.kubernetes.io/managed-by": "modeldeploy",
                "serving.modeldeploy.io/deployment": owner,
                "serving.modeldeploy.io/track": track,
            },
            "annotations": {"big": "x" * 1000},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs"}],
        },
        "spec": {"containers": [{"name": "server", "image": "img"}]},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
            "containerStatuses": [{"name": "server", "ready": False}],
        },
    }


class FakeKube:
    """Stands in for the API port where the dispatcher is built (it copies these fields)."""

    client = None
    field_manager = "modeldeploy"
    timeout = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every request the API port would send, answered from ``answers`` by path (or 404)."""
    sent: list[tuple[str, str]] = []

    def call(_self: Any, method: str, path: str, **kwargs: Any) -> Any:
        sent.append((method, path + "?" + "&".join(f"{k}={v}" for k, v in kwargs.get("query", []))))
        if path in ANSWERS:
            return ANSWERS[path]
        raise ApiException(status=404, reason="Not Found")

    monkeypatch.setattr(Kube, "_call", call)
    ANSWERS.clear()
    return sent


ANSWERS: dict[str, Any] = {}


def make_dispatcher(clock: Clock | None = None) -> Dispatcher:
    return Dispatcher(
        FakeKube(),  # type: ignore[arg-type]
        OperatorSettings(),
        lambda _body: lambda *_: None,
        clock=clock or Clock(),
    )


# The child store ----------------------------------------------------------------------------


def test_store_keeps_the_newest_version_and_forgets_deleted() -> None:
    store = ChildStore()
    assert store.put(child("10", replicas=2))
    assert not store.put(child("9", replicas=1))  # an older event arriving late
    assert store.get("Deployment", "ns", "iris")["spec"]["replicas"] == 2  # type: ignore[index]
    assert not store.put(child("10", replicas=2))  # the same version again: nothing new
    assert store.put(child("11", replicas=3))
    assert store.get("Deployment", "ns", "iris")["spec"]["replicas"] == 3  # type: ignore[index]
    assert ("Deployment", "ns", "iris") in store
    store.drop("Deployment", "ns", "iris", version=12)
    assert store.get("Deployment", "ns", "iris") is None
    assert not store.put(child("11"))  # a list older than the deletion cannot revive it
    assert store.put(child("13"))  # a new object of the same name can


def test_children_of_a_listed_kind_that_the_store_lacks_are_absent_without_a_read(
    requests: list[tuple[str, str]],
) -> None:
    store, pods = ChildStore(), PodStore()
    kube = CachingKube(FakeKube(), store, pods)  # type: ignore[arg-type]
    assert kube.get("apps/v1", "Deployment", "ns", "iris") is None
    assert len(requests) == 1  # not listed yet: a real read
    store.refresh("Deployment", "ns", [child("5", name="wine")], version=5)
    assert kube.get("apps/v1", "Deployment", "ns", "iris") is None
    assert kube.get("apps/v1", "Deployment", "ns", "wine")["metadata"]["name"] == "wine"  # type: ignore[index]
    assert kube.get("v1", "Service", "ns", "iris") is None  # another kind: still read
    assert kube.get("apps/v1", "Deployment", "other", "iris") is None  # another namespace
    assert len(requests) == 3
    store.refresh("Service", None, [], version=5)  # listed in every namespace
    assert kube.get("v1", "Service", "elsewhere", "iris") is None
    assert len(requests) == 3


def test_a_new_list_forgets_children_deleted_unseen_but_not_newer_ones() -> None:
    store = ChildStore()
    store.put(child("5", name="missed"))  # its deletion event was lost in a reconnect
    store.put(child("5", name="kept", replicas=1))
    store.put(child("30", name="applied"))  # our own apply, after the list was taken
    store.put({**child("5"), "kind": "Service"})  # another kind: not in this list
    store.refresh("Deployment", "ns", [child("9", name="kept", replicas=2)], version=20)
    assert store.get("Deployment", "ns", "missed") is None
    assert store.known_absent("Deployment", "ns", "missed")
    assert store.get("Deployment", "ns", "kept")["spec"]["replicas"] == 2  # type: ignore[index]
    assert store.get("Deployment", "ns", "applied") is not None
    assert store.get("Service", "ns", "iris") is not None


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


# The pod store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "parsed"),
    [
        ("a=b", {"a": "b"}),
        ("a=b,c.io/d=e", {"a": "b", "c.io/d": "e"}),
        ("a==b", {"a": "b"}),
        ("a!=b", None),
        ("a in (b,c)", None),
        ("a", None),
        ("!a", None),
        ("", None),
        (None, None),
    ],
)
def test_equality_selectors_are_the_only_ones_answered(
    selector: str | None, parsed: dict[str, str] | None
) -> None:
    assert equality_selector(selector) == parsed


def test_a_pod_keeps_only_what_status_needs() -> None:
    trimmed = trim_pod(pod("p1"))
    assert set(trimmed["metadata"]) == {"name", "namespace", "labels", "resourceVersion"}
    assert trimmed["status"] == {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    }
    assert "spec" not in trimmed


def test_pod_store_answers_equality_selectors_once_synced() -> None:
    store = PodStore()
    selector = "serving.modeldeploy.io/deployment=iris,serving.modeldeploy.io/track=stable"
    assert store.select("ns", selector) is None  # not listed yet: the caller must list
    store.replace("ns", [pod("p1"), pod("p2", track="canary"), pod("w1", owner="wine")])
    assert [p["metadata"]["name"] for p in store.select("ns", selector) or []] == ["p1"]
    assert store.select("ns", "serving.modeldeploy.io/deployment!=iris") is None
    assert store.select("other", selector) is None  # a namespace no watch covers
    store.update("ADDED", pod("p3"))
    store.update("DELETED", pod("p1"))
    assert [p["metadata"]["name"] for p in store.select("ns", selector) or []] == ["p3"]
    store.unsync("ns")  # the watch broke
    assert store.select("ns", selector) is None
    store.replace(None, [pod("p9")])  # a watch of every namespace
    assert [p["metadata"]["name"] for p in store.select("other", selector) or []] == []
    assert [p["metadata"]["name"] for p in store.select("ns", selector) or []] == ["p9"]
    assert len(store) == 1


def test_pod_lists_come_from_the_store_when_it_can_answer(
    requests: list[tuple[str, str]],
) -> None:
    pods = PodStore()
    kube = CachingKube(FakeKube(), ChildStore(), pods)  # type: ignore[arg-type]
    ANSWERS["/api/v1/namespaces/ns/pods"] = {"items": [pod("p1")]}
    selector = "serving.modeldeploy.io/deployment=iris,serving.modeldeploy.io/track=stable"
    assert len(kube.list("v1", "Pod", "ns", selector)) == 1  # before the watch synced
    pods.replace("ns", [])
    assert kube.list("v1", "Pod", "ns", selector) == []  # from the store
    assert len(kube.list("v1", "Pod", "ns", "app!=x")) == 1  # a selector it cannot answer
    assert len(requests) == 2


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
        return Outcome(status={"phase": "Ready"})

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
    assert dispatcher.statuses() == {("ns", "iris"): {"phase": "Ready"}}


def test_a_due_object_is_read_fresh_and_a_missing_one_forgotten(
    monkeypatch: pytest.MonkeyPatch, requests: list[tuple[str, str]]
) -> None:
    ran: list[str] = []

    def record(body: Any, *_: Any, **__: Any) -> Outcome:
        ran.append(body["metadata"]["resourceVersion"])
        return Outcome(status={"phase": "Progressing"}, requeue_after=60)

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
        return Outcome(status={"phase": "Ready"})

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
        return Outcome(status={"phase": "Ready"}, requeue_after=5)

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
