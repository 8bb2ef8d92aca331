"""Errors the data plane raises; the HTTP layer maps ``status`` to the response code.

Every message is meant for the client: it names the problem (the input, the field, the
limit) and never carries a traceback.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base class: an error with an HTTP status and a message safe to show a client."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServerError):
    """The request is malformed or does not match the model (400)."""

    status = 400


class NotFound(ServerError):
    """Unknown model, version or route (404)."""

    status = 404


class MethodNotAllowed(ServerError):
    """Known path, wrong HTTP method (405)."""

    status = 405

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class Forbidden(ServerError):
    """The request is understood but refused by policy (403)."""

    status = 403


class Unprocessable(ServerError):
    """Well-formed inputs outside the model's training profile, refused by policy (422)."""

    status = 422


class PayloadTooLarge(ServerError):
    """The body exceeds ``--max-request-bytes`` (413)."""

    status = 413


class UnsupportedMediaType(ServerError):
    """Unknown ``Content-Encoding`` (415)."""

    status = 415


class ClientDisconnected(ServerError):
    """The client went away mid-request (499, as nginx counts it; nobody reads the body)."""

    status = 499


class ModelNotReady(ServerError):
    """The model is loading, failed to load or the server is draining (503)."""

    status = 503


class Overloaded(ServerError):
    """The worker holds as many request bodies as it may; retry shortly (503, Retry-After)."""

    status = 503


class InferenceFailed(ServerError):
    """The runtime rejected inputs that passed validation (400: the inputs caused it)."""

    status = 400


class ModelLoadError(Exception):
    """A model could not be loaded; the message says why (digest, format, file)."""
