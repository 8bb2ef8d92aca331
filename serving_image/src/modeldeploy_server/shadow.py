"""Shadow mirroring: the stable server sends a copy of answered requests to the canary and
compares the canary's answers with its own, row by row.

On the request path the only costs are a sampling draw and, after the client has its
answer, one ``put_nowait`` of a ``MirrorCopy`` (references to the decoded inputs and to the
stable's outputs: nothing is copied or encoded). A full queue drops the copy and counts it.
A few sender tasks per worker take copies off the queue, encode them as one binary Open
Inference Protocol request (whatever protocol the client used, so that every answer comes
back in one format), send them with ``Modeldeploy-Shadow: 1`` on kept-alive connections
and, when the canary answers, pair the two answers (``shadow_pairing``) and count them
(``shadow_metrics``). Nothing on the request path awaits the canary.

A canary that cannot be reached (its pod is down, its Service has no endpoints) would still
cost the stable an encode and a connection attempt per copy, on the worker that serves the
clients. After ``unreachable_after`` connection failures in a row the mirror stops trying
for a while (doubling from ``retry_delay`` up to ``max_retry_delay``) and counts the copies
of that time as ``canary_error`` drops without sending them; the first copy after the
delay tries again, and any answer from the canary ends the pause.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .codec.binary import binary_data, decode_binary_data
from .profile import Profile
from .shadow_client import ShadowClient, ShadowConnectError, ShadowTransportError
from .shadow_config import ShadowConfigWatcher, ShadowTarget
from .shadow_metrics import ShadowTally
from .shadow_pairing import (
    PairingSpec,
    ProfileSlices,
    RowComparison,
    compare_classifications,
    compare_regressions,
    count_by_slice,
    pairing_spec,
)
from .tensors import Tensor, TensorSpec

log = logging.getLogger(__name__)

SHADOW_HEADER = b"modeldeploy-shadow"
"""Marks a mirrored copy: its receiver never mirrors it onward and counts it apart."""


@dataclass(frozen=True)
class ShadowOptions:
    """``--shadow-*`` settings of one worker."""

    config_path: str | None = None
    queue_size: int = 256
    timeout: float = 1.0
    concurrency: int = 4
    tolerance: float = 0.01
    poll_interval: float = 1.0
    unreachable_after: int = 3
    retry_delay: float = 0.05
    max_retry_delay: float = 1.0


@dataclass(slots=True)
class MirrorCopy:
    """A request the stable answered, waiting to be sent to the canary."""

    model: str
    inputs: list[Tensor]
    stable: dict[str, np.ndarray]
    """The stable's answer: the outputs in ``PairingSpec.outputs``."""


def encode_mirror_request(inputs: list[Tensor], outputs: tuple[str, ...]) -> tuple[bytes, int]:
    """A binary-extension infer request for ``inputs`` asking for ``outputs`` in binary;
    returns the body and the length of its JSON header."""
    entries, blobs = [], []
    for tensor in inputs:
        raw = binary_data(tensor.array, tensor.datatype)
        entries.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        blobs.append(raw)
    doc = {
        "inputs": entries,
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }
    header = orjson.dumps(doc)
    return b"".join([header, *blobs]), len(header)


def decode_mirror_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """The outputs of an infer answer (binary or JSON), by name; ``ValueError`` if malformed."""
    try:
        doc = orjson.loads(body[:header_length] if header_length is not None else body)
        outputs = doc["outputs"]
        offset = header_length or 0
        view = memoryview(body)
        result: dict[str, np.ndarray] = {}
        for output in outputs:
            shape = [int(d) for d in output["shape"]]
            count = int(np.prod(shape)) if shape else 1
            size = (output.get("parameters") or {}).get("binary_data_size")
            if size is None:
                result[output["name"]] = np.array(output["data"]).reshape(shape)
                continue
            raw = view[offset : offset + int(size)]
            offset += int(size)
            result[output["name"]] = decode_binary_data(
                raw, shape, count, output["datatype"], output["name"]
            )
        return result
    except Exception as exc:
        raise ValueError(f"malformed answer from the canary: {type(exc).__name__}: {exc}") from exc


def compare(spec: PairingSpec, stable: dict[str, Any], canary: dict[str, Any], tolerance: float
            ) -> RowComparison:  # fmt: skip
    """Pair the two answers to the same rows, as ``spec`` says."""
    if spec.kind == "regression":
        return compare_regressions(stable[spec.output], canary[spec.output], tolerance)
    probabilities = spec.probabilities
    return compare_classifications(
        stable[spec.output],
        canary[spec.output],
        stable.get(probabilities) if probabilities else None,
        canary.get(probabilities) if probabilities else None,
    )


