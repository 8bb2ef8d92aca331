"""The chart rendered under several value sets: lint, the API server's validation, the exact
RBAC rules of each mode, the security settings, and the schema refusing wrong values."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from modeldeploy.api import ModelDeployment
from modeldeploy.builders import build_service
from tests.integration.chart.conftest import CHART, Helm, create_namespace

pytestmark = pytest.mark.integration

RELEASE = "md"  # contains no "modeldeploy": the objects are named md-modeldeploy
FULLNAME = "md-modeldeploy"
PROMETHEUS_OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}

# Exactly what the operator is granted, as (apiGroup, resource, verbs, resourceNames).
CORE_RULES = {
    ("serving.modeldeploy.io", "modeldeployments", ("get", "list", "watch", "patch"), ()),
    ("serving.modeldeploy.io", "modeldeployments/status", ("patch",), ()),
    ("serving.modeldeploy.io", "modeldeployments/finalizers", ("update",), ()),
    ("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete"), ()),
    ("", "services", ("get", "list", "watch", "create", "patch", "delete"), ()),
    ("", "configmaps", ("get", "list", "watch", "create", "patch"), ()),
    (
        "gateway.networking.k8s.io",
        "httproutes",
        ("get", "list", "watch", "create", "patch", "delete"),
        (),
    ),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        ("get", "list", "watch", "create", "patch", "delete"),
        (),
    ),
    ("policy", "poddisruptionbudgets", ("get", "list", "watch", "create", "patch", "delete"), ()),
    ("", "pods", ("list", "watch"), ()),
    ("", "events", ("create",), ()),
}
CRD_RULE = ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), ())
NAMESPACE_RULE = ("", "namespaces", ("list", "watch"), ())


# The leader election's Lease, in the release namespace: create cannot be narrowed by name.
LEASE_RULES = {
    ("coordination.k8s.io", "leases", ("create",), ()),
    ("coordination.k8s.io", "leases", ("get", "update", "patch"), (FULLNAME,)),
}
LEASE_ROLE = f"{FULLNAME}-leader-election"


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    flat = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                names = tuple(rule.get("resourceNames", ()))
                flat.add((group, resource, tuple(rule["verbs"]), names))
    return flat


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(objects, kind)
    return found


def leader_election_role(objects: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    """The Role of the Lease, checked to be in the release namespace and bound to the operator."""
    (role,) = [o for o in by_kind(objects, "Role") if o["metadata"]["name"] == LEASE_ROLE]
    assert role["metadata"]["namespace"] == namespace
    (binding,) = [o for o in by_kind(objects, "RoleBinding") if o["metadata"]["name"] == LEASE_ROLE]
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": LEASE_ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": namespace}
    ]
    return role


def other_roles(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The Roles or RoleBindings of the watched namespaces (not the Lease's)."""
    return [o for o in by_kind(objects, kind) if o["metadata"]["name"] != LEASE_ROLE]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (operator,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(operator)


@pytest.fixture(scope="module")
def namespaces(cluster: Any, modeldeployment_crd: str) -> Iterator[tuple[str, str]]:
    """The release namespace and one watched namespace."""
    created = (create_namespace(cluster, "chart-rel"), create_namespace(cluster, "chart-app"))
    yield created
    for name in created:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def value_sets(app: str) -> dict[str, dict[str, Any]]:
    return {
        "default": {},
        "namespaced": {"watchNamespaces": [app]},
        "peered": {"replicas": 2},
        "peered-namespaced": {"replicas": 2, "watchNamespaces": [app]},
        "existing-account": {
            "serviceAccount": {"create": False, "name": "platform-operator"},
            "rbac": {"create": False},
        },
        "everything": {
            "replicas": 3,
            "watchNamespaces": [app],
            "rbac": {"discovery": False},
            "image": {"digest": "sha256:" + "a" * 64},
            "imagePullSecrets": ["registry", {"name": "other-registry"}],
            "operator": {
                "serverImage": "registry.example.com/modeldeploy-server:1.2.3",
                "prometheusAddress": "http://prometheus.monitoring:9090",
                "logFormat": "text",
                "verbose": True,
                "resyncSeconds": 60,
                "extraArgs": ["--kubeconfig=/etc/modeldeploy/kubeconfig"],
                "extraEnv": [{"name": "TZ", "value": "UTC"}],
            },
            "serviceAccount": {"annotations": {"iam.example.com/role": "modeldeploy"}},
            "podAnnotations": {"example.com/team": "platform"},
            "podLabels": {"team": "platform"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {
                                    "matchLabels": {"app.kubernetes.io/name": "modeldeploy"}
                                },
                            },
                        }
                    ]
                }
            },
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "modeldeploy"}},
                }
            ],
            "priorityClassName": "system-cluster-critical",
            "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
            "networkPolicy": {
                "enabled": True,
                "apiServerCIDRs": ["10.0.0.1/32"],
                "healthFrom": [{"namespaceSelector": {}}],
                "extraEgress": [{"ports": [{"protocol": "TCP", "port": 9090}]}],
            },
            "policy": {
                "allowedImages": ["registry.example.com/ml/"],
                "allowedServiceAccounts": ["serving"],
                "allowedPriorityClasses": ["model-serving"],
                "allowEnvValueFrom": False,
                "allowLoadBalancer": False,
                "tolerations": "None",
                "maxModelSize": "4Gi",
            },
            "servingNetworkPolicy": {
                "enabled": True,
                "httpFrom": [{"namespaceSelector": {"matchLabels": {"gateway": "true"}}}],
            },
            "metrics": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
            },
        },
    }


