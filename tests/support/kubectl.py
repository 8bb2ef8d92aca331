"""Reading and applying objects through the local control plane's kubectl, for the tests."""

from __future__ import annotations

import json
from typing import Any

from modeldeploy.api import API_VERSION, KIND

__all__ = ["apply_md", "condition", "get"]


def get(
    cluster: Any, kind: str, namespace: str | None, name: str, *extra: str
) -> dict[str, Any] | None:
    """The object as JSON, or None when kubectl cannot get it (e.g. it does not exist)."""
    scope = ["-n", namespace] if namespace else []
    result = cluster.kubectl("get", kind, name, *scope, "-o", "json", *extra, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def apply_md(
    cluster: Any, namespace: str, name: str, spec: dict[str, Any], *, server_side: bool = False
) -> None:
    """``kubectl apply`` a ModelDeployment with ``spec`` (client-side apply unless asked)."""
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    how = ["--server-side"] if server_side else []
    cluster.kubectl("apply", *how, "-f", "-", input=json.dumps(manifest))


def condition(md: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """The condition of type ``kind`` in the object's status ({} when absent)."""
    for c in (md or {}).get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return dict(c)
    return {}
