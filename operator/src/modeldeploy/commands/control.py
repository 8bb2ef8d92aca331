"""``modeldeploy promote NAME`` and ``modeldeploy abort NAME``: steer a canary by hand.

Both set an annotation on the ModelDeployment with a merge patch (what ``kubectl annotate``
does); the operator acts on it at its next tick, removes it, and records the outcome in
status.history.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from modeldeploy.api import ABORT_ANNOTATION, API_VERSION, KIND, PROMOTE_ANNOTATION
from modeldeploy.commands import CommandError, cluster

__all__ = ["add_arguments", "annotation_patch", "consequence", "run"]

ANNOTATIONS = {"promote": PROMOTE_ANNOTATION, "abort": ABORT_ANNOTATION}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="name of the ModelDeployment")
    cluster.add_cluster_arguments(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="set the annotation even when this status shows no canary (e.g. the status is "
        "behind); the operator removes it at its next reconcile and acts on it only if a "
        "canary is under way then",
    )


def annotation_patch(action: str) -> dict[str, Any]:
    """The merge patch that asks the operator to ``action`` ("promote" or "abort")."""
    return {"metadata": {"annotations": {ANNOTATIONS[action]: "true"}}}


def consequence(action: str, obj: dict[str, Any]) -> str:
    """What the operator will do, in the words of this object's status."""
    status = obj.get("status") or {}
    canary = status.get("canary") or {}
    stable = (status.get("stable") or {}).get("uri", "the stable model")
    new = canary.get("uri", "the canary's model")
    weight = f" (now at {canary['weight']}% of traffic)" if "weight" in canary else ""
    if action == "promote":
        return (
            f"The canary {new}{weight} will be promoted, skipping the remaining steps and "
            f"analysis: the stable track takes that model and the canary is removed."
        )
    return (
        f"The canary {new}{weight} will be rolled back: all traffic returns to {stable}, the "
        f"canary is removed, and the rollout is recorded as RolledBack (Aborted). It is not "
        f"retried until spec.model changes again."
    )


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    action = args.command
    kube, namespace = cluster.target(args)
    obj = cluster.get_deployment(kube, namespace, args.name)
    canary = (obj.get("status") or {}).get("canary")
    where = f"ModelDeployment {args.name!r} in namespace {namespace!r}"
    if not canary and not args.force:
        raise CommandError(
            f"{where} has no canary under way (status.canary is unset): nothing to {action}. "
            "Change spec.model to start a rollout, or pass --force to set the annotation anyway"
        )
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    other = ABORT_ANNOTATION if action == "promote" else PROMOTE_ANNOTATION
    if annotations.get(other) == "true":
        print(f"Note: {other} is set too; the operator decides which wins.", file=out)
    cluster.call(
        f"annotate {where}",
        lambda: kube.patch(API_VERSION, KIND, namespace, args.name, annotation_patch(action)),
    )
    print(f"Set {ANNOTATIONS[action]}=true on {where}.", file=out)
    if canary:
        print(consequence(action, obj), file=out)
    else:
        print(
            "The status shows no canary: the operator removes the annotation at its next "
            "reconcile and acts on it only if a canary is under way by then.",
            file=out,
        )
    print(f"Follow it with: modeldeploy status {args.name} -n {namespace}", file=out)
    return 0
