"""``modeldeploy operator``: run the kopf operator with flags and environment."""

from __future__ import annotations

import argparse
import logging
import os
import random
import socket
import urllib.parse
from typing import Any

from modeldeploy.api import parse_quantity
from modeldeploy.config import (
    DEFAULT_MODEL_SIZE_LIMIT,
    DEFAULT_SERVER_IMAGE,
    OperatorConfig,
    Policy,
)
from modeldeploy.kube import Kube, api_client_from_environment
from modeldeploy.leadership import LeaseTiming


def _quantity(text: str) -> str:
    """A positive Kubernetes quantity of bytes, checked when the flags are read."""
    try:
        value = parse_quantity(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Kubernetes quantity") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of bytes")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[n for n in env("MODELDEPLOY_NAMESPACES", "").split(",") if n],
        help="namespace to watch (repeatable; env MODELDEPLOY_NAMESPACES, comma-separated)",
    )
    parser.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--standalone",
        action="store_true",
        default=env("MODELDEPLOY_STANDALONE") == "true",
        help="act at once, without leader election (never run two standalone replicas)",
    )
    election = parser.add_argument_group(
        "leader election", "replicas elect the one that acts through a coordination.k8s.io Lease"
    )
    election.add_argument(
        "--leader-election-name",
        default=env("MODELDEPLOY_LEADER_ELECTION_NAME", "modeldeploy"),
        help="name of the Lease shared by the replicas of one installation (default modeldeploy)",
    )
    election.add_argument(
        "--leader-election-namespace",
        default=env("MODELDEPLOY_LEADER_ELECTION_NAMESPACE") or env("POD_NAMESPACE") or None,
        help="namespace of the Lease (default: the pod's namespace, else the first --namespace)",
    )
    for flag, default, what in (
        ("--lease-duration", LeaseTiming.lease_seconds, "a Lease stays held after its last "
         "renewal: the longest a new leader waits when the old one died"),
        ("--renew-deadline", LeaseTiming.renew_seconds, "the leader stops acting when it "
         "could not renew for this long"),
        ("--retry-period", LeaseTiming.retry_seconds, "between attempts to acquire or renew"),
    ):  # fmt: skip
        variable = "MODELDEPLOY_" + flag[2:].upper().replace("-", "_")
        election.add_argument(
            flag,
            type=int,
            default=int(env(variable, str(default))),
            help=f"seconds {what} (default {default}; env {variable})",
        )
    parser.add_argument(
        "--liveness",
        default=env("MODELDEPLOY_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="liveness endpoint URL (empty to disable)",
    )
    parser.add_argument(
        "--metrics-address",
        default=env("MODELDEPLOY_METRICS_ADDRESS", ""),
        help="host:port of the operator's Prometheus metrics, e.g. 0.0.0.0:8080 (default: off)",
    )
    parser.add_argument(
        "--server-image",
        default=env("MODELDEPLOY_SERVER_IMAGE", DEFAULT_SERVER_IMAGE),
        help="serving image for ModelDeployments that do not name one",
    )
    parser.add_argument(
        "--model-size-limit",
        type=_quantity,
        default=env("MODELDEPLOY_MODEL_SIZE_LIMIT", DEFAULT_MODEL_SIZE_LIMIT),
        help="largest model file a pod downloads when spec.model.sizeLimit is unset, a "
        f"Kubernetes quantity (default {DEFAULT_MODEL_SIZE_LIMIT}); sizes the model volume too",
    )
    parser.add_argument(
        "--prometheus-address",
        default=env("MODELDEPLOY_PROMETHEUS_ADDRESS") or None,
        help="Prometheus for canary analysis when a ModelDeployment names none",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=env("MODELDEPLOY_LOG_FORMAT", "json"),
        help="structured JSON lines (default) or text",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env("MODELDEPLOY_RESYNC_SECONDS", "120")),
        help="interval of the periodic pass over every ModelDeployment",
    )
    _add_policy_arguments(parser)
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig path")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def _listed(name: str) -> list[str]:
    return [item for item in os.environ.get(name, "").split(",") if item]


