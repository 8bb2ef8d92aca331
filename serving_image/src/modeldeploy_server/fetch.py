"""Model fetch: download or copy a model, verify its sha256, then place it atomically.

Run as the pod's init container (``modeldeploy-server fetch``) and by the server itself
for remote ``--model-uri``. Sources: ``file://`` or a plain path, ``pvc://claim/path``
(the claim mounted at ``$MODELDEPLOY_PVC_ROOT/claim``, default ``/mnt/pvc/claim``),
``http(s)://`` (timeouts, retries with backoff; ``MODELDEPLOY_HTTP_AUTHORIZATION`` is
sent as the Authorization header) and ``s3://bucket/key`` (see ``s3``).

The bytes go to a hidden temporary file beside the destination; only when the digest
matches is it renamed into place, so a reader never sees a partial or wrong model.

Exit codes of ``modeldeploy-server fetch`` (``FetchError.exit_code``):

==== ===================================================================
0    placed (or already present with the expected digest)
1    other failure (an unexpected answer from the source)
2    usage error (bad options)
3    not found (no such file, HTTP 404/410, S3 NoSuchKey/NoSuchBucket)
4    access denied (HTTP 401/403, S3 AccessDenied, unreadable file)
5    sha256 mismatch (nothing is placed)
6    source unavailable after retries (network errors, timeouts, 5xx)
7    invalid or unsupported URI
8    local I/O error (destination not writable, disk full)
==== ===================================================================
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import random
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from . import s3

SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"
"""A SHA-256 digest as the flags and the profile give it: 64 hexadecimal characters."""


def is_sha256(text: object) -> bool:
    return isinstance(text, str) and re.fullmatch(SHA256_PATTERN, text) is not None


log = logging.getLogger(__name__)

CHUNK = 1 << 20
DEFAULT_PVC_ROOT = "/mnt/pvc"
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
Hasher = Any  # hashlib's hash objects have no public type


class FetchError(Exception):
    """A fetch failed; ``exit_code`` tells which way (see the module docstring)."""

    exit_code = 1
    kind = "failed"


class SourceNotFound(FetchError):
    exit_code = 3
    kind = "not-found"


class AccessDenied(FetchError):
    exit_code = 4
    kind = "denied"


class DigestMismatch(FetchError):
    exit_code = 5
    kind = "digest-mismatch"


class SourceUnavailable(FetchError):
    exit_code = 6
    kind = "unavailable"


class InvalidUri(FetchError):
    exit_code = 7
    kind = "invalid-uri"


class LocalIOError(FetchError):
    exit_code = 8
    kind = "local-io"


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


class _Progress:
    """Logs bytes so far at most every ``interval`` seconds, and at the end."""

    def __init__(self, uri: str, total: int | None, interval: float = 2.0) -> None:
        self.uri, self.total, self.interval = uri, total, interval
        self.started = self.last = time.monotonic()
        self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._log("download progress")

    def finish(self) -> None:
        self._log("download complete")

    def _log(self, message: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        fields: dict[str, object] = {
            "uri": self.uri,
            "bytes": self.done,
            "seconds": round(elapsed, 3),
            "mib_per_second": round(self.done / elapsed / 2**20, 2),
        }
        if self.total:
            fields["total_bytes"] = self.total
            fields["percent"] = round(100 * self.done / self.total, 1)
        log.info(message, extra={"fields": fields})


def _copy_stream(source: IO[bytes], target: IO[bytes], digest: Hasher, progress: _Progress) -> None:
    while chunk := source.read(CHUNK):
        try:
            target.write(chunk)
        except OSError as exc:
            raise LocalIOError(f"writing the model failed: {exc}") from None
        digest.update(chunk)
        progress.advance(len(chunk))


def fetch(
    uri: str,
    dest_dir: Path,
    *,
    sha256: str | None = None,
    filename: str = "model.onnx",
    timeout: float = 30.0,
    attempts: int = 5,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "model",
) -> Path:
    """Fetch ``uri`` into ``dest_dir/filename``, verified; returns the placed path.

    ``what`` names the file in log lines ("model", "profile").
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
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finally
            dir=dest_dir, prefix=f".{filename}.", suffix=".partial", delete=False
        )
    except OSError as exc:
        raise LocalIOError(f"cannot write to {dest_dir}: {exc}") from None
    temporary = Path(handle.name)
    try:
        with handle:
            fields = {"uri": redact_uri(uri), "dest": str(target)}
            log.info(f"fetching {what}", extra={"fields": fields})
            if source_path is not None:
                digest = _copy_local(source_path, uri, handle)
            else:
                digest = _download(uri, handle, env, timeout, attempts, sleep)
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


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_local(path: Path, uri: str, target: IO[bytes]) -> Hasher:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            progress = _Progress(uri, size)
            _copy_stream(source, target, digest, progress)
            progress.finish()
        return digest
    except FileNotFoundError:
        raise SourceNotFound(f"{uri}: no such file {path}") from None
    except IsADirectoryError:
        raise SourceNotFound(f"{uri}: {path} is a directory, not a model file") from None
    except PermissionError:
        raise AccessDenied(f"{uri}: permission denied reading {path}") from None


