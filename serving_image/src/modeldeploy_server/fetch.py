"""Model fetch: download or copy a model, verify its sha256, then place it atomically.

Run as the pod's init container (``modeldeploy-server fetch``) and by the server itself
for remote ``--model-uri``. Sources: ``file://`` or a plain path, ``pvc://claim/path``
(the claim mounted at ``$MODELDEPLOY_PVC_ROOT/claim``, default ``/mnt/pvc/claim``),
``http(s)://`` (``MODELDEPLOY_HTTP_AUTHORIZATION`` is sent as the Authorization header)
and ``s3://bucket/key`` (see ``s3``); retries, the deadline, the size cap and the redirect
policy are ``fetch_http``'s.

The bytes go to a hidden ``.partial`` file beside the destination, locked while it is
written; only when the digest matches is it renamed into place, so a reader never sees a
partial or wrong model. SIGTERM or SIGINT during a fetch removes the partial file (the CLI
turns them into ``Interrupted``), and each fetch first removes the partial files that no
running fetch holds (left by a SIGKILL, an OOM kill, a power cut).

Exit codes of ``modeldeploy-server fetch`` (``FetchError.exit_code``):

==== ===================================================================
0    placed (or already present with the expected digest)
1    other failure (an unexpected answer from the source)
2    usage error (bad options)
3    not found (no such file, HTTP 404/410, S3 NoSuchKey/NoSuchBucket)
4    access denied (HTTP 401/403, S3 AccessDenied, unreadable file)
5    sha256 mismatch (nothing is placed)
6    source unavailable after retries or at the deadline (network, timeouts, 5xx)
7    invalid or unsupported URI
8    local I/O error (destination not writable, disk full)
9    larger than --max-bytes
10   redirect refused (to another scheme than http(s), https to http, too many)
143  interrupted by SIGTERM or SIGINT (the partial file is removed)
==== ===================================================================
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

from .fetch_errors import (
    AccessDenied,
    DigestMismatch,
    FetchError,
    Interrupted,
    InvalidUri,
    LocalIOError,
    RedirectRefused,
    SourceNotFound,
    SourceUnavailable,
    TooLarge,
)
from .fetch_http import CHUNK, Hasher, Progress, download, redact_uri

__all__ = [
    "AccessDenied",
    "DigestMismatch",
    "FetchError",
    "Interrupted",
    "InvalidUri",
    "LocalIOError",
    "RedirectRefused",
    "SourceNotFound",
    "SourceUnavailable",
    "TooLarge",
    "fetch",
    "file_sha256",
    "is_sha256",
    "local_path",
    "redact_uri",
]

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
"""A SHA-256 digest as the flags and the profile give it: 64 hexadecimal characters."""

DEFAULT_MAX_BYTES = 2 * 1024**3
"""2 GiB: the largest single-file ONNX model protobuf can parse."""
DEFAULT_TIMEOUT = 600.0
DEFAULT_READ_TIMEOUT = 30.0


def is_sha256(text: object) -> bool:
    return isinstance(text, str) and re.fullmatch(SHA256_PATTERN, text) is not None


log = logging.getLogger(__name__)

DEFAULT_PVC_ROOT = "/mnt/pvc"


def local_path(uri: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The file a local URI names (plain path, ``file://``, ``pvc://``); None if remote."""
    env = os.environ if environ is None else environ
    parts = urlsplit(uri)
    if parts.scheme == "" or (len(parts.scheme) == 1 and uri[1:3] == ":\\"):
        return Path(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidUri(f"{uri!r}: file:// URIs name a local path (file:///path)")
        return Path(unquote(parts.path))
    if parts.scheme == "pvc":
        claim, path = parts.netloc, unquote(parts.path).lstrip("/")
        if not claim or not path:
            raise InvalidUri(f"{uri!r} is not of the form pvc://claim/path/to/model.onnx")
        root = Path(env.get("MODELDEPLOY_PVC_ROOT", DEFAULT_PVC_ROOT))
        resolved = (root / claim / path).resolve()
        if not resolved.is_relative_to((root / claim).resolve()):
            raise InvalidUri(f"{uri!r} points outside the claim's mount")
        return root / claim / path
    if parts.scheme in ("http", "https", "s3"):
        return None
    raise InvalidUri(
        f"{uri!r}: unsupported scheme {parts.scheme!r}; use a path, file://, pvc://, "
        "http(s):// or s3://"
    )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    uri: str,
    dest_dir: Path,
    *,
    sha256: str | None = None,
    filename: str = "model.onnx",
    timeout: float = DEFAULT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    attempts: int = 5,
    max_bytes: int = DEFAULT_MAX_BYTES,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "model",
) -> Path:
    """Fetch ``uri`` into ``dest_dir/filename``, verified; returns the placed path.

    ``timeout`` bounds the whole download of this file (every attempt and wait),
    ``read_timeout`` each network operation; ``what`` names the file in log lines.
    """
    env = os.environ if environ is None else environ
    expected = sha256.lower() if sha256 else None
    source_path = local_path(uri, env)
    target = dest_dir / filename
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        if expected and target.is_file() and file_sha256(target) == expected:
            log.info(f"{what} already present", extra={"fields": {"path": str(target)}})
            return target
        _remove_stale_partials(dest_dir)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finally
            dir=dest_dir, prefix=f".{filename}.", suffix=".partial", delete=False
        )
    except OSError as exc:
        raise LocalIOError(f"cannot write to {dest_dir}: {exc}") from None
    temporary = Path(handle.name)
    try:
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # ours while we write it
            fields = {"uri": redact_uri(uri), "dest": str(target)}
            log.info(f"fetching {what}", extra={"fields": fields})
            if source_path is not None:
                digest = _copy_local(source_path, uri, handle, max_bytes)
            else:
                digest = download(uri, handle, env, timeout=timeout, read_timeout=read_timeout,
                                  attempts=attempts, max_bytes=max_bytes, sleep=sleep)  # fmt: skip
            handle.flush()
            os.fsync(handle.fileno())
        actual = digest.hexdigest()
        if expected and actual != expected:
            raise DigestMismatch(
                f"sha256 mismatch for {redact_uri(uri)}: expected {expected}, got {actual}; "
                "nothing placed"
            )
        if not expected:
            log.warning(
                f"no sha256 given: the {what} is not verified",
                extra={"fields": {"uri": redact_uri(uri), "sha256": actual}},
            )
        os.replace(temporary, target)
        _fsync_dir(dest_dir)
    except OSError as exc:
        raise LocalIOError(f"cannot write {target}: {exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    log.info(f"{what} placed", extra={"fields": {"path": str(target), "sha256": actual}})
    return target


def _remove_stale_partials(directory: Path) -> None:
    """Remove the partial files no running fetch holds (a fetch locks its own)."""
    for path in directory.glob(".*.partial"):
        try:
            with path.open("rb") as partial:
                fcntl.flock(partial.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                size = os.fstat(partial.fileno()).st_size
                path.unlink()
        except BlockingIOError:
            continue  # another fetch is writing it
        except OSError:
            continue
        log.warning(
            "removed a partial download left by an interrupted fetch",
            extra={"fields": {"path": str(path), "bytes": size}},
        )


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def _copy_local(path: Path, uri: str, target: IO[bytes], max_bytes: int) -> Hasher:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            if size > max_bytes:
                raise TooLarge(f"{uri} is {size} bytes, more than --max-bytes {max_bytes}")
            progress = Progress(uri, size)
            while chunk := source.read(CHUNK):
                try:
                    target.write(chunk)
                except OSError as exc:
                    raise LocalIOError(f"writing the model failed: {exc}") from None
                digest.update(chunk)
                progress.advance(len(chunk))
            progress.finish()
        return digest
    except FileNotFoundError:
        raise SourceNotFound(f"{uri}: no such file {path}") from None
    except IsADirectoryError:
        raise SourceNotFound(f"{uri}: {path} is a directory, not a model file") from None
    except PermissionError:
        raise AccessDenied(f"{uri}: permission denied reading {path}") from None