def _add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the policy (``modeldeploy.policy``): what a ModelDeployment may ask for."""
    env = os.environ.get
    policy = parser.add_argument_group(
        "policy", "what a ModelDeployment may ask for (a spec that breaks a rule is refused)"
    )
    for flag, variable, what, empty in (
        ("--allowed-image", "IMAGES", "registry, repository or image spec.runtime.image may be "
         "under", "any"),
        ("--allowed-service-account", "SERVICE_ACCOUNTS", "ServiceAccount the pods may run as",
         "any"),
        ("--allowed-priority-class", "PRIORITY_CLASSES", "PriorityClass the pods may use",
         "any but the built-in system-* ones"),
    ):  # fmt: skip
        policy.add_argument(
            flag,
            action="append",
            default=_listed(f"MODELDEPLOY_ALLOWED_{variable}"),
            help=f"{what} (repeatable; env MODELDEPLOY_ALLOWED_{variable}, comma-separated; "
            f"none given: {empty})",
        )
    for flag, variable, what in (
        ("--allow-env-value-from", "ENV_VALUE_FROM", "runtime.env may read Secrets and "
         "ConfigMaps (valueFrom)"),
        ("--allow-load-balancer", "LOAD_BALANCER", "spec.service.type may be LoadBalancer"),
    ):  # fmt: skip
        policy.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=env(f"MODELDEPLOY_ALLOW_{variable}", "true") == "true",
            help=f"whether {what} (default: yes)",
        )
    policy.add_argument(
        "--tolerations",
        choices=["Any", "Keyed", "None"],
        default=env("MODELDEPLOY_TOLERATIONS", "Keyed"),
        help="tolerations the pods may have: Any, Keyed (each names a taint key, default) or None",
    )
    policy.add_argument(
        "--max-model-size",
        type=_quantity,
        default=env("MODELDEPLOY_MAX_MODEL_SIZE") or None,
        help="largest spec.model.sizeLimit a ModelDeployment may set (default: no cap)",
    )


def policy_of(args: argparse.Namespace) -> Policy:
    """The policy the flags describe; exits when it contradicts --model-size-limit."""
    if args.max_model_size and parse_quantity(args.model_size_limit) > parse_quantity(
        args.max_model_size
    ):
        raise SystemExit(
            f"modeldeploy operator: --model-size-limit {args.model_size_limit} is above "
            f"--max-model-size {args.max_model_size}"
        )
    return Policy(
        allowed_images=tuple(args.allowed_image),
        allowed_service_accounts=tuple(args.allowed_service_account),
        allowed_priority_classes=tuple(args.allowed_priority_class),
        allow_env_value_from=args.allow_env_value_from,
        allow_load_balancer=args.allow_load_balancer,
        tolerations=args.tolerations,
        max_model_size=args.max_model_size,
    )


def _addresses(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    """(family, socket address) a server listening on ``host:port`` binds, as asyncio does."""
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return []  # not resolvable here: the server's own error names it
    return [(family, address) for family, _, _, _, address in found]


def listen_addresses(args: argparse.Namespace) -> list[tuple[str, str, str, int]]:
    """(flag, environment variable, host, port) of each port the operator listens on: the
    liveness endpoint (read the way kopf reads it) and the metrics."""
    wanted = []
    liveness = urllib.parse.urlsplit(args.liveness or "")
    if liveness.scheme == "http":
        host, port = liveness.hostname or "localhost", liveness.port or 80
        wanted.append(("--liveness", "MODELDEPLOY_LIVENESS", host, port))
    host, _, port_text = (args.metrics_address or "").rpartition(":")
    if port_text.isdigit():
        metrics = ("--metrics-address", "MODELDEPLOY_METRICS_ADDRESS", host or "0.0.0.0")
        wanted.append((*metrics, int(port_text)))
    return wanted


def check_ports_free(args: argparse.Namespace) -> None:
    """Exit with the flag to change when a port the operator would listen on is taken (say, by
    another operator on the same machine); otherwise kopf fails later with a bare ``OSError``.

    A port taken between this check and the server's start still fails the old way."""
    for flag, variable, host, port in listen_addresses(args):
        for family, address in _addresses(host, port):
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # As the servers do: a port left in TIME_WAIT is free, one listened on is not.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                except OSError as error:
                    off = ", or an empty value to turn it off" if flag == "--liveness" else ""
                    raise SystemExit(
                        f"modeldeploy operator: cannot listen on {host}:{port} for {flag}: "
                        f"{error.strerror or error} (another operator on this machine?): give "
                        f"{flag} (env {variable}) another port{off}"
                    ) from None


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def lease_namespace(args: argparse.Namespace) -> str:
    """Where the replicas' Lease lives: the flag, else the pod's own namespace, else the first
    watched namespace; a cluster-wide operator outside a pod must say."""
    if args.leader_election_namespace:
        return str(args.leader_election_namespace)
    if os.path.exists(SERVICE_ACCOUNT_NAMESPACE) and os.environ.get("KUBERNETES_SERVICE_HOST"):
        with open(SERVICE_ACCOUNT_NAMESPACE) as namespace:
            return namespace.read().strip()
    if args.namespace:
        return str(args.namespace[0])
    raise SystemExit(
        "modeldeploy operator: give --leader-election-namespace (env "
        "MODELDEPLOY_LEADER_ELECTION_NAMESPACE) for the Lease of an operator watching all "
        "namespaces from outside a pod, or --standalone for a single replica"
    )


