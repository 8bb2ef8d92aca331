"""The operator's one port to the Kubernetes API: get, list, create, apply, delete, status.

A thin layer over the official client's ``ApiClient`` working on plain dicts, so builders and
comparisons never see client model classes.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from modeldeploy.resources import RESOURCES

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def is_connection_error(error: BaseException) -> bool:
    """The API server could not be reached (refused, reset, timed out), whatever raised it."""
    return isinstance(error, OSError | TimeoutError) or type(error).__module__.startswith("urllib3")


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying with backoff: throttling, server trouble, lost connections."""
    if isinstance(error, ApiException):
        return error.status in TRANSIENT_STATUSES or error.status == 0
    return is_connection_error(error)


class NotLeading(RuntimeError):
    """A write refused before it was sent: this replica no longer leads (another one acts)."""


def error_message(error: ApiException) -> str:
    """The API server's own message from an error response (its Status ``message``)."""
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.body or error.reason)


def resource_path(
    api_version: str, kind: str, namespace: str | None, name: str | None = None
) -> str:
    plural = RESOURCES[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


def api_client_from_environment(kubeconfig: str | None = None) -> Any:
    """In a pod: the ServiceAccount. Elsewhere: ``kubeconfig``, $KUBECONFIG or ~/.kube/config."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"))


@dataclass
class Kube:
    """Typed-enough access to the API for the operator; every call is one HTTP request."""

    client: ApiClient
    field_manager: str = "modeldeploy"
    timeout: float = 30
    fence: Callable[[], bool] | None = None
    """Asked before every write; False refuses it (``NotLeading``). A replica that was frozen
    mid-reconcile (a stopped process, a long pause) wakes up still holding that reconcile's
    stale view: its writes must not land after another replica took over and moved on."""

    def _call(self, method: str, path: str, **request: Any) -> Any:
        """:meth:`_request`, once the fence lets a write through."""
        if method != "GET" and self.fence is not None and not self.fence():
            raise NotLeading(f"{method} {path} not sent: this replica no longer leads")
        return self._request(method, path, **request)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        method, url, headers, payload, _ = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(
            method, url, header_params=headers, body=payload, _request_timeout=self.timeout
        )
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return json.loads(response.data) if response.data else {}

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return dict(self._call("GET", resource_path(api_version, kind, namespace, name)))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Objects of a kind in one namespace (or all namespaces when None)."""
        return self.list_with_version(api_version, kind, namespace, label_selector)[0]

    def list_with_version(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:  # `list` here is the method
        """Like :meth:`list`, with the resourceVersion the list was taken at: where a watch
        resumes from, and what tells a cached object newer than the list."""
        query = [("labelSelector", label_selector)] if label_selector else []
        result = self._call("GET", resource_path(api_version, kind, namespace), query=query)
        version = (result.get("metadata") or {}).get("resourceVersion")
        return list(result.get("items", [])), str(version or "")

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST a new object (an Event)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return dict(self._call("POST", path, body=obj))

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under our field manager, taking over conflicting fields."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return dict(
            self._call(
                "PATCH",
                path,
                body=obj,
                query=[("fieldManager", self.field_manager), ("force", "true")],
                content_type="application/apply-patch+yaml",
            )
        )

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete in the background; False when it was already gone."""
        try:
            self._call(
                "DELETE",
                resource_path(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
            )
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """A JSON merge patch of the object (e.g. removing an annotation with a null)."""
        return dict(
            self._call(
                "PATCH",
                resource_path(api_version, kind, namespace, name),
                body=patch,
                query=[("fieldManager", self.field_manager)],
                content_type="application/merge-patch+json",
            )
        )

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace ``.status`` through the status subresource (a merge patch)."""
        path = resource_path(api_version, kind, namespace, name) + "/status"
        return dict(
            self._call(
                "PATCH",
                path,
                body={"status": status},
                query=[("fieldManager", self.field_manager)],
                content_type="application/merge-patch+json",
            )
        )
