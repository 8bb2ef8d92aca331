"""Where the stable server mirrors to: a small JSON file that can change while the pod runs.

The operator writes ``{"target": "http://iris-canary.ns.svc:8080", "percent": 100}`` into a
ConfigMap mounted as a volume; the kubelet replaces the file in place when the ConfigMap
changes, so the target moves without restarting the pod. Each worker polls the file's
``stat`` (about a microsecond) and reads it only when its identity (inode, size, mtime)
changes. A missing or empty file, or an empty target, means mirroring is off; so does a
malformed file, which is logged once as an error naming what is wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class ShadowConfigError(ValueError):
    """The shadow configuration cannot be used; the message names the field."""


@dataclass(frozen=True)
class ShadowTarget:
    """Mirror ``percent`` of the requests to ``http://host:port``."""

    host: str
    port: int
    percent: float = 100.0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_target(url: str) -> tuple[str, int]:
    """(host, port) of an ``http://host[:port]`` URL; ``ShadowConfigError`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ShadowConfigError(f"target: {url!r} is not a URL: {exc}") from None
    if parts.scheme != "http":
        raise ShadowConfigError(
            f"target: must be an http:// URL (the canary Service, in the cluster), got {url!r}"
        )
    if not parts.hostname:
        raise ShadowConfigError(f"target: {url!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ShadowConfigError(
            f"target: must be http://host[:port] with nothing after it, got {url!r}"
        )
    return parts.hostname, port or 80


def parse_shadow_config(data: bytes) -> ShadowTarget | None:
    """The target a config file names, or None when it turns mirroring off."""
    if not data.strip():
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShadowConfigError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ShadowConfigError(f"must be a JSON object, got {type(doc).__name__}")
    target = doc.get("target")
    if target is None or target == "":
        return None
    if not isinstance(target, str):
        raise ShadowConfigError(f"target: must be a string, got {target!r}")
    percent = doc.get("percent", 100)
    if type(percent) not in (int, float) or not math.isfinite(percent) or not 0 <= percent <= 100:
        raise ShadowConfigError(f"percent: must be a number from 0 to 100, got {percent!r}")
    host, port = parse_target(target)
    return ShadowTarget(host, port, float(percent))


FileIdentity = tuple[int, int, int, int] | None


def file_identity(path: str) -> FileIdentity:
    """What changes when the file is replaced or rewritten (None: no such file)."""
    try:
        st = os.stat(path)  # follows the kubelet's ..data symlink to the current file
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class ShadowConfigWatcher:
    """Calls ``on_change`` with the current target (or None) whenever the file changes."""

    def __init__(self, path: str, on_change: Callable[[ShadowTarget | None], None]) -> None:
        self.path = path
        self.on_change = on_change
        self.target: ShadowTarget | None = None
        self._seen: FileIdentity | str = "never"

    def poll(self) -> None:
        """Look at the file once; read it only if it changed since the last look."""
        identity = file_identity(self.path)
        if identity == self._seen:
            return
        self._seen = identity
        target: ShadowTarget | None = None
        if identity is not None:
            try:
                with open(self.path, "rb") as file:
                    target = parse_shadow_config(file.read(65536))
            except OSError as exc:
                self._error(f"cannot be read: {exc}")
            except ShadowConfigError as exc:
                self._error(str(exc))
        if target != self.target:
            self.target = target
            log.info(
                "shadow mirroring on" if target else "shadow mirroring off",
                extra={
                    "fields": {
                        "shadow_config": self.path,
                        "target": target.url if target else None,
                        "percent": target.percent if target else None,
                    }
                },
            )
            self.on_change(target)

    def _error(self, problem: str) -> None:
        log.error(
            "shadow configuration %s %s; mirroring is off until it is fixed",
            self.path,
            problem,
            extra={"fields": {"shadow_config": self.path, "error": problem}},
        )

    async def run(self, interval: float = POLL_SECONDS) -> None:
        """Poll until cancelled."""
        while True:
            try:
                self.poll()
            except Exception:  # never let a surprise stop the polling
                log.exception("unexpected error reading the shadow configuration")
            await asyncio.sleep(interval)
