"""The real Prometheus of the rollout tests scrapes real servers standing in for the stable and
canary pods, and answers the queries canary analysis makes, per track."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.load import Load
from tests.support.prometheus import Prometheus, PrometheusError
from tests.support.servers import ServerProcess

pytestmark = pytest.mark.integration

SELECTOR = 'namespace="ns1",deployment="demo",track="{track}"'
REQUEST_RATE = "sum(rate(modeldeploy_requests_total{{" + SELECTOR + "}}[10s]))"
# A track with no server error has no 5xx series at all: "or vector(0)" makes that a 0,
# where a bare division would yield no data.
ERROR_RATE = (
    '(sum(rate(modeldeploy_requests_total{{code=~"5..",' + SELECTOR + "}}[10s])) or vector(0))"
    " / " + REQUEST_RATE
)
LATENCY_P99 = (
    "histogram_quantile(0.99, sum by (le) "
    "(rate(modeldeploy_request_duration_seconds_bucket{{" + SELECTOR + "}}[10s])))"
)
TOTAL = "sum(modeldeploy_requests_total{{" + SELECTOR + "}})"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """``start_server(model, track)``: a real ``modeldeploy-server`` of deployment "demo"."""
    started: list[ServerProcess] = []

    def start(model: Path, track: str) -> ServerProcess:
        server = ServerProcess(
            model,
            tmp_path / f"{track}.log",
            name="classifier",
            env={"MODELDEPLOY_DEPLOYMENT_NAME": "demo", "MODELDEPLOY_TRACK": track},
        )
        started.append(server)
        server.wait_for("/v2/health/live", 200)
        return server

    yield start
    for server in started:
        server.stop()


def _targets(servers: dict[str, ServerProcess]) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"127.0.0.1:{server.metrics_port}", {"namespace": "ns1", "job": f"demo-{track}"})
        for track, server in servers.items()
    ]


def test_request_rate_and_p99_latency_of_the_canary_track(
    prometheus: Prometheus, models: dict[str, Path], start_server: Any
) -> None:
    servers = {
        "stable": start_server(models["classifier"], "stable").wait_ready(),
        "canary": start_server(models["classifier"], "canary").wait_ready(),
    }
    prometheus.set_targets(_targets(servers))
    targets = prometheus.wait_for_targets()
    assert {t["labels"]["job"] for t in targets} == {"demo-stable", "demo-canary"}
    assert all(t["labels"]["namespace"] == "ns1" for t in targets)

    with Load(servers) as load:
        (rate,) = prometheus.wait_for_series(REQUEST_RATE.format(track="canary") + " > 0")
        assert float(rate["value"][1]) > 0
        (p99,) = prometheus.wait_for_series(LATENCY_P99.format(track="canary"))
        seconds = float(p99["value"][1])
        # A quantile inside the server's buckets (NaN would mean no data in the window).
        assert 0 < seconds <= 10, seconds
        assert prometheus.value(ERROR_RATE.format(track="canary")) == 0
    assert set(load.answers) == {("stable", 200), ("canary", 200)}, load.answers

    # Every request is counted once, on its own track, with the target's namespace.
    for track in ("stable", "canary"):
        prometheus.wait_for_series(f"{TOTAL.format(track=track)} == {load.sent(track)}")
    by_track = prometheus.query(
        'sum by (namespace, deployment, track, job) (modeldeploy_requests_total{deployment="demo"})'
    )
    assert {
        (s["metric"]["namespace"], s["metric"]["track"], s["metric"]["job"]) for s in by_track
    } == {("ns1", "stable", "demo-stable"), ("ns1", "canary", "demo-canary")}


def test_error_rate_of_a_canary_whose_model_does_not_load(
    prometheus: Prometheus, models: dict[str, Path], start_server: Any, tmp_path: Path
) -> None:
    """A canary that cannot load its model answers 503 to every request: the error rate the
    analysis reads is 1 on the canary track and 0 on the stable one."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an ONNX model")
    servers = {
        "stable": start_server(models["classifier"], "stable").wait_ready(),
        "canary": start_server(broken, "canary"),
    }
    prometheus.set_targets(_targets(servers))
    prometheus.wait_for_targets()
    with Load(servers) as load:
        prometheus.wait_for_series(ERROR_RATE.format(track="canary") + " == 1")
        prometheus.wait_for_series(REQUEST_RATE.format(track="stable") + " > 0")
        assert prometheus.value(ERROR_RATE.format(track="stable")) == 0
    assert set(load.answers) == {("stable", 200), ("canary", 503)}, load.answers


def test_targets_can_be_replaced_while_running(
    prometheus: Prometheus, models: dict[str, Path], start_server: Any
) -> None:
    """The canary pod goes away (promotion or rollback): its target is dropped, and a query of
    its track stops yielding data once its samples go stale."""
    servers = {
        "stable": start_server(models["classifier"], "stable").wait_ready(),
        "canary": start_server(models["classifier"], "canary").wait_ready(),
    }
    prometheus.set_targets(_targets(servers))
    prometheus.wait_for_targets()
    prometheus.wait_for_series('up{job="demo-canary"} == 1')
    prometheus.set_targets(_targets({"stable": servers["stable"]}))
    (only,) = prometheus.wait_for_targets()
    assert only["labels"]["job"] == "demo-stable"
    # A dropped target's series are marked stale at once: no value "now".
    prometheus.wait_for_series('absent(up{job="demo-canary"})')


def test_a_bad_query_names_the_problem(prometheus: Prometheus) -> None:
    with pytest.raises(PrometheusError, match="parse error"):
        prometheus.query("sum(rate(modeldeploy_requests_total[10s])")
    assert prometheus.value("vector(2) * 3") == 6
    assert prometheus.value('modeldeploy_requests_total{deployment="none"}') is None
    nan = prometheus.value("0 / 0")
    assert nan is not None and math.isnan(nan)


def test_bad_targets_are_refused_naming_the_problem(prometheus: Prometheus) -> None:
    with pytest.raises(ValueError, match="'host:port'"):
        prometheus.set_targets([("localhost", {})])
    with pytest.raises(ValueError, match="label 'track-name'"):
        prometheus.set_targets([("127.0.0.1:9", {"track-name": "canary"})])


def test_prometheus_that_cannot_start_says_why(tmp_path: Path) -> None:
    """A configuration Prometheus refuses: the error carries the tail of its log."""
    prometheus = Prometheus(tmp_path, scrape_interval="not-a-duration")
    with pytest.raises(PrometheusError, match=r"(?s)exited with .* at startup.*not-a-duration"):
        prometheus.start()
