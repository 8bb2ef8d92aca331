"""The threads beside kopf's handlers: the timed re-reconciles (threads and data only; no
cluster: the API port is replaced where it is called)."""

from __future__ import annotations

import threading
import time

import kopf
import pytest

from modeldeploy import dispatch, handlers
from modeldeploy.dispatch import Dispatcher
from modeldeploy.settings import OperatorSettings
from tests.unit.operator.test_cache import FakeKube, answer_requests
from tests.unit.operator.test_dispatch import SlowPrometheus, analysing, serve


def test_one_rollout_waiting_on_a_slow_prometheus_stalls_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answer_requests(monkeypatch)
    source = SlowPrometheus(slow="slow")
    monkeypatch.setattr(dispatch, "reconcile", analysing(source))
    config = OperatorSettings()
    kube = FakeKube()
    memo = kopf.Memo(config=config, kube=kube)
    memo["dispatcher"] = Dispatcher(kube, config, lambda _body: lambda *_: None)  # type: ignore[arg-type]
    stop = threading.Event()
    requeue = threading.Thread(target=handlers._requeue_forever, args=(memo, stop))
    requeue.start()
    try:
        (slow,), (fast,) = serve(["slow"]), serve(["fast"])
        memo["dispatcher"].requeues.set(*slow, -1)  # due first
        memo["dispatcher"].requeues.set(*fast, 0)
        deadline = time.monotonic() + 3
        while "fast" not in source.answered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.answered == ["fast"]  # while the slow analysis still waits
    finally:
        source.release.set()
        stop.set()
        memo["dispatcher"].requeues.wake()
        requeue.join(5)
        memo["dispatcher"].stop()
