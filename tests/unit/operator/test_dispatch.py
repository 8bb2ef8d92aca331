"""Coalescing of reconciles and the child store (threads and data only; no cluster)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from modeldeploy import dispatch
from modeldeploy.dispatch import ChildStore, Dispatcher
from modeldeploy.reconcilers import Outcome
from modeldeploy.settings import OperatorSettings


def child(rv: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"namespace": "ns", "name": "iris", "resourceVersion": rv},
        "spec": {"replicas": replicas},
    }


def test_store_keeps_the_newest_version_and_forgets_deleted() -> None:
    store = ChildStore()
    store.put(child("10", replicas=2))
    store.put(child("9", replicas=1))  # an older event arriving late
    assert store.get("Deployment", "ns", "iris")["spec"]["replicas"] == 2  # type: ignore[index]
    store.put(child("11", replicas=3))
    assert store.get("Deployment", "ns", "iris")["spec"]["replicas"] == 3  # type: ignore[index]
    assert ("Deployment", "ns", "iris") in store
    store.drop("Deployment", "ns", "iris")
    assert store.get("Deployment", "ns", "iris") is None


class FakeKube:
    """Stands in for the API port: the dispatcher re-reads the object before a re-run."""

    client = None
    field_manager = "modeldeploy"
    timeout = 1.0


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
    latest = {"metadata": {"uid": "u", "namespace": "ns", "name": "iris", "resourceVersion": "3"}}
    monkeypatch.setattr(dispatch.Kube, "get", lambda *_: latest)
    dispatcher = Dispatcher(FakeKube(), OperatorSettings(), lambda _body: lambda *_: None)  # type: ignore[arg-type]
    body = {"metadata": {"uid": "u", "namespace": "ns", "name": "iris", "resourceVersion": "1"}}
    first = threading.Thread(target=dispatcher.run, args=(body,))
    first.start()
    assert started.wait(5)
    for rv in ("2", "2b", "2c"):  # a burst of events while the first pass runs
        dispatcher.run({"metadata": {**body["metadata"], "resourceVersion": rv}})
    release.set()
    first.join(5)
    assert calls == ["1", "3"]  # one pass, then exactly one re-run with a fresh body
    dispatcher.run(body)
    assert calls == ["1", "3", "1"]  # idle again: runs at once
