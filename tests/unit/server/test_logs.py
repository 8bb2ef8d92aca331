"""Structured logs: JSON lines with context and fields; text for terminals."""

from __future__ import annotations

import json
import logging

import pytest

from modeldeploy_server.logs import JsonFormatter, TextFormatter


def _record(exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    record = logging.LogRecord(
        "modeldeploy_server.x", logging.INFO, __file__, 1, "hello %s", ("you",), exc_info
    )
    record.fields = {"model": "rf", "bytes": 3}
    return record


def test_json_lines_carry_context_and_fields() -> None:
    line = JsonFormatter({"deployment": "iris", "track": "canary", "pod": "", "worker": 1}).format(
        _record()
    )
    entry = json.loads(line)
    assert entry["message"] == "hello you" and entry["level"] == "info"
    assert entry["deployment"] == "iris" and entry["worker"] == 1 and "pod" not in entry
    assert entry["model"] == "rf" and entry["bytes"] == 3
    assert entry["time"].endswith("Z")


def test_exceptions_stay_in_the_log_line() -> None:
    entry = json.loads(JsonFormatter({}).format(_record(exc=True)))
    assert "ValueError: boom" in entry["exception"]


@pytest.mark.parametrize("worker", [None, 2])
def test_text_format(worker: int | None) -> None:
    line = TextFormatter({"worker": worker}).format(_record())
    assert "hello you" in line and "model=rf" in line
    assert line.startswith("[worker 2]") == (worker == 2)
