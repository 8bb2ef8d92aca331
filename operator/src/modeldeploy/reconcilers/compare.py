"""Is a child already as we want it? A semantic comparison, so the steady state writes nothing."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from modeldeploy.api import parse_quantity

APPLIED_HASH = "serving.modeldeploy.io/applied-hash"


def desired_hash(desired: dict[str, Any]) -> str:
    """A stable digest of what we apply: it changes exactly when the desired object changes."""
    return hashlib.sha256(json.dumps(desired, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(desired: dict[str, Any]) -> dict[str, Any]:
    """``desired`` carrying its own digest as an annotation."""
    digest = desired_hash(desired)
    meta = dict(desired["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), APPLIED_HASH: digest}
    return {**desired, "metadata": meta}


def _same_quantity(want: Any, have: Any) -> bool:
    try:
        return bool(parse_quantity(str(want)) == parse_quantity(str(have)))
    except (ValueError, InvalidOperation, ArithmeticError):
        return False


def is_subset(want: Any, have: Any, *, quantities: bool = False) -> bool:
    """Every field of ``want`` has the same value in ``have`` (which may hold more).

    Lists must match element by element. Inside ``resources`` blocks, quantities compare by
    value ("1000m" equals "1"), as the API server normalises them.
    """
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        return all(
            key in have
            and is_subset(
                value,
                have[key],
                quantities=quantities or key in ("resources", "limits", "requests"),
            )
            for key, value in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h, quantities=quantities) for w, h in zip(want, have, strict=True))
        )
    if want == have:
        return True
    if (
        isinstance(want, int | float | Decimal)
        and isinstance(have, int | float)
        and not isinstance(want, bool)
    ):
        return float(want) == float(have)
    return quantities and _same_quantity(want, have)


def needs_apply(desired: dict[str, Any], existing: dict[str, Any] | None) -> bool:
    """True when applying ``desired`` (as built by :func:`with_hash`) would change anything.

    A changed desired object has a new digest (so fields we stopped setting get removed by the
    apply); a drifted child no longer contains what we want (so the apply restores it).
    """
    if existing is None:
        return True
    applied = existing.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH)
    wanted = desired["metadata"].get("annotations", {}).get(APPLIED_HASH)
    if applied != wanted:
        return True
    return not is_subset(
        {k: v for k, v in desired.items() if k != "status"},
        existing,
    )
