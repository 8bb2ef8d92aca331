"""``modeldeploy-server``: ``serve`` (the default subcommand) and ``fetch``.

Every ``serve`` option can also be set as ``MODELDEPLOY_SERVER_<NAME>`` (``--http-port``
is ``MODELDEPLOY_SERVER_HTTP_PORT``); the command line wins. ``fetch`` reads
``MODELDEPLOY_SERVER_MODEL_URI``, ``MODELDEPLOY_SERVER_SHA256``,
``MODELDEPLOY_SERVER_PROFILE_URI``, ``MODELDEPLOY_SERVER_PROFILE_SHA256`` and
``MODELDEPLOY_SERVER_DEST`` the same way, so an init container and the server can share
one environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .settings import ENV_PREFIX, ServerSettings, SettingsError, load_settings

SUBCOMMANDS = ("serve", "fetch")

FETCH_EXIT_CODES = """exit codes:
  0  placed (or already present with the expected digest)
  1  other failure          2  usage error
  3  not found              4  access denied
  5  sha256 mismatch        6  source unavailable after retries, or --timeout reached
  7  invalid URI            8  local I/O error (destination not writable, disk full)
  9  larger than --max-bytes
 10  redirect refused (not http(s), https to http, more than 5)
143  interrupted by SIGTERM/SIGINT (the partial file is removed)

