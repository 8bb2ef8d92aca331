"""How fast the operator brings many ModelDeployments to their desired state, beside the limit.

    .venv/bin/python benchmarks/operator_scale.py [--count 500] [--rest-seconds 60]

In one run, on the local control plane (reused when `make cluster` runs, else started):
1. the limit: a bare script with the same client (modeldeploy.kube.Kube) makes the same writes
   the operator makes for N objects (Service, Deployment, status) as fast as the API server
   takes them, with as many threads as the operator has workers;
2. the operator: N ModelDeployments applied at once; time until every one has its Service and
   Deployment and a status with a current observedGeneration; operator RSS; API requests per
   ModelDeployment (from the API server's audit log, reads included); writes at rest.
Writes `benchmarks/OPERATOR_RESULTS.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modeldeploy.api import API_VERSION, KIND, ModelDeployment
from modeldeploy.builders import build_deployment, build_service
from modeldeploy.kube import Kube
from modeldeploy.reconcilers.compare import with_hash
from modeldeploy.reconcilers.observed_status import Observed, compute_status
from modeldeploy_dev.cluster import LocalCluster, fake_node, free_port, running_cluster

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_USER = "modeldeploy-operator"
BENCH_USER = "modeldeploy-bench"
WORKERS = 8  # the operator's kopf executor size (modeldeploy.handlers)


def log(message: str) -> None:
    print(f"[operator-bench] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def manifest(namespace: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": f"m{index:04d}", "namespace": namespace},
        "spec": {
            "model": {"uri": f"https://models.example.com/m/{index}/model.onnx"},
            # Small requests, so every pod fits on the simulated nodes.
            "runtime": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
        },
    }


def create_all(cluster: LocalCluster, namespace: str, count: int) -> None:
    items = [manifest(namespace, i) for i in range(count)]
    cluster.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=600,
    )  # fmt: skip


def rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def progress(kube: Kube, namespace: str) -> tuple[int, int]:
    """(ModelDeployments with a current observedGeneration, those also Ready): one list, so
    that watching the operator loads the API server as little as possible."""
    current = ready = 0
    for m in kube.list(API_VERSION, KIND, namespace):
        status = m.get("status") or {}
        if status.get("observedGeneration") == m["metadata"]["generation"]:
            current += 1
            ready += status.get("phase") == "Ready"
    return current, ready


def children_exist(kube: Kube, namespace: str, count: int) -> bool:
    deployments = kube.list("apps/v1", "Deployment", namespace)
    services = kube.list("v1", "Service", namespace)
    return len(deployments) >= count and len(services) >= count


def bare_limit(cluster: LocalCluster, namespace: str, count: int) -> tuple[float, float]:
    """The same writes as the operator's first pass, as fast as the API server takes them;
    and, apart, how long creating the objects took with nothing else running."""
    kube = Kube(cluster.api_client(cluster.user_kubeconfig(BENCH_USER, ["system:masters"])))
    start = time.monotonic()
    create_all(cluster, namespace, count)
    created = time.monotonic() - start
    mds = [ModelDeployment.model_validate(m) for m in kube.list(API_VERSION, KIND, namespace)]

    def one(md: ModelDeployment) -> None:
        kube.apply(with_hash(build_service(md)))
        deployment = kube.apply(with_hash(build_deployment(md, replicas=md.spec.replicas)))
        status = compute_status(md, Observed(deployment=deployment), None)
        kube.patch_status(API_VERSION, KIND, md.namespace, md.name, status.to_dict())

    start = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, mds))
    return time.monotonic() - start, created


def in_namespace(events: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The requests about ``namespace``: operators of other namespaces (tests running on the
    same control plane as the same user) are not this one's."""
    return [e for e in events if (e.get("objectRef") or {}).get("namespace") == namespace]


def _request_kind(event: dict[str, Any]) -> str:
    """``verb resource[/subresource]`` of an audit event, e.g. ``patch modeldeployments/status``."""
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "?")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return f"{event['verb']} {resource}"


