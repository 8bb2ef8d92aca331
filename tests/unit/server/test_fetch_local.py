"""Fetching from local sources: paths, file://, pvc://, digests and atomic placement."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modeldeploy_server import fetch as fetch_module
from modeldeploy_server.fetch import (
    DigestMismatch,
    InvalidUri,
    LocalIOError,
    SourceNotFound,
    fetch,
    local_path,
    redact_uri,
)


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / "model.onnx"
    path.parent.mkdir()
    data = b"onnx bytes " * 100_000  # ~1 MiB: several chunks
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_local_uris_resolve(tmp_path: Path) -> None:
    assert local_path("/models/a.onnx") == Path("/models/a.onnx")
    assert local_path("file:///models/a%20b.onnx") == Path("/models/a b.onnx")
    env = {"MODELDEPLOY_PVC_ROOT": str(tmp_path)}
    assert local_path("pvc://claim/dir/m.onnx", env) == tmp_path / "claim" / "dir" / "m.onnx"
    assert local_path("pvc://claim/m.onnx", {}) == Path("/mnt/pvc/claim/m.onnx")
    assert local_path("https://example.test/m.onnx") is None
    assert local_path("s3://bucket/m.onnx") is None


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://host/m.onnx", "unsupported scheme 'ftp'"),
        ("file://host/m.onnx", "name a local path"),
        ("pvc://claim", "pvc://claim/path"),
        ("pvc://claim/../../etc/passwd", "outside the claim"),
    ],
)
def test_invalid_uris(uri: str, message: str) -> None:
    with pytest.raises(InvalidUri, match=message) as raised:
        local_path(uri, {"MODELDEPLOY_PVC_ROOT": "/mnt/pvc"})
    assert raised.value.exit_code == 7


@pytest.mark.parametrize("scheme", ["path", "file", "pvc"])
def test_copy_verifies_and_places(tmp_path: Path, source: tuple[Path, str], scheme: str) -> None:
    path, digest = source
    uri = {"path": str(path), "file": f"file://{path}", "pvc": "pvc://src/model.onnx"}[scheme]
    placed = fetch(
        uri,
        tmp_path / "dest",
        sha256=digest.upper(),
        environ={"MODELDEPLOY_PVC_ROOT": str(tmp_path)},
    )
    assert placed == tmp_path / "dest" / "model.onnx"
    assert placed.read_bytes() == path.read_bytes()
    assert [p.name for p in placed.parent.iterdir()] == ["model.onnx"]  # no temporary left


def test_digest_mismatch_places_nothing(tmp_path: Path, source: tuple[Path, str]) -> None:
    path, _ = source
    dest = tmp_path / "dest"
    with pytest.raises(DigestMismatch, match=r"expected 0{64}, got [0-9a-f]{64}") as raised:
        fetch(str(path), dest, sha256="0" * 64)
    assert raised.value.exit_code == 5
    assert list(dest.iterdir()) == []


def test_a_present_file_with_the_right_digest_is_kept(
    tmp_path: Path, source: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, digest = source
    dest = tmp_path / "dest"
    fetch(str(path), dest, sha256=digest)
    path.unlink()  # the source is gone: only the cache can satisfy the next fetch
    assert fetch(str(path), dest, sha256=digest).read_bytes().startswith(b"onnx bytes")


def test_a_present_file_with_the_wrong_digest_is_replaced(
    tmp_path: Path, source: tuple[Path, str]
) -> None:
    path, digest = source
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"stale")
    assert fetch(str(path), dest, sha256=digest).read_bytes() == path.read_bytes()


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="no such file") as raised:
        fetch(str(tmp_path / "nope.onnx"), tmp_path / "dest")
    assert raised.value.exit_code == 3
    with pytest.raises(SourceNotFound, match="is a directory"):
        fetch(str(tmp_path), tmp_path / "dest2")


def test_unwritable_destination(tmp_path: Path, source: tuple[Path, str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LocalIOError, match="cannot write") as raised:
        fetch(str(source[0]), blocker / "sub")
    assert raised.value.exit_code == 8


def test_progress_is_logged(
    tmp_path: Path, source: tuple[Path, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=fetch_module.__name__)
    fetch(str(source[0]), tmp_path / "dest")
    messages = [r.getMessage() for r in caplog.records]
    assert "download complete" in messages and "model placed" in messages
    complete = next(r for r in caplog.records if r.getMessage() == "download complete")
    assert complete.fields["bytes"] == source[0].stat().st_size  # type: ignore[attr-defined]
    assert complete.fields["percent"] == 100.0  # type: ignore[attr-defined]
    assert "no sha256 given" in messages[-2]


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://host/m.onnx", "https://host/m.onnx"),
        ("https://u:p@host:8443/m.onnx", "https://host:8443/m.onnx"),
        ("https://ghp_token@host/m.onnx", "https://host/m.onnx"),
        (
            "https://b.s3.amazonaws.com/m.onnx?X-Amz-Signature=abc",
            "https://b.s3.amazonaws.com/m.onnx",
        ),
        ("https://host/m.onnx#sig=abc", "https://host/m.onnx"),
        ("https://u:p@host:notaport/m.onnx", "https://(redacted)"),
        ("s3://bucket/key.onnx", "s3://bucket/key.onnx"),
        ("/models/m.onnx", "/models/m.onnx"),
    ],
)
def test_redacted_uris_keep_no_credentials(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