Credentials (Authorization, S3 signature headers) go only to the origin given; a redirect
to another host is followed without them.
"""


SERVE_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("--model-name", {}, "served as /v2/models/NAME (default: the file's stem)"),
    ("--model-uri", {}, "plain path, file://, pvc://claim/path, http(s)://, s3://bucket/key"),
    ("--model-version", {}, "informative version, reported in metadata and metrics"),
    ("--sha256", {}, "refuse to serve a model file whose sha256 differs"),
    ("--profile-uri", {},
     "the model's training profile (model.profile.json), any --model-uri scheme"),
    ("--profile-sha256", {}, "refuse a profile file whose sha256 differs"),
    ("--quality-policy", {"choices": ["observe", "reject"]},
     "inputs outside the profile: only counted (observe), or refused with 422 (reject)"),
    ("--drift-window", {"type": int}, "recent values per feature and worker scored for drift"),
    ("--host", {}, "address to listen on"),
    ("--http-port", {"type": int}, "inference port"),
    ("--metrics-port", {"type": int}, "Prometheus metrics port"),
    ("--threads", {"type": int}, "onnxruntime intra-op threads per worker (default: CPUs/workers)"),
    ("--workers", {"type": int}, "worker processes sharing the port (default: the CPU limit)"),
    ("--max-batch-size", {"type": int}, "rows per dynamic batch; 1 disables batching"),
    ("--max-batch-delay-ms", {"type": float}, "longest wait for requests already on their way"),
    ("--max-request-bytes", {"type": int}, "larger bodies are refused with 413"),
    ("--inline-inference-ms", {"type": float},
     "batches expected to be faster run on the event loop; 0: always in a thread"),
    ("--graceful-timeout", {"type": float}, "seconds in-flight requests get after SIGTERM"),
    ("--drain-delay", {"type": float}, "seconds to keep serving, not ready, after SIGTERM"),
    ("--keep-alive-timeout", {"type": float}, "seconds an idle keep-alive connection stays open"),
    ("--max-connections", {"type": int},
     "open connections per worker (lowered to fit the open-file limit); beyond it the "
     "connection longest waiting for a request is closed, or the new one gets 503"),
    ("--header-timeout", {"type": float},
     "seconds a request head may take from accept (or its first byte); then 408"),
    ("--min-body-rate", {"type": int},
     "bytes/s a request body must bring over every 5 s; slower gets 408; 0: no check"),
    ("--worker-heartbeat-timeout", {"type": float},
     "seconds a worker's event loop may go silent before the worker is killed and replaced"),
    ("--max-worker-restarts", {"type": int},
     "worker restarts within 10 minutes before the server gives up and exits 1"),
    ("--max-inflight-body-bytes", {"type": int},
     "request body bytes a worker holds at once; beyond it 503 (default: 4 x max-request-bytes)"),
    ("--shadow-config", {},
     "JSON file {\"target\": \"http://canary:8080\", \"percent\": 100} naming where to mirror "
     "answered requests; re-read when it changes; missing or empty: no mirroring"),
    ("--shadow-queue-size", {"type": int},
     "mirrored copies waiting per worker; a copy that does not fit is dropped and counted"),
    ("--shadow-timeout", {"type": float}, "seconds the shadow has to answer one copy"),
    ("--shadow-concurrency", {"type": int}, "copies sent at once per worker"),
    ("--shadow-tolerance", {"type": float},
     "regressors: relative error above which a row counts as a disagreement"),
    ("--model-cache-dir", {}, "where a remote model is downloaded"),
    ("--log-format", {"choices": ["json", "text"]}, "log lines as JSON or text"),
    ("--log-level", {"choices": ["debug", "info", "warning", "error"]}, "log level"),
    ("--access-log", {"action": "store_const", "const": True}, "log every request"),
]  # fmt: skip
"""Every ``serve`` option; defaults and variables come from ``ServerSettings``."""


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over the Open Inference Protocol (default)",
        description="Serve one ONNX model over the Open Inference Protocol (KServe v2) and "
        f"KServe v1. Each option may also be set as {ENV_PREFIX}<NAME>; the flag wins.",
    )
    for flag, kwargs, text in SERVE_OPTIONS:
        name = flag[2:].replace("-", "_")
        default = ServerSettings.model_fields[name].default
        hidden = default is None or default is False or "default" in text
        shown = "" if hidden else f"; default {default}"
        p.add_argument(
            flag, default=None, help=f"{text}{shown} [{ENV_PREFIX}{name.upper()}]", **kwargs
        )


def _fetch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fetch",
        help="download a model (and its profile), verify the sha256 and place it atomically",
        description="Fetch a model, its training profile or both for the server (the pod's "
        "init container). Each is verified and placed like the other; the model first.",
        epilog=FETCH_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-uri", help="file://, path, pvc://, http(s)://, s3://")
    p.add_argument("--sha256", help="expected hex digest; nothing is placed on mismatch")
    p.add_argument("--dest", help="destination directory")
    p.add_argument("--filename", default="model.onnx", help="name of the placed model file")
    p.add_argument("--profile-uri", help="the model's training profile, any --model-uri scheme")
    p.add_argument("--profile-sha256", help="expected hex digest of the profile")
    p.add_argument("--profile-filename", default="model.profile.json",
                   help="name of the placed profile file")  # fmt: skip
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds the download of each file may take in all, retries included "
                   "(default 600)")  # fmt: skip
    p.add_argument(
        "--read-timeout",
        type=float,
        default=30.0,
        help="seconds one network operation (connect, a read) may take (default 30)",
    )
    p.add_argument("--max-bytes", type=int, default=2 * 1024**3,
                   help="refuse a file larger than this, before or while downloading it "
                   "(default 2 GiB, the largest single-file ONNX model)")  # fmt: skip
    p.add_argument("--attempts", type=int, default=5, help="tries for transient failures")
    p.add_argument("--log-format", choices=["json", "text"], default=None)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="modeldeploy-server",
        description="An ONNX Runtime server speaking the Open Inference Protocol.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")
    _serve_parser(sub)
    _fetch_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (
        args_list[0] not in SUBCOMMANDS and args_list[0] not in ("-h", "--help", "--version")
    ):
        args_list.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command == "fetch":
        return _fetch(parser, args)
    options = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        settings = load_settings(options)
    except SettingsError as exc:
        parser.error(str(exc))
    if not settings.model_uri:
        parser.error(f"--model-uri (or {ENV_PREFIX}MODEL_URI) is required")
    from .server import serve

    return serve(settings)


def _fetch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .fetch import FetchError, Interrupted, fetch, is_sha256
    from .logs import configure_logging

    env = os.environ
    uri = args.model_uri or env.get(ENV_PREFIX + "MODEL_URI")
    sha256 = args.sha256 or env.get(ENV_PREFIX + "SHA256") or None
    profile_uri = args.profile_uri or env.get(ENV_PREFIX + "PROFILE_URI")
    profile_sha256 = args.profile_sha256 or env.get(ENV_PREFIX + "PROFILE_SHA256") or None
    dest = args.dest or env.get(ENV_PREFIX + "DEST")
    log_format = args.log_format or env.get(ENV_PREFIX + "LOG_FORMAT") or "json"
    if not (uri or profile_uri) or not dest:
        parser.error("fetch needs --dest and --model-uri, --profile-uri or both")
    for flag, digest in (("--sha256", sha256), ("--profile-sha256", profile_sha256)):
        if digest is not None and not is_sha256(digest):
            parser.error(f"{flag} must be 64 hexadecimal characters")
    if profile_sha256 is not None and not profile_uri:
        parser.error("--profile-sha256 is given without --profile-uri")
    if args.attempts < 1 or args.timeout <= 0 or args.read_timeout <= 0 or args.max_bytes < 1:
        parser.error("--attempts, --timeout, --read-timeout and --max-bytes must be positive")
    configure_logging(log_format, "info", {"command": "fetch"})
    log = logging.getLogger("modeldeploy_server.fetch")
    jobs = [
        ("model", uri, sha256, args.filename),
        ("profile", profile_uri, profile_sha256, args.profile_filename),
    ]

    def interrupted(signum: int, frame: object) -> None:
        # Unwinds the fetch, whose cleanup removes the partial file.
        raise Interrupted(f"stopped by {signal.Signals(signum).name}; partial file removed")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupted)
    try:
        for what, source, digest, filename in jobs:
            if source:
                fetch(source, Path(dest), sha256=digest, filename=filename,
                      timeout=args.timeout, read_timeout=args.read_timeout,
                      attempts=args.attempts, max_bytes=args.max_bytes, what=what)  # fmt: skip
    except FetchError as exc:
        log.error(str(exc), extra={"fields": {"error": exc.kind, "exit_code": exc.exit_code}})
        return exc.exit_code
    return 0
