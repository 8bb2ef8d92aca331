"""Cluster access for the user commands: a `Kube` from the user's kubeconfig, the namespace
kubectl would use, one ModelDeployment read with errors a user understands."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from modeldeploy.api import API_VERSION, KIND
from modeldeploy.commands import CommandError

__all__ = [
    "add_cluster_arguments",
    "api_errors",
    "connect",
    "current_namespace",
    "get_deployment",
]

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
T = TypeVar("T")


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        "-n",
        default=None,
        help="namespace of the ModelDeployment (default: the kubeconfig context's, else default)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config; in a pod its "
        "ServiceAccount)",
    )


def current_namespace(kubeconfig: str | None) -> str:
    """The namespace kubectl would use: the current context's, in a pod its own, else default."""
    from kubernetes import config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
    try:
        _, active = config.list_kube_config_contexts(
            config_file=kubeconfig or os.environ.get("KUBECONFIG")
        )
    except (config.ConfigException, OSError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def connect(kubeconfig: str | None) -> Any:
    """A `modeldeploy.kube.Kube` for the user's credentials."""
    from kubernetes import config

    from modeldeploy.kube import Kube, api_client_from_environment

    try:
        return Kube(api_client_from_environment(kubeconfig), field_manager="modeldeploy-cli")
    except (config.ConfigException, OSError) as error:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CommandError(f"cannot load the kubeconfig {where}: {error}") from None


@contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Turn API and connection failures during ``action`` into one-line errors."""
    from kubernetes.client.exceptions import ApiException

    from modeldeploy.kube import error_message, is_connection_error

    try:
        yield
    except ApiException as error:
        if error.status == 0:
            raise CommandError(f"cannot {action}: {error.reason}") from None
        raise CommandError(
            f"cannot {action}: the API server answered {error.status}: {error_message(error)}"
        ) from None
    except Exception as error:
        if is_connection_error(error):
            detail = error if isinstance(error, OSError | TimeoutError) else _first_line(error)
            raise CommandError(f"cannot {action}: cannot reach the API server: {detail}") from None
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def call(action: str, function: Callable[[], T]) -> T:
    with api_errors(action):
        return function()


def get_deployment(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    """The ModelDeployment as stored (a dict), or a clear error when there is none."""
    found = call(
        f"read ModelDeployment {name!r} in namespace {namespace!r}",
        lambda: kube.get(API_VERSION, KIND, namespace, name),
    )
    if found is None:
        raise CommandError(
            f"ModelDeployment {name!r} not found in namespace {namespace!r} "
            "(kubectl get mdep -A lists them)"
        )
    return dict(found)


def target(args: argparse.Namespace) -> tuple[Any, str]:
    """(Kube, namespace) for commands that take --namespace and --kubeconfig."""
    kube = connect(args.kubeconfig)
    return kube, args.namespace or current_namespace(args.kubeconfig)
