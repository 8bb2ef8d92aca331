"""Downloads over http(s) and from S3 for ``fetch``: retries, an overall deadline, a size cap
and a redirect policy that keeps credentials at the origin they were given for.

Standard library only (no requests or boto3 in the image). urllib follows redirects with
every request header copied, Authorization and S3 signatures included, to any host and from
https to http, and opens ftp:// too; so the opener here is assembled by hand: http(s) only,
at most ``MAX_REDIRECTS`` hops, no downgrade, and credentials (``Authorization``, cookies,
every ``X-Amz-*`` header) dropped on a hop to another origin (scheme, host, port).
A byte that drips every few seconds keeps any per-read timeout happy, so reads are bounded
by the time left until the deadline as well (``_Deadline``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from . import s3
from .fetch_errors import (
    AccessDenied,
    FetchError,
    InvalidUri,
    LocalIOError,
    RedirectRefused,
    SourceNotFound,
    SourceUnavailable,
    TooLarge,
)

log = logging.getLogger("modeldeploy_server.fetch")

CHUNK = 1 << 20
MAX_REDIRECTS = 5
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
_CREDENTIALS = ("authorization", "proxy-authorization", "cookie")
Hasher = Any  # hashlib's hash objects have no public type


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


class Progress:
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


class _Deadline:
    """The time left for one file, and the socket of the connection in use (set on connect)
    so that each read waits at most ``read_timeout`` and never past the deadline."""

    def __init__(self, uri: str, seconds: float, read_timeout: float) -> None:
        self.uri, self.seconds, self.read_timeout = uri, seconds, read_timeout
        self.at = time.monotonic() + seconds
        self.sock: Any = None

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def timeout(self) -> float:
        """Seconds the next network operation may take; raises once the deadline passed."""
        remaining = self.remaining()
        if remaining <= 0:
            raise SourceUnavailable(
                f"{self.uri}: timed out: the download did not finish within --timeout "
                f"{self.seconds:g} s"
            )
        return min(self.read_timeout, remaining)

    def arm(self) -> None:
        if self.sock is not None:
            self.sock.settimeout(self.timeout())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    # Our own count (redirect_request) comes first; urllib's loop checks stay as a backstop.
    max_redirections = MAX_REDIRECTS + 1
    max_repeats = MAX_REDIRECTS + 1

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        old, new = redact_uri(req.full_url), redact_uri(newurl)
        scheme = urlsplit(newurl).scheme
        if scheme not in ("http", "https"):
            raise RedirectRefused(f"{old}: redirect to {scheme}:// refused (http(s) only)")
        if urlsplit(req.full_url).scheme == "https" and scheme == "http":
            raise RedirectRefused(f"{old}: redirect from https to http ({new}) refused")
        hops = getattr(req, "hops", 0) + 1
        if hops > MAX_REDIRECTS:
            raise RedirectRefused(f"{old}: more than {MAX_REDIRECTS} redirects")
        follow = super().redirect_request(req, fp, code, msg, headers, newurl)
        if follow is None:
            return None
        dropped = []
        if _origin(req.full_url) != _origin(newurl):
            for name in list(follow.headers):
                if name.lower() in _CREDENTIALS or name.lower().startswith("x-amz-"):
                    del follow.headers[name]
                    dropped.append(name.lower())
        follow.hops = hops  # type: ignore[attr-defined]
        log.info("following a redirect", extra={"fields": {
            "from": old, "to": new, "status": code, "credentials_dropped": dropped}})  # fmt: skip
        return follow


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.sock = self.sock

    class TLSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            deadline.sock = self.sock

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(Connection, req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(TLSConnection, req, context=self._context)  # type: ignore[attr-defined]

    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),  # HTTPS_PROXY and friends, as users expect
        urllib.request.UnknownHandler(),
        HTTP(),
        HTTPS(),
        urllib.request.HTTPDefaultErrorHandler(),
        _RedirectPolicy(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


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


def download(
    uri: str,
    target: IO[bytes],
    env: Mapping[str, str],
    *,
    timeout: float,
    read_timeout: float,
    attempts: int,
    max_bytes: int,
    sleep: Callable[[float], None],
) -> Hasher:
    """Download ``uri`` into ``target`` (from its start on each attempt); its sha256."""
    redacted = redact_uri(uri)
    deadline = _Deadline(redacted, timeout, read_timeout)
    reason = ""
    for attempt in range(1, attempts + 1):
        request = _request(uri, env)  # signed again each attempt: SigV4 dates expire
        try:
            opener = _opener(deadline)
            with opener.open(request, timeout=deadline.timeout()) as response:
                return _stream(response, target, redacted, deadline, max_bytes)
        except urllib.error.HTTPError as exc:
            deadline.arm()
            problem = _http_problem(redacted, exc)
            if exc.code not in _RETRYABLE_HTTP:
                raise problem from None
            reason = f"HTTP {exc.code} {exc.reason}"
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
            reason = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        if attempt == attempts:
            break
        delay = min(8.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        if delay >= deadline.remaining():
            break
        log.warning(
            "download attempt failed; retrying",
            extra={"fields": {"uri": redacted, "attempt": attempt, "reason": reason,
                              "retry_in_seconds": round(delay, 2)}},
        )  # fmt: skip
        sleep(delay)
    if deadline.remaining() <= 0:
        raise SourceUnavailable(f"{redacted}: timed out after --timeout {timeout:g} s: {reason}")
    raise SourceUnavailable(f"{redacted}: unavailable after {attempt} attempts: {reason}")


def _stream(
    response: Any, target: IO[bytes], uri: str, deadline: _Deadline, max_bytes: int
) -> Hasher:
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isascii() and length.isdigit() else None
    if total is not None and total > max_bytes:
        raise TooLarge(f"{uri} is {total} bytes, more than --max-bytes {max_bytes}")
    progress = Progress(uri, total)
    target.seek(0)
    target.truncate()
    digest = hashlib.sha256()
    while True:
        deadline.arm()
        chunk = response.read1(CHUNK)
        if not chunk:
            break
        if progress.done + len(chunk) > max_bytes:
            raise TooLarge(f"{uri} sent more than --max-bytes {max_bytes} bytes; stopped")
        try:
            target.write(chunk)
        except OSError as exc:
            raise LocalIOError(f"writing the download failed: {exc}") from None
        digest.update(chunk)
        progress.advance(len(chunk))
    if total is not None and progress.done != total:
        raise ConnectionError(f"connection closed after {progress.done} of {total} bytes")
    progress.finish()
    return digest


def _http_problem(uri: str, exc: urllib.error.HTTPError) -> FetchError:
    detail = ""
    try:
        reader: Any = exc.fp  # the response: read1, so that a drip cannot hold us here
        body = reader.read1(4096).decode("utf-8", "replace") if reader else ""
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
