"""What the demo prints: numbered, timed steps; indented detail; commands as a user types them."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

INDENT = " " * 11  # under the "[  12.3s] " timestamp


class Console:
    """Progress lines, each stamped with the time since the demo started."""

    def __init__(self, total_steps: int, stream: TextIO | None = None) -> None:
        self.total_steps = total_steps
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.current: tuple[int, str] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, text: str) -> None:
        """One line with the elapsed time in front."""
        print(f"[{self.elapsed():6.1f}s] {text}", file=self.stream, flush=True)

    def info(self, text: str) -> None:
        """A timed line of detail under the current step."""
        self.line(f"    {text}")

    def block(self, text: str) -> None:
        """Several lines (a command's output), indented under the step, not timed."""
        for row in text.rstrip("\n").splitlines():
            print(f"{INDENT}  {row}".rstrip(), file=self.stream)
        self.stream.flush()

    def command(self, text: str) -> None:
        """A command, shown as the user would type it."""
        self.line(f"    $ {text}")

    @contextmanager
    def step(self, number: int, title: str) -> Iterator[None]:
        """Announce step ``number``; on success say how long it took."""
        self.current = (number, title)
        began = time.monotonic()
        print(file=self.stream)
        self.line(f"==> {number}/{self.total_steps} {title}")
        yield
        self.line(f"    step {number} done in {time.monotonic() - began:.1f}s")
        self.current = None