def _request(uri: str, env: Mapping[str, str]) -> urllib.request.Request:
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        try:
            obj = s3.resolve(uri, env)
        except ValueError as exc:
            raise InvalidUri(str(exc)) from None
        return urllib.request.Request(obj.url, headers=s3.signed_headers(obj, env))
    headers = {}
    if parts.username is not None:
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        uri = parts._replace(netloc=netloc).geturl()
    if env.get("MODELDEPLOY_HTTP_AUTHORIZATION"):
        headers["Authorization"] = env["MODELDEPLOY_HTTP_AUTHORIZATION"]
    return urllib.request.Request(uri, headers=headers)


def _download(
    uri: str,
    target: IO[bytes],
    env: Mapping[str, str],
    timeout: float,
    attempts: int,
    sleep: Callable[[float], None],
) -> Hasher:
    redacted = redact_uri(uri)
    reason = ""
    for attempt in range(1, attempts + 1):
        request = _request(uri, env)  # signed again each attempt: SigV4 dates expire
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                progress = _Progress(redacted, int(length) if length and length.isdigit() else None)
                target.seek(0)
                target.truncate()
                digest = hashlib.sha256()
                _copy_stream(response, target, digest, progress)
                if progress.total is not None and progress.done != progress.total:
                    raise ConnectionError(
                        f"connection closed after {progress.done} of {progress.total} bytes"
                    )
                progress.finish()
                return digest
        except urllib.error.HTTPError as exc:
            problem = _http_problem(redacted, exc)
            if exc.code not in _RETRYABLE_HTTP:
                raise problem from None
            reason = f"HTTP {exc.code} {exc.reason}"
            if attempt == attempts:
                break
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
            if attempt == attempts:
                break
        delay = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        log.warning(
            "download attempt failed; retrying",
            extra={"fields": {"uri": redacted, "attempt": attempt, "reason": reason,
                              "retry_in_seconds": round(delay, 2)}},
        )  # fmt: skip
        sleep(delay)
    raise SourceUnavailable(f"{redacted}: unavailable after {attempts} attempts: {reason}")


def _http_problem(uri: str, exc: urllib.error.HTTPError) -> FetchError:
    detail = ""
    try:
        body = exc.read(4096).decode("utf-8", "replace")
    except Exception:
        body = ""
    if "<Code>" in body:  # S3 error document
        code = body.split("<Code>", 1)[1].split("</Code>", 1)[0]
        detail = f" ({code})"
    message = f"{uri}: HTTP {exc.code} {exc.reason}{detail}"
    if exc.code in (404, 410):
        return SourceNotFound(message)
    if exc.code in (401, 403):
        return AccessDenied(message)
    if exc.code in _RETRYABLE_HTTP:
        return SourceUnavailable(message)
    return FetchError(message)


def redact_uri(uri: str) -> str:
    """``uri`` without what may be a secret: the user information (``user:password@``, or a
    token as the user) and the query (presigned URLs carry their signature there)."""
    try:
        parts = urlsplit(uri)
        if parts.username is None and not parts.query and not parts.fragment:
            return uri
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:  # not parseable (a bad port): show only the scheme
        return uri.split(":", 1)[0] + "://(redacted)" if "://" in uri else "(redacted)"
    return parts._replace(netloc=netloc, query="", fragment="").geturl()