def test_helm_lint_passes_strict_under_every_value_set(
    helm: Helm, namespaces: tuple[str, str]
) -> None:
    for name, values in value_sets(namespaces[1]).items():
        result = helm.run("lint", str(CHART), "--strict", "-f", helm.values_file(values))
        assert "0 chart(s) failed" in result.stdout, (name, result.stdout)


def test_every_value_set_is_accepted_by_the_api_server(
    cluster: Any, helm: Helm, namespaces: tuple[str, str]
) -> None:
    release_ns, app = namespaces
    for name, values in value_sets(app).items():
        objects = helm.template(RELEASE, release_ns, values)
        assert objects, name
        # The API server validates each object fully (schema, defaults, admission), creates none.
        served = [o for o in objects if o["kind"] not in PROMETHEUS_OPERATOR_KINDS]
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": served})
        result = cluster.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=manifest, check=False
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.count("(server dry run)") == len(served), (name, result.stdout)


def test_the_crds_in_the_chart_are_accepted_by_the_api_server(cluster: Any) -> None:
    for path in sorted((CHART / "crds").glob("*.yaml")):
        result = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", str(path), check=False
        )
        assert result.returncode == 0, f"{path.name}: {result.stderr}"


def test_cluster_wide_mode_grants_exactly_the_operators_rules(
    helm: Helm, namespaces: tuple[str, str]
) -> None:
    release_ns, _ = namespaces
    objects = helm.template(RELEASE, release_ns)
    assert other_roles(objects, "Role") == [] and other_roles(objects, "RoleBinding") == []
    (role,) = by_kind(objects, "ClusterRole")
    assert rules_of(role) == CORE_RULES | {CRD_RULE}
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == FULLNAME
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": release_ns}
    ]
    assert "--all-namespaces" in container(objects)["args"]
    assert rules_of(leader_election_role(objects, release_ns)) == LEASE_RULES

    # More replicas elect through the same Lease: the same rules, nothing more.
    several = helm.template(RELEASE, release_ns, {"replicas": 3})
    (role,) = by_kind(several, "ClusterRole")
    assert rules_of(role) == CORE_RULES | {CRD_RULE}
    assert rules_of(leader_election_role(several, release_ns)) == LEASE_RULES


def test_namespaced_mode_grants_roles_in_the_watched_namespaces_only(
    helm: Helm, namespaces: tuple[str, str]
) -> None:
    release_ns, app = namespaces
    objects = helm.template(RELEASE, release_ns, {"watchNamespaces": [app, "other"]})
    roles = other_roles(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted([app, "other"])
    for role in roles:
        assert rules_of(role) == CORE_RULES
    # The Lease lives in the release namespace, watched or not.
    assert rules_of(leader_election_role(objects, release_ns)) == LEASE_RULES
    for binding in other_roles(objects, "RoleBinding"):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": FULLNAME,
        }
        assert binding["subjects"][0]["namespace"] == release_ns
    # The one cluster-wide grant: read-only, namespaces and CRDs.
    (discovery,) = by_kind(objects, "ClusterRole")
    assert discovery["metadata"]["name"] == f"{FULLNAME}-discovery"
    assert rules_of(discovery) == {CRD_RULE, NAMESPACE_RULE}
    args = container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        f"--namespace={app}",
        "--namespace=other",
    ]
    assert "--all-namespaces" not in args

    roles_only = helm.template(
        RELEASE, release_ns, {"watchNamespaces": [app], "rbac": {"discovery": False}}
    )
    assert by_kind(roles_only, "ClusterRole") == []
    assert by_kind(roles_only, "ClusterRoleBinding") == []

    # The release namespace watched too: its Role and the Lease's stay apart.
    both = helm.template(RELEASE, release_ns, {"replicas": 2, "watchNamespaces": [release_ns]})
    (role,) = other_roles(both, "Role")
    assert role["metadata"]["namespace"] == release_ns and rules_of(role) == CORE_RULES
    assert rules_of(leader_election_role(both, release_ns)) == LEASE_RULES


