"""The command line: default subcommand, option parsing and fetch exit codes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modeldeploy_server import cli


def test_serve_is_the_default_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_serve(settings: object) -> int:
        seen["settings"] = settings
        return 0

    monkeypatch.setattr("modeldeploy_server.server.serve", fake_serve)
    monkeypatch.setenv("MODELDEPLOY_SERVER_METRICS_PORT", "9999")
    code = cli.main(["--model-name", "rf", "--model-uri", "file:///m.onnx", "--http-port", "1234",
                     "--workers", "2", "--max-batch-delay-ms", "0.5", "--access-log"])  # fmt: skip
    settings = seen["settings"]
    assert code == 0
    assert (settings.model_name, settings.http_port, settings.metrics_port) == ("rf", 1234, 9999)  # type: ignore[attr-defined]
    assert settings.workers == 2 and settings.access_log is True  # type: ignore[attr-defined]


def test_serve_needs_a_model_uri(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODELDEPLOY_SERVER_MODEL_URI", raising=False)
    with pytest.raises(SystemExit) as raised:
        cli.main(["serve"])
    assert raised.value.code == 2
    assert "--model-uri" in capsys.readouterr().err


def test_bad_settings_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["--model-uri", "/m.onnx", "--http-port", "99999"])
    assert raised.value.code == 2
    assert "--http-port" in capsys.readouterr().err


def test_fetch_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.onnx"
    source.write_bytes(b"model")
    digest = hashlib.sha256(b"model").hexdigest()
    dest = tmp_path / "dest"
    assert (
        cli.main(["fetch", "--model-uri", str(source), "--sha256", digest, "--dest", str(dest)])
        == 0
    )
    assert (dest / "model.onnx").read_bytes() == b"model"
    assert cli.main(["fetch", "--model-uri", str(source), "--sha256", "1" * 64, "--dest", str(dest),
                     "--filename", "other.onnx"]) == 5  # fmt: skip
    assert not (dest / "other.onnx").exists()
    assert cli.main(["fetch", "--model-uri", str(tmp_path / "no"), "--dest", str(dest)]) == 3
    assert cli.main(["fetch", "--model-uri", "gopher://x/y", "--dest", str(dest)]) == 7
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    assert [e["error"] for e in errors] == ["digest-mismatch", "not-found", "invalid-uri"]
    assert [e["exit_code"] for e in errors] == [5, 3, 7]


def test_fetch_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["fetch", "--model-uri", "/m.onnx"])
    assert raised.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["fetch", "--model-uri", "/m.onnx", "--dest", str(tmp_path), "--sha256", "zz"])


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    for option in ("--model-name", "--model-uri", "--sha256", "--http-port", "--metrics-port",
                   "--threads", "--max-batch-size", "--max-batch-delay-ms", "--max-request-bytes",
                   "--workers"):  # fmt: skip
        assert option in text


def test_serve_takes_the_profile_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setattr("modeldeploy_server.server.serve", lambda s: seen.setdefault("s", s) and 0)
    cli.main(["--model-uri", "file:///models/model.onnx",
              "--profile-uri", "file:///models/model.profile.json", "--profile-sha256", "ab" * 32,
              "--quality-policy", "reject", "--drift-window", "250"])  # fmt: skip
    settings = seen["s"]
    assert settings.profile_uri == "file:///models/model.profile.json"  # type: ignore[attr-defined]
    assert settings.profile_sha256 == "ab" * 32  # type: ignore[attr-defined]
    assert (settings.quality_policy, settings.drift_window) == ("reject", 250)  # type: ignore[attr-defined]


def test_fetch_places_the_profile_beside_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, profile = tmp_path / "m.onnx", tmp_path / "p.json"
    model.write_bytes(b"model")
    profile.write_bytes(b'{"format": "modeldeploy.profile/v1"}')
    digest = hashlib.sha256(profile.read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    code = cli.main(["fetch", "--model-uri", str(model), "--dest", str(dest),
                     "--profile-uri", profile.as_uri(), "--profile-sha256", digest])  # fmt: skip
    assert code == 0
    assert (dest / "model.onnx").read_bytes() == b"model"
    assert (dest / "model.profile.json").read_bytes() == profile.read_bytes()
    # A profile alone, under another name; then a wrong digest: exit 5, nothing placed.
    assert cli.main(["fetch", "--profile-uri", str(profile), "--dest", str(dest),
                     "--profile-filename", "p.json"]) == 0  # fmt: skip
    assert (dest / "p.json").exists()
    assert cli.main(["fetch", "--model-uri", str(model), "--profile-uri", str(profile),
                     "--profile-sha256", "1" * 64, "--dest", str(dest),
                     "--profile-filename", "other.json"]) == 5  # fmt: skip
    assert not (dest / "other.json").exists()
    assert cli.main(["fetch", "--profile-uri", str(tmp_path / "none.json"),
                     "--dest", str(dest)]) == 3  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert "profile placed" in [line["message"] for line in lines]
    assert [line["exit_code"] for line in lines if line["level"] == "error"] == [5, 3]


def test_fetch_profile_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["fetch", "--dest", str(tmp_path)], "--model-uri, --profile-uri or both"),
        (["fetch", "--profile-uri", "/p.json", "--dest", str(tmp_path), "--profile-sha256", "z"],
         "--profile-sha256 must be 64 hexadecimal characters"),
        (["fetch", "--model-uri", "/m.onnx", "--dest", str(tmp_path), "--profile-sha256", "a" * 64],
         "--profile-sha256 is given without --profile-uri"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as raised:
            cli.main(argv)
        assert raised.value.code == 2
        assert message in capsys.readouterr().err
