"""Light inference traffic as clients send it, through the ModelDeployment's Service or through
the cluster's gateway. The Service (kube-proxy) picks a pod for each connection, so the
canary's share follows its share of the pods; the gateway (with ``host``, the HTTPRoute's
hostname) sends each request by the route's weights. Each answer names the model version that
served it."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

ROWS_PER_CLASS = 5
PROMOTING = -1
"""The weight ``mark`` takes while the stable track takes the new model: both tracks then
answer with the new version, so the share by version no longer measures the weight."""


class Traffic:
    """Requests of a few rows of every class, one after another, until stopped.

    Each request carries the same number of rows of each class, so the two tracks see the
    same mix of inputs and their predictions can be compared (the prediction-drift check)."""

    def __init__(
        self,
        model: str,
        url: str,
        rows_by_class: Sequence[Sequence[Sequence[float]]],
        *,
        period: float = 0.05,
        host: str | None = None,
    ) -> None:
        self.model = model
        self.host = host
        self.url = urlsplit(url)
        self.rows_by_class = rows_by_class
        self.period = period
        self.weight = 0
        """The canary weight the rollout had set when a request was sent (see ``mark``)."""
        self.answers: Counter[tuple[int, str, int]] = Counter()
        """(weight, model version, HTTP status) -> requests; status 0 is a connection error."""
        self.errors: Counter[str] = Counter()
        """Connection errors by exception type (refused, reset, timeout)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def mark(self, weight: int) -> None:
        """Count the requests from now on under ``weight``."""
        self.weight = weight

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

    def _send(self, body: bytes) -> tuple[str, int]:
        """(model version, status) of one request on a connection of its own: the Service
        balances connections, not requests."""
        connection = http.client.HTTPConnection(
            self.url.hostname or "127.0.0.1", self.url.port, timeout=10
        )
        try:
            connection.request(
                "POST",
                f"/v2/models/{self.model}/infer",
                body,
                {
                    "Content-Type": "application/json",
                    "Connection": "close",
                    **({"Host": self.host} if self.host else {}),
                },
            )
            response = connection.getresponse()
            payload = response.read()
            version = ""
            if response.status == 200:
                version = str(json.loads(payload).get("model_version") or "")
            return version, int(response.status)
        except (OSError, http.client.HTTPException, ValueError) as error:
            self.errors[type(error).__name__] += 1
            return "", 0
        finally:
            connection.close()

    def _run(self) -> None:
        sent = 0
        while not self._stop.wait(self.period):
            weight = self.weight
            version, status = self._send(self.body(sent))
            sent += 1
            self.answers[(weight, version, status)] += 1

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)

    def summary(self, canary_version: str) -> str:
        """Requests answered, and at each weight the share the canary's version answered."""
        total = sum(self.answers.values())
        ok = sum(n for (_, _, code), n in self.answers.items() if code == 200)
        parts = [f"{ok} of {total} requests answered 200"]
        failed: Counter[int] = Counter()
        for (_, _, code), n in self.answers.items():
            if code != 200:
                failed[code] += n
        if failed:
            said = ", ".join(
                f"{n} {'connection error(s)' if code == 0 else f'HTTP {code}'}"
                for code, n in sorted(failed.items())
            )
            if self.errors:
                said += " (" + ", ".join(f"{n} {e}" for e, n in self.errors.most_common()) + ")"
            parts.append(f"failed: {said}")
        for weight in sorted({w for w, _, _ in self.answers}):
            if weight in (0, PROMOTING):
                continue
            at = sum(n for (w, _, code), n in self.answers.items() if w == weight and code == 200)
            canary = sum(
                n
                for (w, version, code), n in self.answers.items()
                if w == weight and code == 200 and version == canary_version
            )
            if at:
                parts.append(
                    f"weight {weight}%: the canary answered {canary / at:.0%} of {at} requests"
                )
        return "; ".join(parts)
