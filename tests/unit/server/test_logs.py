"""Structured logs: JSON lines with context and fields; text for terminals."""

from __future__ import annotations

import json
import logging

import pytest

from modeldeploy_server.logs import JsonFormatter, LimitWarnings, TextFormatter


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


def test_limit_warnings_count_every_hit_and_log_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    warnings = LimitWarnings(logging.getLogger("limits"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="limits"):
        for second in range(25):
            now[0] = float(second)
            for _ in range(100):
                warnings.hit("body-rate", "too slow", client="c")
        warnings.hit("connections", "too many")
    assert warnings.counts == {"body-rate": 2500, "connections": 1}
    lines = [(r.getMessage(), r.fields["limit"], r.fields["hits"]) for r in caplog.records]  # type: ignore[attr-defined]
    # The first hit, then one line per 10 s standing for the hits since the last line.
    assert lines == [
        ("too slow", "body-rate", 1),
        ("too slow", "body-rate", 1000),
        ("too slow", "body-rate", 1000),
        ("too many", "connections", 1),
    ]
