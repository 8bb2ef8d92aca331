"""Structured logs: one JSON object per line (default) or readable text.

Context (deployment, track, pod, worker) is attached to every record; call sites pass
extra fields as ``extra={"fields": {...}}``. Tracebacks go to the log, never to clients.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...context, ...fields}`` per line."""

    def __init__(self, context: dict[str, Any]) -> None:
        super().__init__()
        self.context = {k: v for k, v in context.items() if v not in (None, "")}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(self.context)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for people at a terminal."""

    def __init__(self, context: dict[str, Any]) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        worker = context.get("worker")
        self.prefix = f"[worker {worker}] " if worker is not None else ""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return self.prefix + text


def configure_logging(log_format: str, level: str, context: dict[str, Any]) -> None:
    """Route every logger (ours, uvicorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(context) if log_format == "json" else TextFormatter(context)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