def run_operator(cluster: LocalCluster, namespace: str, count: int, rest: float) -> dict[str, Any]:
    kubeconfig = cluster.user_kubeconfig(OPERATOR_USER, ["system:masters"])
    port = free_port()
    log_path = ROOT / "benchmarks" / ".work" / "operator-scale.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "modeldeploy.cli", "operator", "--namespace", namespace,
        "--standalone", "--liveness", f"http://127.0.0.1:{port}/healthz",
        "--kubeconfig", str(kubeconfig),
    ]  # fmt: skip
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        kube = Kube(cluster.api_client())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        before = len(cluster.audit_requests(OPERATOR_USER))
        start = time.monotonic()
        create_all(cluster, namespace, count)
        created = time.monotonic() - start
        log(f"{count} ModelDeployments created in {created:.1f} s; waiting for the operator")
        children = None
        while True:
            current, ready = progress(kube, namespace)
            if children is None and current >= count and children_exist(kube, namespace, count):
                children = time.monotonic() - start
                log(f"children and current status after {children:.1f} s")
            if children is not None and ready >= count:
                break
            if time.monotonic() - start > 300:
                phases = Counter(
                    (m.get("status") or {}).get("phase")
                    for m in kube.list(API_VERSION, KIND, namespace)
                )
                raise SystemExit(f"the operator did not settle within 300 s: phases {dict(phases)}")
            time.sleep(0.5)
        elapsed = time.monotonic() - start
        log(f"settled after {elapsed:.1f} s; {rest:.0f} s at rest")
        requests = in_namespace(cluster.audit_requests(OPERATOR_USER)[before:], namespace)
        rss, peak = rss_kib(process.pid)
        at_rest_from = len(cluster.audit_requests(OPERATOR_USER))
        time.sleep(rest)
        rest_events = in_namespace(cluster.audit_requests(OPERATOR_USER)[at_rest_from:], namespace)
        rest_writes = [e for e in rest_events if e["verb"] not in ("get", "list", "watch")]
        if rest_writes:
            kinds = Counter(
                f"{e['verb']} {e['objectRef'].get('resource')} {e['objectRef'].get('subresource')}"
                for e in rest_writes
            )
            log(f"writes at rest: {dict(kinds)}")
        verbs = Counter(e["verb"] for e in requests)
        kinds = Counter(_request_kind(e) for e in requests)
        return {
            "children": children if children is not None else elapsed,
            "elapsed": elapsed,
            "created": created,
            "rss_mib": rss / 1024,
            "peak_mib": peak / 1024,
            "requests": len(requests),
            "verbs": dict(verbs),
            "kinds": dict(kinds),
            "writes_at_rest_per_min": len(rest_writes) * 60 / rest,
        }
    finally:
        process.terminate()
        process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rest-seconds", type=float, default=60)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "OPERATOR_RESULTS.md")
    args = parser.parse_args()
    with running_cluster(
        ROOT / ".cluster", ROOT / "benchmarks" / ".work" / "cluster", progress=log
    ) as cluster:
        crd = str(ROOT / "crds" / "modeldeployment.yaml")
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", crd)
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/modeldeployments.serving.modeldeploy.io"
        )
        # Room for one pod per ModelDeployment (110 pods per node, as on real nodes).
        nodes = [fake_node(f"bench-node-{i}") for i in range(args.count // 100 + 1)]
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        results: dict[str, Any] = {}
        for phase in ("limit", "operator"):
            namespace = f"bench-{phase}-{uuid.uuid4().hex[:6]}"
            # KWOK nodes: 500 ModelDeployments' pods are scheduled, not run.
            cluster.create_namespace(namespace, kwok=True)
            log(f"{phase}: {args.count} objects in namespace {namespace}")
            if phase == "limit":
                results["limit"], results["created"] = bare_limit(cluster, namespace, args.count)
                log(f"limit: {results['limit']:.1f} s")
            else:
                results["operator"] = run_operator(
                    cluster, namespace, args.count, args.rest_seconds
                )
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        cluster.kubectl("delete", "nodes", *[n["metadata"]["name"] for n in nodes], "--wait=false")
    write_report(args, results)
    return 0


NOTES_MARK = "<!-- Notes below this line are kept when the benchmark rewrites the file. -->"


def write_report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    op, limit = results["operator"], results["limit"]
    load = os.getloadavg()
    per_md = op["requests"] / args.count
    by_kind = "\n".join(
        f"| {kind} | {n / args.count:.2f} |"
        for kind, n in sorted(op["kinds"].items(), key=lambda kv: (-kv[1], kv[0]))
    )
    notes = ""
    if args.output.exists() and NOTES_MARK in args.output.read_text():
        notes = args.output.read_text().split(NOTES_MARK, 1)[1]
    text = f"""# Operator at scale: {args.count} ModelDeployments applied at once

Reproduce: `.venv/bin/python benchmarks/operator_scale.py --count {args.count} \
--rest-seconds {args.rest_seconds:.0f}`
(local control plane: real kube-apiserver/etcd/controller-manager/scheduler, KWOK nodes).

| measure | value | target |
| --- | --- | --- |
| time until every ModelDeployment has its children and a current observedGeneration | \
{op["children"]:.1f} s | ≤ 30 s |
| of which kubectl took to create the {args.count} objects (sequential, beside the operator) | \
{op["created"]:.1f} s | — |
| the same first-pass writes by a bare script ({WORKERS} threads, same client) | {limit:.1f} s | — |
| operator ÷ bare-script limit | {op["children"] / limit:.2f}x | ≤ 3x |
| creating the objects with nothing else running (not part of the limit) | \
{results["created"]:.1f} s | — |
| time until every ModelDeployment is Ready (pods scheduled, KWOK-Ready) | \
{op["elapsed"]:.1f} s | — |
| operator RSS after settling (peak) | {op["rss_mib"]:.0f} MiB ({op["peak_mib"]:.0f} MiB) \
| < 300 MiB |
| API requests per ModelDeployment (all verbs, audit log) | {per_md:.1f} | — |
| requests by verb | {", ".join(f"{k} {v}" for k, v in sorted(op["verbs"].items()))} | — |
| writes per minute at rest ({args.rest_seconds:.0f} s observed) | \
{op["writes_at_rest_per_min"]:.1f} | 0 |

The operator's time runs from the start of `kubectl create` of all the objects, so it includes
their creation; the bare script's starts once they exist. Its Ready time includes the pods: each
ModelDeployment has one replica, which the scheduler binds and KWOK marks Ready; the status is
rewritten as they become Ready. The bare script writes each object once and its status once.

Requests per ModelDeployment until all are Ready, by kind (audit log):

| request | per ModelDeployment |
| --- | --- |
{by_kind}

Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},
load average {load[0]:.2f} at the end (the machine is shared: compare figures of one run only).

{NOTES_MARK}{notes}"""
    args.output.write_text(text)
    log(f"wrote {args.output.relative_to(ROOT)}")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
