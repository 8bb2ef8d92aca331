"""Prometheus's configuration for the local cluster: it discovers the serving pods through the
Kubernetes API, as on any cluster (``kubernetes_sd_configs``, role pod). The Prometheus binary
is built by ``make control-plane`` with Kubernetes discovery, which Debian's package lacks.
Used by the demo and by the tests on the real node; a pure builder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pod_scrape_config(
    kubeconfig: Path,
    namespaces: Sequence[str],
    *,
    interval: str = "1s",
    rule_files: Sequence[str] = (),
) -> dict[str, Any]:
    """Scrape the pods the operator annotates (``prometheus.io/scrape``), labelled with their
    namespace, pod and track, as a ServiceMonitor or the chart's PodMonitor would."""
    meta = "__meta_kubernetes_pod_"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": list(rule_files),
        "scrape_configs": [
            {
                "job_name": "modeldeploy-pods",
                # The server labels its own series with deployment and track: those win.
                "honor_labels": True,
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "kubeconfig_file": str(kubeconfig),
                        "namespaces": {"names": list(namespaces)},
                    }
                ],
                "relabel_configs": [
                    {
                        "source_labels": [f"{meta}annotation_prometheus_io_scrape"],
                        "regex": "true",
                        "action": "keep",
                    },
                    {
                        "source_labels": [f"{meta}phase"],
                        "regex": "Running",
                        "action": "keep",
                    },
                    {
                        "source_labels": [f"{meta}ip", f"{meta}annotation_prometheus_io_port"],
                        "regex": "(.+);(.+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": [f"{meta}name"], "target_label": "pod"},
                    {
                        "source_labels": [f"{meta}label_serving_modeldeploy_io_track"],
                        "target_label": "track",
                    },
                ],
            }
        ],
    }
