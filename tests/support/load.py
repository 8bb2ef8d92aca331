"""Real inference traffic to real servers in the background, counted by track and answer."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests

from tests.support.servers import ServerProcess

__all__ = ["BODY", "Load"]

BODY = {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": [0.5] * 8}]}
"""Two rows for the four-feature test classifiers."""


class Load:
    """Inference requests to each server in turn until stopped (``with Load(...)``).

    ``body`` makes each round's request (the same one goes to every track); ``pause`` waits
    between rounds. ``answers`` counts (track, HTTP status), 0 for no answer at all."""

    def __init__(
        self,
        servers: dict[str, ServerProcess],
        body: Callable[[], dict[str, Any]] | None = None,
        *,
        pause: float = 0.0,
    ) -> None:
        self.servers = servers
        self.body = body or (lambda: BODY)
        self.pause = pause
        self.answers: Counter[tuple[str, int]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                body = self.body()
                for track, server in self.servers.items():
                    url = f"{server.url}/v2/models/{server.name}/infer"
                    try:
                        code = session.post(url, json=body, timeout=10).status_code
                    except requests.RequestException:
                        code = 0
                    self.answers[(track, code)] += 1
                if self.pause:
                    self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def sent(self, track: str) -> int:
        return sum(n for (t, _), n in self.answers.items() if t == track)
