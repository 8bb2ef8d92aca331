"""Structured logs: one JSON object per line (default) or readable text.

Context (deployment, track, pod, worker) is attached to every record; call sites pass
extra fields as ``extra={"fields": {...}}``. Tracebacks go to the log, never to clients.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
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


class LimitWarnings:
    """Counts every time a limit is hit and logs it as a warning, at most once per limit and
    ``interval`` seconds (with the number of hits the line stands for): an attack that hits
    a limit thousands of times a second must not flood the log. The counts feed a metric."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def hit(self, limit: str, message: str, **fields: Any) -> None:
        """Count one hit of ``limit``; log ``message`` unless it was logged recently."""
        self.counts[limit] = self.counts.get(limit, 0) + 1
        now = self.clock()
        last = self._last.get(limit)
        if last is not None and now - last < self.interval:
            self._unlogged[limit] = self._unlogged.get(limit, 0) + 1
            return
        self._last[limit] = now
        hits = self._unlogged.pop(limit, 0) + 1
        self.logger.warning(message, extra={"fields": {"limit": limit, "hits": hits, **fields}})
