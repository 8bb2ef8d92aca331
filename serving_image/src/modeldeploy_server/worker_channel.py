"""The supervisor's end of one worker's pipe: messages to the worker, questions with matched
answers (a scrape's snapshot, the model's state)."""

from __future__ import annotations

import contextlib
import threading
import time
from multiprocessing.connection import Connection
from typing import Any


class WorkerChannel:
    """The supervisor's end of one worker's pipe: serialized, with matched replies."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.sequence = 0
        self.last_snapshot: dict[str, Any] | None = None

    def send(self, message: Any) -> None:
        # A gone worker is the wait loop's business, not the sender's.
        with self.lock, contextlib.suppress(OSError, EOFError):
            self.conn.send(message)

    def ask(self, kind: str, timeout: float) -> tuple[bool, Any]:
        """Send a question, wait for its answer: (answered, payload)."""
        with self.lock:
            self.sequence += 1
            deadline = time.monotonic() + timeout
            try:
                self.conn.send((kind, self.sequence))
                while (remaining := deadline - time.monotonic()) > 0:
                    if not self.conn.poll(remaining):
                        break
                    sequence, payload = self.conn.recv()
                    if sequence == self.sequence:  # skip late answers to earlier questions
                        return True, payload
            except (OSError, EOFError):
                pass
            return False, None

    def snapshot(self, timeout: float) -> dict[str, Any] | None:
        """A fresh snapshot, or the last one when the worker does not answer in time."""
        answered, snapshot = self.ask("snapshot", timeout)
        if answered:
            self.last_snapshot = snapshot
        return self.last_snapshot

    def close(self) -> None:
        """The worker is gone: release the pipe (waiting for a question in flight)."""
        with self.lock, contextlib.suppress(OSError):
            self.conn.close()
