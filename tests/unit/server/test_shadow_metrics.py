"""Shadow metrics across workers: summed on scrape, kept when a worker dies, and rendered."""

from __future__ import annotations

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from modeldeploy_server.metrics import WorkerMetrics, aggregate, render, retired


def _worker(index: int, wrong: list[bool]) -> WorkerMetrics:
    metrics = WorkerMetrics(index)
    from modeldeploy_server.shadow_metrics import ShadowTally

    tally = metrics.shadow = ShadowTally("iris")
    disagree = np.array(wrong)
    tally.record(
        disagree,
        [("petal_length", "[4.7, 5.1)", len(wrong), int(disagree.sum()))],
        probability_difference=np.where(disagree, 0.6, 0.0),
    )
    tally.drop("queue_full", 2)
    return metrics


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_shadow_counters_are_summed_over_workers_and_rendered() -> None:
    snapshots = [_worker(0, [True, False]).snapshot(), _worker(1, [False, False, True]).snapshot()]
    text, _ = render(aggregate(snapshots), "iris", "stable", None)
    samples = _samples(text)
    base = (("deployment", "iris"), ("model", "iris"), ("track", "stable"))
    sliced = tuple(sorted((*base, ("feature", "petal_length"), ("bin", "[4.7, 5.1)"))))
    assert samples[("modeldeploy_shadow_rows_total", base)] == 5
    assert samples[("modeldeploy_shadow_disagreeing_rows_total", base)] == 2
    assert samples[("modeldeploy_shadow_slice_rows_total", sliced)] == 5
    assert samples[("modeldeploy_shadow_disagreements_total", sliced)] == 2
    dropped = tuple(sorted((*base, ("reason", "queue_full"))))
    assert samples[("modeldeploy_shadow_dropped_total", dropped)] == 4
    le = tuple(sorted((*base, ("le", "0.5"))))
    assert samples[("modeldeploy_shadow_probability_difference_bucket", le)] == 3
    assert samples[("modeldeploy_shadow_probability_difference_count", base)] == 5
    assert not any(name.startswith("modeldeploy_shadow_abs_error") for name, _ in samples)


def test_a_server_that_never_mirrors_shows_no_shadow_metrics() -> None:
    text, _ = render(aggregate([WorkerMetrics(0).snapshot()]), "iris", "stable", None)
    assert b"modeldeploy_shadow" not in text


def test_copies_a_canary_answered_are_counted_apart_from_client_requests() -> None:
    metrics = WorkerMetrics(0)
    metrics.request_started("iris")
    metrics.request_done("iris", "v2-binary", 200, 0.001, shadow=True)
    text, _ = render(aggregate([metrics.snapshot()]), "iris", "canary", None)
    samples = _samples(text)
    labels = (("code", "200"), ("deployment", "iris"), ("model", "iris"), ("track", "canary"))
    assert samples[("modeldeploy_shadow_requests_total", labels)] == 1
    assert not any(name == "modeldeploy_requests_total" for name, _ in samples)


def test_a_retired_workers_shadow_counters_stay_in_the_sums() -> None:
    live, dead = _worker(0, [True]), _worker(1, [True, True])
    kept = aggregate([])
    kept.absorb(aggregate([retired(dead.snapshot())]))
    after = aggregate([live.snapshot()])
    after.absorb(kept)
    assert after.shadow.rows == 3 and after.shadow.disagreements == 3
    assert after.shadow.slice_rows == {("petal_length", "[4.7, 5.1)"): 3}
    assert after.shadow.dropped == {"queue_full": 4}