def lease_timing(args: argparse.Namespace) -> LeaseTiming:
    """The flags' timing; exits when the election could not work with it."""
    timing = LeaseTiming(args.lease_duration, args.renew_deadline, args.retry_period)
    if not timing.lease_seconds > timing.renew_seconds > 1.2 * timing.retry_seconds >= 1.2:
        raise SystemExit(
            "modeldeploy operator: leader election needs --lease-duration > --renew-deadline > "
            "1.2 x --retry-period >= 1.2 seconds; got "
            f"{timing.lease_seconds}, {timing.renew_seconds}, {timing.retry_seconds}"
        )
    return timing


def wire(args: argparse.Namespace, config: OperatorConfig) -> dict[str, Any]:
    """The one place where the operator's parts are put together: the API client, the Event
    recorder, the controller and (unless standalone) the leader election; kopf's memo."""
    from modeldeploy.controller import Controller
    from modeldeploy.events import EventRecorder
    from modeldeploy.leadership import Leadership
    from modeldeploy.metrics import serve as serve_metrics

    api_client = api_client_from_environment(args.kubeconfig)
    kube = Kube(api_client, field_manager=config.field_manager)
    controller = Controller(kube, config, EventRecorder(kube, config.identity).sink)
    leadership = None
    if not args.standalone:
        leadership = Leadership(
            api_client,
            lease_namespace(args),
            args.leader_election_name,
            config.identity,
            lease_timing(args),
            on_started=controller.started_leading,
            on_stopped=controller.stopped_leading,
        )
        controller.leads = leadership.leads
    if config.metrics_address:
        serve_metrics(config.metrics_address, controller.statuses)
    return {"config": config, "kube": kube, "controller": controller, "leadership": leadership}


def run_operator(args: argparse.Namespace) -> int:
    """Start kopf with the handlers of :mod:`modeldeploy.handlers`; returns when it stops."""
    import kopf

    from modeldeploy import handlers  # noqa: F401  (registers the handlers)

    if not args.namespace and not args.all_namespaces:
        raise SystemExit(
            "modeldeploy operator: give --namespace NS (repeatable) or --all-namespaces"
        )
    check_ports_free(args)
    if not args.standalone:
        lease_timing(args)
        lease_namespace(args)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("modeldeploy").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # The election package logs each attempt; ours says when leadership comes, goes or waits.
    logging.getLogger("leaderelection").setLevel(logging.WARNING)
    if not args.verbose:
        # kopf logs every child event's handler at INFO; our "reconciled" lines say what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it too
    config = OperatorConfig(
        server_image=args.server_image,
        prometheus_address=args.prometheus_address,
        model_size_limit=args.model_size_limit,
        policy=policy_of(args),
        namespaces=tuple(args.namespace),
        resync_seconds=args.resync_seconds,
        metrics_address=args.metrics_address or None,
        identity=f"modeldeploy@{socket.gethostname()}/{os.getpid()}-{random.randint(0, 99999)}",
    )
    kopf.run(
        standalone=True,  # kopf's peering is off: the Lease elects the replica that acts
        # kopf's own default asks the passwd file, which the image's user is not in. Its type,
        # Identity, is a NewType of str in a private module: not imported.
        identity=config.identity,  # type: ignore[arg-type]
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(wire(args, config)),
    )
    return 0
