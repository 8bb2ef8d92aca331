"""Light inference traffic to the servers that stand in for the pods, split like the Service
splits it: the canary gets ``weight`` percent of the requests (the rollout's current weight)."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

ROWS_PER_CLASS = 5


class Traffic:
    """Requests of a few rows of every class, one after another, until stopped.

    Each request carries the same number of rows of each class, so the two tracks see the
    same mix of inputs and their predictions can be compared (the prediction-drift check)."""

    def __init__(
        self,
        model: str,
        urls: dict[str, str],
        rows_by_class: Sequence[Sequence[Sequence[float]]],
        *,
        period: float = 0.05,
    ) -> None:
        self.model = model
        self.urls = urls
        self.rows_by_class = rows_by_class
        self.period = period
        self.weight = 0
        """Percentage of requests sent to the canary track (read at each request)."""
        self.answers: Counter[tuple[str, int]] = Counter()
        """(track, HTTP status) -> requests; status 0 is a connection error."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def body(self, index: int) -> bytes:
        rows: list[Sequence[float]] = []
        for rows_of_class in self.rows_by_class:
            for offset in range(ROWS_PER_CLASS):
                rows.append(rows_of_class[(index * ROWS_PER_CLASS + offset) % len(rows_of_class)])
        request = {
            "inputs": [
                {
                    "name": "X",
                    "shape": [len(rows), len(rows[0])],
                    "datatype": "FP32",
                    "data": [float(v) for row in rows for v in row],
                }
            ]
        }
        return json.dumps(request).encode()

    def _send(
        self, connections: dict[str, http.client.HTTPConnection], track: str, body: bytes
    ) -> int:
        url = urlsplit(self.urls[track])
        connection = connections.get(track)
        if connection is None:
            connection = connections[track] = http.client.HTTPConnection(
                url.hostname or "127.0.0.1", url.port, timeout=10
            )
        try:
            connection.request(
                "POST",
                f"/v2/models/{self.model}/infer",
                body,
                {"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            response.read()
            return int(response.status)
        except (OSError, http.client.HTTPException):
            connection.close()
            connections.pop(track, None)
            return 0

    def _run(self) -> None:
        connections: dict[str, http.client.HTTPConnection] = {}
        credit = 0.0
        sent: Counter[str] = Counter()
        while not self._stop.wait(self.period):
            # Deterministic split: weight 25 sends every fourth request to the canary.
            credit += self.weight / 100
            track = "stable"
            if credit >= 1 - 1e-9 and "canary" in self.urls:
                track, credit = "canary", credit - 1
            # Each track walks through every row of the data set in its own order.
            body = self.body(sent[track])
            sent[track] += 1
            self.answers[(track, self._send(connections, track, body))] += 1
        for connection in connections.values():
            connection.close()

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)

    def summary(self) -> str:
        parts = []
        for track in self.urls:
            total = sum(n for (t, _), n in self.answers.items() if t == track)
            ok = sum(n for (t, code), n in self.answers.items() if t == track and code == 200)
            parts.append(f"{track} answered {total} request(s), {ok} with 200")
        return "; ".join(parts)