class ShadowMirror:
    """One worker's mirror: sampling, the bounded queue, the senders and the pairing."""

    def __init__(self, options: ShadowOptions, tally: ShadowTally) -> None:
        self.options = options
        self.tally = tally
        self.target: ShadowTarget | None = None
        self.spec: PairingSpec | None = None
        self.slices: ProfileSlices | None = None
        self.queue: asyncio.Queue[MirrorCopy] = asyncio.Queue(options.queue_size)
        self._client: ShadowClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._random = random.Random()
        self._unreachable = _Unreachable(options)

    # -- wiring ---------------------------------------------------------------------------
    def attach(self, outputs: list[TensorSpec], profile: Profile | None) -> None:
        """The loaded model's outputs and training profile: what to compare, how to slice."""
        self.spec = pairing_spec(outputs, profile.prediction if profile else None)
        self.slices = ProfileSlices(profile) if profile is not None else None
        if self.spec is None:
            log.warning("shadow mirroring is not possible: the model has no label or value output")

    def set_target(self, target: ShadowTarget | None) -> None:
        """Mirror to ``target`` from now on (None: stop); copies queued for the old target
        are sent to the new one, or dropped when mirroring stops."""
        if self._client is not None:
            self._client.close()
        self.target = target
        self._client = ShadowClient(target.host, target.port) if target else None
        self._unreachable = _Unreachable(self.options)
        if target is None:
            while not self.queue.empty():
                self.queue.get_nowait()

    def start(self) -> None:
        """Start polling the config file and the senders (from the worker's running loop)."""
        loop = asyncio.get_running_loop()
        if self.options.config_path:
            watcher = ShadowConfigWatcher(self.options.config_path, self.set_target)
            self._tasks.append(loop.create_task(watcher.run(self.options.poll_interval)))
        for _ in range(self.options.concurrency):
            self._tasks.append(loop.create_task(self._send_loop()))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self._client is not None:
            self._client.close()

    # -- the request path -----------------------------------------------------------------
    def sample(self) -> PairingSpec | None:
        """Whether to mirror this request: the outputs to keep for pairing, or None."""
        target, spec = self.target, self.spec
        if target is None or spec is None:
            return None
        if target.percent < 100 and self._random.random() * 100 >= target.percent:
            return None
        return spec

    def offer(self, copy: MirrorCopy) -> None:
        """Queue a copy after the client has its answer; drop it if the queue is full, or
        while the canary is unreachable."""
        if self._unreachable.pausing():
            self.tally.drop("canary_error")
            return
        try:
            self.queue.put_nowait(copy)
        except asyncio.QueueFull:
            self.tally.drop("queue_full")

    # -- the senders ----------------------------------------------------------------------
    async def _send_loop(self) -> None:
        while True:
            copy = await self.queue.get()
            try:
                await self.send(copy)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unexpected error mirroring a request")
                self.tally.drop("canary_error")

    async def send(self, copy: MirrorCopy) -> None:
        """Send one copy to the target, pair the answer with the stable's and count it."""
        client, spec = self._client, self.spec
        if client is None or spec is None:
            return
        unreachable = self._unreachable
        if unreachable.pausing():
            self.tally.drop("canary_error")
            return
        body, header_length = encode_mirror_request(copy.inputs, spec.outputs)
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", str(header_length).encode()),
            (SHADOW_HEADER, b"1"),
        ]
        try:
            response = await client.post(
                f"/v2/models/{copy.model}/infer", headers, body, self.options.timeout
            )
        except TimeoutError:
            self.tally.drop("timeout")
            return
        except ShadowConnectError:
            unreachable.failed()
            self.tally.drop("canary_error")
            return
        except ShadowTransportError:
            unreachable.reached()
            self.tally.drop("canary_error")
            return
        unreachable.reached()
        if response.status != 200:
            self.tally.drop("canary_error")
            return
        length = response.headers.get(b"inference-header-content-length")
        try:
            canary = decode_mirror_response(response.body, int(length) if length else None)
            comparison = compare(spec, copy.stable, canary, self.options.tolerance)
        except (ValueError, KeyError):
            self.tally.drop("unpairable")
            return
        slices: list[tuple[str, str, int, int]] = []
        if self.slices is not None:
            rows = next((t.array for t in copy.inputs if t.name == self.slices.input), None)
            assigned = self.slices.assign(rows) if rows is not None else None
            if assigned is not None and len(rows) == comparison.rows:  # type: ignore[arg-type]
                slices = count_by_slice(assigned, comparison.disagree)
        self.tally.record(
            comparison.disagree,
            slices,
            comparison.probability_difference,
            comparison.abs_error,
            comparison.relative_error,
        )


class _Unreachable:
    """Connection failures in a row to the current target, and the pause they have earned."""

    def __init__(self, options: ShadowOptions) -> None:
        self.options = options
        self.failures = 0
        self.resume_at = 0.0

    def pausing(self) -> bool:
        return self.failures >= self.options.unreachable_after and (
            time.monotonic() < self.resume_at
        )

    def failed(self) -> None:
        self.failures += 1
        beyond = self.failures - self.options.unreachable_after
        if beyond >= 0:
            delay = min(
                self.options.max_retry_delay, self.options.retry_delay * 2 ** min(beyond, 30)
            )
            self.resume_at = time.monotonic() + delay
            if beyond == 0:
                log.warning(
                    "the shadow target is unreachable: its copies are counted as dropped "
                    "(canary_error) without being sent until it answers again",
                    extra={
                        "fields": {
                            "connection_failures": self.failures,
                            "retry_delay_s": self.options.retry_delay,
                            "max_retry_delay_s": self.options.max_retry_delay,
                        }
                    },
                )

    def reached(self) -> None:
        if self.failures >= self.options.unreachable_after:
            log.info(
                "the shadow target answers again: copies are sent",
                extra={"fields": {"connection_failures": self.failures}},
            )
        self.failures = 0
        self.resume_at = 0.0
