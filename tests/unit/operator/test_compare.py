"""The semantic comparison that keeps the steady state free of writes."""

from __future__ import annotations

import pytest

from modeldeploy.reconcilers.compare import APPLIED_HASH, is_subset, needs_apply, with_hash


@pytest.mark.parametrize(
    ("want", "have", "same"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 0}}, True),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1, "defaulted": True}]}, True),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1}, {"x": 2}]}, False),
        ({"resources": {"cpu": "1000m"}}, {"resources": {"cpu": "1"}}, True),
        ({"resources": {"memory": "1Gi"}}, {"resources": {"memory": "1073741824"}}, True),
        ({"resources": {"cpu": "2"}}, {"resources": {"cpu": "1"}}, False),
        ({"name": "1000m"}, {"name": "1"}, False),  # quantities only inside resources
        ({"a": None}, {}, False),
        ({"n": 1}, {"n": 1.0}, True),
    ],
)
def test_is_subset(want: object, have: object, same: bool) -> None:
    assert is_subset(want, have) is same


def _child(**spec: object) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "n"},
        "spec": dict(spec),
    }


def test_needs_apply_when_missing_changed_or_drifted() -> None:
    desired = with_hash(_child(port=1))
    assert needs_apply(desired, None)
    stored = {
        **desired,
        "metadata": {**desired["metadata"], "uid": "x"},
        "spec": {"port": 1, "clusterIP": "10.0.0.3"},
    }
    assert not needs_apply(desired, stored)  # the server's additions are not drift
    drifted = {**stored, "spec": {"port": 2}}
    assert needs_apply(desired, drifted)
    changed = with_hash(_child(port=1, type="NodePort"))
    assert (
        changed["metadata"]["annotations"][APPLIED_HASH]
        != desired["metadata"]["annotations"][APPLIED_HASH]
    )
    assert needs_apply(changed, stored)
