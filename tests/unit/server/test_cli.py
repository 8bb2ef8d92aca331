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
