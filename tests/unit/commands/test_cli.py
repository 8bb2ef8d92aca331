"""The command line: every command listed, and each pays only for what it uses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modeldeploy.cli import build_parser, main


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_every_command_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("operator", "export", "status", "promote", "abort", "predict"):
        assert f"\n    {command} " in out


def test_a_wrong_command_line_exits_2_with_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "model.joblib"])  # --sample is required
    assert exit_info.value.code == 2
    assert "the following arguments are required: --sample" in capsys.readouterr().err


def test_status_output_formats_are_checked() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["status", "iris", "-o", "xml"])


def test_parsing_any_command_imports_neither_scikit_learn_nor_onnxruntime() -> None:
    result = run_python(
        "import sys\n"
        "from modeldeploy.cli import build_parser\n"
        "build_parser().parse_args(['status', 'iris'])\n"
        "heavy = {'sklearn', 'skl2onnx', 'onnxruntime', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    assert result.returncode == 0, result.stderr


def test_export_works_without_the_kubernetes_client() -> None:
    # An install with only the export extra: the operator's modules cannot be imported.
    result = run_python(
        "import sys\n"
        "sys.modules['kubernetes'] = None\n"
        "sys.modules['kopf'] = None\n"
        "from modeldeploy.cli import main\n"
        "code = main(['export', 'absent.joblib', '--sample', 'absent.npy'])\n"
        "assert code == 1, code\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "modeldeploy export: error: model file absent.joblib does not exist\n"
