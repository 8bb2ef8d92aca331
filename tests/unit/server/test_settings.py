"""Settings from flags and environment; CPU budget from the cgroup; worker planning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modeldeploy_server.settings import (
    PodIdentity,
    SettingsError,
    cpu_limit,
    load_settings,
    plan_processes,
)


def test_defaults() -> None:
    settings = load_settings({}, {})
    assert (settings.http_port, settings.metrics_port) == (8080, 8082)
    assert settings.max_batch_size == 32 and settings.log_format == "json"
    assert settings.workers is None and settings.threads is None


def test_environment_then_flags_win() -> None:
    env = {
        "MODELDEPLOY_SERVER_HTTP_PORT": "9000",
        "MODELDEPLOY_SERVER_WORKERS": "3",
        "MODELDEPLOY_SERVER_SHA256": "AB" * 32,
        "MODELDEPLOY_SERVER_ACCESS_LOG": "true",
        "MODELDEPLOY_SERVER_MAX_BATCH_DELAY_MS": "0.5",
    }
    settings = load_settings({"http_port": 9100, "threads": None}, env)
    assert settings.http_port == 9100  # the flag wins
    assert settings.workers == 3 and settings.access_log is True
    assert settings.sha256 == "ab" * 32 and settings.max_batch_delay_ms == 0.5


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        ({"http_port": 70000}, {}, "--http-port .*less than or equal to 65535"),
        ({}, {"MODELDEPLOY_SERVER_WORKERS": "many"}, "MODELDEPLOY_SERVER_WORKERS.*'many'"),
        ({"sha256": "xyz"}, {}, "--sha256"),
        ({"log_format": "xml"}, {}, "--log-format"),
    ],
)
def test_bad_values_name_the_setting(
    options: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(options, env)


def test_model_name_defaults_to_the_file_stem() -> None:
    assert load_settings({"model_uri": "s3://b/dir/iris-v2.onnx"}, {}).served_name() == "iris-v2"
    assert load_settings({"model_uri": "/m/x.onnx", "model_name": "rf"}, {}).served_name() == "rf"


def test_pod_identity() -> None:
    env = {
        "MODELDEPLOY_DEPLOYMENT_NAME": "iris",
        "MODELDEPLOY_TRACK": "canary",
        "MODELDEPLOY_POD_NAME": "p",
    }
    assert PodIdentity.from_env("m", env) == PodIdentity("iris", "canary", "p", "")
    assert PodIdentity.from_env("m", {}) == PodIdentity("m", "stable", "", "")


def test_cpu_limit_reads_cgroup_v2(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_limit(tmp_path) == min(1.5, cores)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(tmp_path) == cores


def test_cpu_limit_reads_cgroup_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit(tmp_path) == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_limit(tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("workers", "threads", "cpus", "expected"),
    [
        (None, None, 4.0, (4, 1)),
        (None, None, 0.5, (1, 1)),
        (2, None, 4.0, (2, 2)),
        (None, 2, 4.0, (2, 2)),
        (None, 3, 2.0, (1, 3)),
        (1, 1, 8.0, (1, 1)),
        (None, None, 64.0, (8, 8)),
    ],
)
def test_plan_keeps_workers_times_threads_within_the_cpus(
    workers: int | None, threads: int | None, cpus: float, expected: tuple[int, int]
) -> None:
    assert plan_processes(workers, threads, cpus)[:2] == expected


def test_plan_warns_on_oversubscription() -> None:
    assert plan_processes(4, 2, 2.0)[2] is not None
    assert plan_processes(2, 1, 2.0)[2] is None


def test_profile_settings() -> None:
    settings = load_settings(
        {"profile_uri": "file:///models/model.profile.json", "quality_policy": "reject"},
        {"MODELDEPLOY_SERVER_PROFILE_SHA256": "CD" * 32, "MODELDEPLOY_SERVER_DRIFT_WINDOW": "500"},
    )
    assert settings.profile_uri == "file:///models/model.profile.json"
    assert settings.profile_sha256 == "cd" * 32 and settings.drift_window == 500
    assert settings.quality_policy == "reject"
    defaults = load_settings({}, {})
    assert (defaults.profile_uri, defaults.quality_policy, defaults.drift_window) == (
        None,
        "observe",
        1000,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quality_policy": "reject"}, r"^--quality-policy reject needs a training profile"),
        ({"profile_sha256": "ab" * 32}, r"^--profile-sha256 is given without --profile-uri$"),
        ({"profile_uri": "p", "quality_policy": "drop"}, "--quality-policy .*'observe' or"),
        ({"profile_uri": "p", "drift_window": 5}, "--drift-window .*greater than or equal to 10"),
        ({"profile_uri": "p", "profile_sha256": "xyz"}, "--profile-sha256"),
    ],
)
def test_bad_profile_settings_name_the_option(options: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(options, {})


def test_the_bound_on_bodies_in_flight_defaults_to_four_of_the_largest() -> None:
    assert load_settings({"max_request_bytes": 2048}, {}).inflight_body_bytes() == 8192
    explicit = {"max_request_bytes": 2048, "max_inflight_body_bytes": 5000}
    assert load_settings(explicit, {}).inflight_body_bytes() == 5000
    with pytest.raises(SettingsError, match="--max-inflight-body-bytes is below"):
        load_settings({"max_request_bytes": 4096, "max_inflight_body_bytes": 2048}, {})
