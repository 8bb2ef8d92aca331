"""The cache fed by watches: the store of children and serving pods, and the reads it answers
(data only; no cluster: the API port is replaced where it is called)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modeldeploy.cache import (
    CachingKube,
    Store,
    equality_selector,
    resource_version,
    version_number,
)
from modeldeploy.kube import Kube
from modeldeploy.reconcilers.pods import trim_pod


def child(rv: str, replicas: int = 1, name: str = "iris") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv},
        "spec": {"replicas": replicas},
    }


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
    """Stands in for the API port where a caching one is built (it copies these fields)."""

    client = None
    field_manager = "modeldeploy"
    timeout = 1.0


ANSWERS: dict[str, Any] = {}


def answer_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every request the API port would send, answered from ``ANSWERS`` by path (or 404)."""
    sent: list[tuple[str, str]] = []

    def call(_self: Any, method: str, path: str, **kwargs: Any) -> Any:
        sent.append((method, path + "?" + "&".join(f"{k}={v}" for k, v in kwargs.get("query", []))))
        if path in ANSWERS:
            return ANSWERS[path]
        raise ApiException(status=404, reason="Not Found")

    monkeypatch.setattr(Kube, "_call", call)
    ANSWERS.clear()
    return sent


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    return answer_requests(monkeypatch)


# The child store ----------------------------------------------------------------------------


def test_store_keeps_the_newest_version_and_forgets_deleted() -> None:
    store = Store()
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
    store = Store()
    kube = CachingKube(FakeKube(), store)  # type: ignore[arg-type]
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
    store = Store()
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


@pytest.mark.parametrize(
    ("version", "number"), [("42", 42), (7, 7), ("", 0), (None, 0), ("not-a-number", 0)]
)
def test_resource_versions_compare_as_numbers(version: str | int | None, number: int) -> None:
    assert version_number(version) == number
    assert resource_version({"metadata": {"resourceVersion": version}}) == number
    assert resource_version({"metadata": {}}) == 0


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
        # Container names and states explain failures; readiness, images and the rest do not.
        "containerStatuses": [{"name": "server"}],
    }
    assert "spec" not in trimmed


def stored(*pods: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**trim_pod(p), "kind": "Pod"} for p in pods]


def names(pods: list[dict[str, Any]] | None) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods or [])


def test_the_store_answers_pod_selectors_once_pods_were_listed() -> None:
    store = Store()
    selector = "serving.modeldeploy.io/deployment=iris,serving.modeldeploy.io/track=stable"
    assert store.select("Pod", "ns", selector) is None  # not listed yet: the caller must list
    pods = stored(pod("p1"), pod("p2", track="canary"), pod("w1", owner="wine"))
    store.refresh("Pod", "ns", pods, version=1)
    assert names(store.select("Pod", "ns", selector)) == ["p1"]
    assert store.select("Pod", "ns", "serving.modeldeploy.io/deployment!=iris") is None
    assert store.select("Pod", "other", selector) is None  # a namespace never listed
    store.put(stored(pod("p3", rv="2"))[0])
    store.drop("Pod", "ns", "p1", version=3)
    assert names(store.select("Pod", "ns", selector)) == ["p3"]
    store.refresh("Pod", None, stored(pod("p9", rv="4")), version=4)  # every namespace
    assert names(store.select("Pod", "other", selector)) == []
    assert names(store.select("Pod", "ns", selector)) == ["p9"]


def test_pod_lists_come_from_the_store_when_it_can_answer(
    requests: list[tuple[str, str]],
) -> None:
    store = Store()
    kube = CachingKube(FakeKube(), store)  # type: ignore[arg-type]
    ANSWERS["/api/v1/namespaces/ns/pods"] = {"items": [pod("p1")]}
    selector = "serving.modeldeploy.io/deployment=iris,serving.modeldeploy.io/track=stable"
    assert len(kube.list("v1", "Pod", "ns", selector)) == 1  # before any list of pods
    store.refresh("Pod", "ns", [], version=1)
    assert kube.list("v1", "Pod", "ns", selector) == []  # from the store
    assert len(kube.list("v1", "Pod", "ns", "app!=x")) == 1  # a selector it cannot answer
    assert len(requests) == 2


def test_a_child_whose_delete_failed_is_still_known_and_deleted_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store()
    kube = CachingKube(FakeKube(), store)  # type: ignore[arg-type]
    store.refresh("Deployment", "ns", [child("5")], version=5)
    answers: list[Exception | dict[str, Any]] = [ApiException(status=503), {}]

    def call(_self: Any, method: str, path: str, **_: Any) -> Any:
        assert method == "DELETE"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(Kube, "_call", call)
    with pytest.raises(ApiException):
        kube.delete("apps/v1", "Deployment", "ns", "iris")
    # Still there: the next reconcile must see it (not "known absent") and delete it again.
    assert ("Deployment", "ns", "iris") in store
    assert not store.known_absent("Deployment", "ns", "iris")
    assert kube.delete("apps/v1", "Deployment", "ns", "iris")
    assert store.known_absent("Deployment", "ns", "iris")
