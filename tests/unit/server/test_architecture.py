"""The server's import rules: one onnxruntime adapter, protocol types stand alone, small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "serving_image" / "src" / "modeldeploy_server"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def test_only_the_onnx_adapter_imports_onnxruntime() -> None:
    importers = [_name(p) for p in MODULES if any(i.startswith("onnxruntime") for i in _imports(p))]
    assert importers == ["runtime/onnx.py"]


def test_protocol_types_import_nothing_of_ours() -> None:
    ours = [i for i in _imports(PACKAGE / "types.py") if i.startswith(".") or "modeldeploy" in i]
    assert ours == []


def test_no_kubernetes_or_operator_imports() -> None:
    for path in MODULES:
        for name in _imports(path):
            assert not name.startswith(("kopf", "kubernetes", "modeldeploy.")), (_name(path), name)


def test_the_hot_path_does_not_validate_with_pydantic() -> None:
    # The data plane builds metadata answers with the protocol types; inference does not.
    hot = ["rest.py", "batching.py", "tensors.py", "codec/infer.py", "codec/json_tensors.py",
           "codec/binary.py", "codec/v1.py"]  # fmt: skip
    for module in hot:
        imports = _imports(PACKAGE / module)
        assert not any("pydantic" in i or i.lstrip(".") == "types" for i in imports), module


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 420
