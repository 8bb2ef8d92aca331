"""The shadow target file: what it may say, and how a change is picked up without a restart."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from modeldeploy_server.shadow_config import (
    ShadowConfigError,
    ShadowConfigWatcher,
    ShadowTarget,
    parse_shadow_config,
)


def test_a_target_and_a_percent() -> None:
    target = parse_shadow_config(b'{"target": "http://iris-canary.ns.svc:8080", "percent": 25}')
    assert target == ShadowTarget("iris-canary.ns.svc", 8080, 25.0)
    assert target.url == "http://iris-canary.ns.svc:8080"


def test_percent_defaults_to_all_and_port_to_80() -> None:
    assert parse_shadow_config(b'{"target": "http://canary/"}') == ShadowTarget("canary", 80, 100.0)


@pytest.mark.parametrize("data", [b"", b"  \n", b"{}", b'{"target": ""}', b'{"target": null}'])
def test_an_empty_file_or_target_turns_mirroring_off(data: bytes) -> None:
    assert parse_shadow_config(data) is None


def test_unknown_keys_are_ignored() -> None:
    assert parse_shadow_config(b'{"target": "http://c:1", "since": "v2"}') == ShadowTarget("c", 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{target: 1}", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"target": 3}', "target: must be a string"),
        (b'{"target": "https://c:1"}', "must be an http:// URL"),
        (b'{"target": "c:8080"}', "must be an http:// URL"),
        (b'{"target": "http://c:1/v2"}', "nothing after it"),
        (b'{"target": "http://c:99999"}', "is not a URL"),
        (b'{"target": "http://c", "percent": 101}', "percent: must be a number from 0 to 100"),
        (b'{"target": "http://c", "percent": "50"}', "percent"),
    ],
)
def test_a_malformed_file_names_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ShadowConfigError, match=message):
        parse_shadow_config(data)


def _write(path: Path, doc: object) -> None:
    # As the kubelet updates a ConfigMap volume: a new file, renamed over the old one.
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    os.replace(fresh, path)


def test_the_watcher_follows_the_file_as_it_appears_changes_and_goes(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    seen: list[ShadowTarget | None] = []
    watcher = ShadowConfigWatcher(str(path), seen.append)
    watcher.poll()
    assert seen == []  # no file: off, as it was
    _write(path, {"target": "http://a:1"})
    watcher.poll()
    watcher.poll()  # unchanged: nothing new
    _write(path, {"target": "http://b:2", "percent": 10})
    watcher.poll()
    path.unlink()
    watcher.poll()
    assert seen == [ShadowTarget("a", 1), ShadowTarget("b", 2, 10.0), None]


def test_a_symlinked_file_is_followed_across_swaps(tmp_path: Path) -> None:
    # The kubelet's layout: config.json -> ..data/config.json, ..data -> a timestamped dir.
    for name, target in (("v1", "http://a:1"), ("v2", "http://b:2")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"target": target}))
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "config.json").symlink_to("..data/config.json")
    seen: list[ShadowTarget | None] = []
    watcher = ShadowConfigWatcher(str(tmp_path / "config.json"), seen.append)
    watcher.poll()
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    watcher.poll()
    assert seen == [ShadowTarget("a", 1), ShadowTarget("b", 2)]


def test_a_malformed_file_logs_one_error_and_turns_mirroring_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.json"
    seen: list[ShadowTarget | None] = []
    watcher = ShadowConfigWatcher(str(path), seen.append)
    _write(path, {"target": "http://a:1"})
    watcher.poll()
    _write(path, {"target": "ftp://a"})
    with caplog.at_level(logging.ERROR, logger="modeldeploy_server.shadow_config"):
        for _ in range(5):
            watcher.poll()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "must be an http:// URL" in errors[0].getMessage()
    assert errors[0].fields["shadow_config"] == str(path)  # type: ignore[attr-defined]
    assert seen == [ShadowTarget("a", 1), None]
