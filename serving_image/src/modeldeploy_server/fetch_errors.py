"""How a model fetch fails: one exception class per exit code of ``modeldeploy-server fetch``
(the table is in ``fetch``)."""

from __future__ import annotations


class FetchError(Exception):
    """A fetch failed; ``exit_code`` tells which way."""

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


class TooLarge(FetchError):
    """The source is larger than ``--max-bytes`` (said up front, or found while reading)."""

    exit_code = 9
    kind = "too-large"


class RedirectRefused(FetchError):
    """A redirect to another scheme than http(s), from https to http, or one too many."""

    exit_code = 10
    kind = "redirect-refused"


class Interrupted(FetchError):
    """SIGTERM or SIGINT during the fetch; the partial file is removed."""

    exit_code = 143
    kind = "interrupted"