def test_no_rule_reaches_secrets_or_wildcards_and_configmaps_are_never_deleted(
    helm: Helm, namespaces: tuple[str, str]
) -> None:
    release_ns, app = namespaces
    for name, values in value_sets(app).items():
        for role in [
            o for o in helm.template(RELEASE, release_ns, values) if o["kind"].endswith("Role")
        ]:
            for group, resource, verbs, names in rules_of(role):
                assert resource != "secrets", (name, resource)
                if resource == "configmaps":  # the shadow configs the operator writes
                    assert set(verbs) <= {"get", "list", "watch", "create", "patch"}, verbs
                assert "*" not in (group, resource, *verbs), (name, resource)
                # update: the finalizers subresource, and the release's own Lease only.
                allowed = (
                    {"update"}
                    if resource.endswith("/finalizers") or (resource == "leases" and names)
                    else set()
                )
                assert not {"update", "deletecollection", "escalate", "bind", "impersonate"} & (
                    set(verbs) - allowed
                ), (name, resource, verbs)


def test_every_replica_count_elects_a_leader_through_the_lease(
    helm: Helm, namespaces: tuple[str, str]
) -> None:
    release_ns, app = namespaces
    for values in ({}, {"replicas": 2}, {"replicas": 3, "watchNamespaces": [app, "b"]}):
        objects = helm.template(RELEASE, release_ns, values)
        deployment = one(objects, "Deployment")
        assert deployment["spec"]["replicas"] == values.get("replicas", 1)
        # Replicas elect the one that acts, so an upgrade may overlap: a new pod is ready
        # before an old one stops, at every count.
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }, values
        args = container(objects)["args"]
        assert "--standalone" not in args, values
        assert f"--leader-election-name={FULLNAME}" in args, values
        assert f"--leader-election-namespace={release_ns}" in args, values
        assert {"--lease-duration=15", "--renew-deadline=10", "--retry-period=2"} <= set(args)
        assert not any(a.startswith(("--peering-name", "--priority")) for a in args), values
        assert not {o["kind"] for o in objects} & {"KopfPeering", "ClusterKopfPeering"}
        assert not any(o["apiVersion"].startswith("kopf.dev/") for o in objects)

    timing = {"leaderElection": {"leaseDuration": 30, "renewDeadline": 20, "retryPeriod": 4}}
    args = container(helm.template(RELEASE, release_ns, timing))["args"]
    assert {"--lease-duration=30", "--renew-deadline=20", "--retry-period=4"} <= set(args)
    # Timing the election could not work with is refused at render time.
    bad = {"leaderElection": {"leaseDuration": 10, "renewDeadline": 10, "retryPeriod": 2}}
    result = helm.run(
        "template", RELEASE, str(CHART), "--namespace", release_ns,
        "-f", helm.values_file(bad), check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "leaseDuration > renewDeadline" in result.stderr


def test_the_chart_has_no_kopf_peering_crd() -> None:
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == ["modeldeployment.yaml"]


def test_the_operator_pod_is_locked_down(helm: Helm, namespaces: tuple[str, str]) -> None:
    objects = helm.template(RELEASE, namespaces[0])
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == FULLNAME
    operator = container(objects)
    assert operator["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert operator["image"] == "ghcr.io/modeldeploy/modeldeploy-operator:0.1.0"
    assert "--liveness=http://0.0.0.0:8081/healthz" in operator["args"]
    assert "--metrics-address=0.0.0.0:8080" in operator["args"]
    assert operator["ports"] == [
        {"name": "health", "containerPort": 8081, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
    ]
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["resources"]["requests"] and operator["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in operator["volumeMounts"]
    account = one(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is True


def test_the_everything_value_set_reaches_the_objects(
    helm: Helm, namespaces: tuple[str, str]
) -> None:
    release_ns, app = namespaces
    objects = helm.template(RELEASE, release_ns, value_sets(app)["everything"])
    operator = container(objects)
    assert operator["image"] == "ghcr.io/modeldeploy/modeldeploy-operator@sha256:" + "a" * 64
    for arg in (
        "--server-image=registry.example.com/modeldeploy-server:1.2.3",
        "--prometheus-address=http://prometheus.monitoring:9090",
        "--log-format=text",
        "--resync-seconds=60",
        "--verbose",
        "--kubeconfig=/etc/modeldeploy/kubeconfig",
    ):
        assert arg in operator["args"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "other-registry"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 2
    (policy,) = [
        o["spec"]
        for o in by_kind(objects, "NetworkPolicy")
        if o["metadata"]["name"] == FULLNAME  # the operator's (the serving pods' is -serving)
    ]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8081}]
    api = policy["egress"][0]
    assert api["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert {p["port"] for p in api["ports"]} == {443, 6443}


def test_the_network_policy_denies_ingress_by_default(
    helm: Helm, namespaces: tuple[str, str]
) -> None:
    objects = helm.template(RELEASE, namespaces[0], {"networkPolicy": {"enabled": True}})
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["ingress"] == []
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    # egress to the serving pods' http and metrics ports: the canary contract check
    serving = [rule for rule in policy["egress"] if "to" in rule and "podSelector" in rule["to"][0]]
    assert [rule["to"][0]["podSelector"]["matchLabels"] for rule in serving] == [
        {"app.kubernetes.io/managed-by": "modeldeploy", "app.kubernetes.io/component": "inference"}
    ]
    assert {p["port"] for p in serving[0]["ports"]} == {8080, 8082}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "DoesNotExist"
        if expression["key"] in labels:
            return False
    return True


def test_the_service_monitor_scrapes_each_serving_pod_once(
    helm: Helm, namespaces: tuple[str, str]
) -> None:
    release_ns, app = namespaces
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    monitor = one(helm.template(RELEASE, release_ns, values), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # Against the Services the operator really builds: the main one is selected, and its
    # port is the one named in the endpoint; per-track Services (same pods) are not.
    md = ModelDeployment.model_validate(
        {
            "metadata": {"name": "iris", "namespace": app, "uid": "u", "generation": 1},
            "spec": {"model": {"uri": "https://m.example.com/a.onnx"}},
        }
    )
    main = build_service(md)
    canary = build_service(md, "canary")
    selector = monitor["spec"]["selector"]
    assert _selects(selector, main["metadata"]["labels"])
    assert not _selects(selector, canary["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in main["spec"]["ports"]}
    assert endpoint["port"] == "metrics"

    namespaced = {**values, "watchNamespaces": [app]}
    monitor = one(helm.template(RELEASE, release_ns, namespaced), "ServiceMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [app]}


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["--set", "replicas=two"], "at '/replicas': got string, want integer"),
        (["--set", "replicas=-1"], "at '/replicas'"),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
        (["--set", "image.digest=latest"], "at '/image/digest'"),
        (["--set", "watchNamespaces={Team_A}"], "at '/watchNamespaces/0'"),
        (["--set", "watchNamespaces={a,a}"], "at '/watchNamespaces'"),
        (["--set", "operator.logFormat=xml"], "at '/operator/logFormat'"),
        (
            ["--set", "operator.prometheusAddress=prometheus:9090"],
            "at '/operator/prometheusAddress'",
        ),
        (["--set", "operator.resyncSeconds=0"], "at '/operator/resyncSeconds'"),
        (["--set", "replica=2"], "additional properties 'replica' not allowed"),
        (["--set", "operator.namespace=x"], "additional properties 'namespace' not allowed"),
        (["--set", "metrics.prometheusRule.errorRateThreshold=5"], "errorRateThreshold"),
        (["--set", "metrics.prometheusRule.errorRateFor=5 minutes"], "errorRateFor"),
        (
            ["--set", "podDisruptionBudget.minAvailable=half"],
            "at '/podDisruptionBudget/minAvailable'",
        ),
        (["--set", "networkPolicy.apiServerPorts={70000}"], "at '/networkPolicy/apiServerPorts/0'"),
        (["--set", "resources=big"], "at '/resources'"),
        (["--set", "operator.modelSizeLimit=2GB"], "at '/operator/modelSizeLimit'"),
        (["--set", "policy.tolerations=Some"], "at '/policy/tolerations'"),
        (["--set", "policy.maxModelSize=lots"], "at '/policy/maxModelSize'"),
        (["--set", "policy.allowLoadBalancer=no"], "at '/policy/allowLoadBalancer'"),
        (["--set", "policy.allowedImages={a b}"], "at '/policy/allowedImages/0'"),
        (["--set", "policy.allowedImage={a}"], "additional properties 'allowedImage'"),
        (
            ["--set", "servingNetworkPolicy.monitoringNamespace=Monitoring"],
            "at '/servingNetworkPolicy/monitoringNamespace'",
        ),
        # Rules the schema cannot express fail with the chart's own message.
        (
            ["--set", "podDisruptionBudget.enabled=true"],
            "podDisruptionBudget.enabled needs replicas >= 2",
        ),
        (
            ["--set", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create is false",
        ),
        (
            ["--set", "servingNetworkPolicy.enabled=true"],
            "servingNetworkPolicy.enabled needs the namespaces of the serving pods",
        ),
    ],
)
def test_wrong_values_are_refused_naming_the_field(
    helm: Helm, setting: list[str], message: str
) -> None:
    result = helm.run("template", RELEASE, str(CHART), *setting, check=False)
    assert result.returncode != 0, result.stdout[:500]
    assert message in result.stderr, result.stderr
